// Command slowreader shows backpressure at work on this machine: a writer
// pushes as fast as it can over a bp/1 stream on 127.0.0.1 while the reader
// consumes at a limited rate, then at full speed. Every quarter second it
// prints the sender's and receiver's view of the window: the writer moves
// exactly as fast as the reader consumes, and what is in flight never
// exceeds the window.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

func main() {
	slow := flag.Duration("slow", 3*time.Second, "how long the reader reads slowly")
	fast := flag.Duration("fast", time.Second, "how long it then reads at full speed")
	rate := flag.Int("rate", 4<<20, "slow reading rate in bytes per second")
	window := flag.Uint64("window", 256<<10, "receive window (fixed) in bytes")
	flag.Parse()
	if err := run(*slow, *fast, *rate, *window); err != nil {
		fmt.Fprintln(os.Stderr, "slowreader:", err)
		os.Exit(1)
	}
}

func run(slow, fast time.Duration, rate int, window uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), slow+fast+30*time.Second)
	defer cancel()
	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		return err
	}
	cfg := &mux.Config{InitialWindow: window, MaxWindow: window}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		return err
	}
	client, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	server, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	defer server.Close()
	w, err := client.Open(ctx)
	if err != nil {
		return err
	}
	r, err := server.Accept(ctx)
	if err != nil {
		return err
	}

	go func() { // the writer: as fast as credit allows
		buf := make([]byte, 32<<10)
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}()
	readDone := make(chan error, 1)
	go func() { readDone <- consume(r, slow, fast, rate) }()

	fmt.Printf("window %d KiB, reader at %.1f MiB/s for %v, then unlimited for %v\n\n",
		window>>10, float64(rate)/(1<<20), slow, fast)
	fmt.Printf("%6s  %6s  %10s  %10s  %10s  %10s  %7s\n",
		"time", "phase", "sent MiB", "read MiB", "in flight", "credit", "stalls")
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-readDone:
			ws := w.Stats()
			fmt.Printf("\nwriter stalled %d times for %v in all; the reader's buffer never held more than the %d KiB window\n",
				ws.Stalls, ws.TimeStalled.Round(time.Millisecond), window>>10)
			return err
		case <-tick.C:
		}
		ws, rs := w.Stats(), r.Stats()
		phase := "slow"
		if time.Since(start) > slow {
			phase = "fast"
		}
		fmt.Printf("%5.2fs  %6s  %10.2f  %10.2f  %7d KiB  %6d KiB  %7d\n",
			time.Since(start).Seconds(), phase, mib(ws.BytesSent), mib(rs.BytesConsumed),
			(ws.BytesSent-rs.BytesConsumed)>>10, ws.SendCredit>>10, ws.Stalls)
		if rs.Buffered > window {
			return fmt.Errorf("receiver buffered %d bytes, more than the window %d", rs.Buffered, window)
		}
	}
}

// consume reads at rate for slow, then as fast as it can for fast.
func consume(r io.Reader, slow, fast time.Duration, rate int) error {
	buf := make([]byte, 64<<10)
	start := time.Now()
	var read int
	for time.Since(start) < slow {
		// Stay on the rate line: read only what the elapsed time allows.
		allowed := int(time.Since(start).Seconds()*float64(rate)) - read
		if allowed <= 0 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		n, err := r.Read(buf[:min(allowed, len(buf))])
		read += n
		if err != nil {
			return err
		}
	}
	end := time.Now().Add(fast)
	for time.Now().Before(end) {
		if _, err := r.Read(buf); err != nil {
			return err
		}
	}
	return nil
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
