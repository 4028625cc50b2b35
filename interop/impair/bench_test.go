package impair

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkUDPForward measures the proxy's forwarding rate of 1400-byte
// datagrams, client -> proxy -> sink, keeping a bounded number in flight so
// that no socket buffer overflows. lost/op counts datagrams that never
// arrived.
func BenchmarkUDPForward(b *testing.B) {
	for _, bc := range []struct {
		name   string
		d      Direction
		window int
	}{
		{"zero", Direction{}, 256},
		{"delay25ms", Direction{Delay: 25 * time.Millisecond}, 4096},
		{"jitter-reorder", Direction{Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Reorder: 0.01}, 1024},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchForward(b, bc.d, bc.window)
		})
	}
}

func benchForward(b *testing.B, d Direction, window int) {
	const size = 1400
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	_ = sink.SetReadBuffer(socketBuffer)
	var recv atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			recv.Add(1)
		}
	}()
	defer func() {
		sink.Close()
		wg.Wait()
	}()
	p := newUDP(b, sink.LocalAddr().String(), Config{Up: d})
	c := dialUDP(b, p.Addr())
	buf := make([]byte, size)
	var lost int64
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if int64(i)-recv.Load()-lost >= int64(window) {
			last, since := recv.Load(), time.Now()
			for int64(i)-recv.Load()-lost >= int64(window) {
				if r := recv.Load(); r != last {
					last, since = r, time.Now()
				} else if time.Since(since) > 200*time.Millisecond {
					lost = int64(i) - r // whatever is outstanding is gone
					break
				}
				time.Sleep(20 * time.Microsecond)
			}
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Second)
	for recv.Load()+lost < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	lost = int64(b.N) - recv.Load()
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	b.ReportMetric(float64(p.Stats().Up.Dropped())/float64(b.N), "proxydrops/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkTCPForward measures the TCP proxy's throughput with no
// impairment and with 25 ms of delay (64 KiB writes, one connection).
func BenchmarkTCPForward(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    Direction
	}{
		{"zero", Direction{}},
		{"delay25ms", Direction{Delay: 25 * time.Millisecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const chunk = 64 << 10
			done := make(chan int64, 1)
			addr := startTCP(b, func(c *net.TCPConn) {
				n, _ := io.Copy(io.Discard, c)
				done <- n
			})
			p := newTCP(b, addr, Config{Up: bc.d})
			c := dialTCP(b, p.Addr())
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.CloseWrite()
			if n := <-done; n != int64(b.N)*chunk {
				b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
			}
		})
	}
}
