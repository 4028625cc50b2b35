package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/bpmux/bp/transport"
)

// demoFlags are the flags of `bpcat demo`.
type demoFlags struct {
	duration time.Duration
	out      string
	traceOut string
	window   uint64
	rate     uint64
	obs      observeFlags
}

// runDemo is `bpcat demo`: a sender and a deliberately slow receiver on
// this machine, the live view, a trace and a plot.
func runDemo(ctx context.Context, e *env, args []string) error {
	df := demoFlags{duration: 6 * time.Second, out: "bpcat-demo.svg", window: 256 << 10, rate: 4 << 20}
	fs := newFlagSet(e, "demo", "[flags]")
	fs.Var(durationFlag{&df.duration}, "d", "how long the demo runs: two thirds slow, one third fast")
	fs.StringVar(&df.out, "o", df.out, "write the plot to `OUT` (.svg or .png)")
	fs.StringVar(&df.traceOut, "trace", "", "write the trace to `FILE` (default: OUT with the extension .jsonl)")
	fs.Var(sizeFlag{&df.window}, "window", "the receiver's fixed window `SIZE`")
	fs.Var(rateFlag{&df.rate}, "rate", "how fast the slow receiver reads, `RATE` per second")
	df.obs.register(fs)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if _, err := plotDrawer(df.out); err != nil {
		return err
	}
	if df.duration < 300*time.Millisecond || df.duration > time.Hour {
		return usageErrorf("-d %v: want 300ms to 1h", df.duration)
	}
	if df.rate == 0 {
		return usageErrorf("--rate: the slow receiver needs a rate above 0")
	}
	if err := df.obs.apply(&mux.Config{}); err != nil { // checks the flags
		return err
	}
	if df.traceOut == "" {
		df.traceOut = strings.TrimSuffix(df.out, filepath.Ext(df.out)) + ".jsonl"
	}
	return df.run(ctx, e)
}

func (df *demoFlags) run(ctx context.Context, e *env) error {
	tf, err := os.Create(df.traceOut)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	tw := trace.NewWriter(tf, time.Now())
	ob, err := df.obs.start(e)
	if err == nil {
		err = df.transfer(ctx, e, tw, ob)
		ob.close()
	}
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	slow := df.duration * 2 / 3
	title := fmt.Sprintf("bpcat demo: receiver reads %s for %v, then at full speed; window %s",
		formatRate(float64(df.rate)), slow.Round(time.Millisecond), formatSize(df.window))
	n, err := plotFile(df.traceOut, df.out, trace.PlotOptions{Title: title}, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "\nwrote the trace (%d events) to %s\nwrote the plot to %s: open it to see the window and the credit over time\n", n, df.traceOut, df.out)
	return nil
}

// transfer runs the sender and the slow receiver over a real session on
// 127.0.0.1 while the live view shows the sender's side.
func (df *demoFlags) transfer(ctx context.Context, e *env, tw *trace.Writer, ob *observer) error {
	slow := df.duration * 2 / 3
	fmt.Fprintf(e.stderr, "A sender writes as fast as it can; the receiver reads only %s for %v, then as fast as it can for %v.\n",
		formatRate(float64(df.rate)), slow.Round(time.Millisecond), (df.duration - slow).Round(time.Millisecond))
	fmt.Fprintf(e.stderr, "Watch the sender: held to the reader's pace with no credit left and never more than the %s window in flight, then free.\n\n",
		formatSize(df.window))

	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		return err
	}
	recvCfg := &mux.Config{InitialWindow: df.window, MaxWindow: df.window, OnEvent: tw.Hook("recv")}
	sendCfg := &mux.Config{InitialWindow: df.window, MaxWindow: df.window, OnEvent: tw.Hook("send")}
	for _, cfg := range []*mux.Config{recvCfg, sendCfg} {
		if err := df.obs.apply(cfg); err != nil {
			return err
		}
	}
	if err := recvCfg.Validate(); err != nil {
		return usageErrorf("--window: %v", strings.TrimPrefix(err.Error(), "mux: "))
	}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), recvCfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	ob.tracker("side", "recv").trackListener(ln)
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, err := bp.Dial(sctx, ln.Addr().String(), tlsConf, sendCfg)
	if err != nil {
		return err
	}
	defer client.Close()
	ob.tracker("side", "send").track(client)
	server, err := ln.Accept(sctx)
	if err != nil {
		return err
	}
	defer server.Close()
	ob.tracker("side", "recv").track(server)
	w, err := client.Open(sctx)
	if err != nil {
		return err
	}
	r, err := server.Accept(sctx)
	if err != nil {
		return err
	}

	// The live view: the sender's side, and what the receiver consumed.
	v := startView(viewConfig{w: e.stderr, tty: e.stderrTTY, live: true, width: e.columns}, func() (mux.StreamStats, bool) {
		st, rs := w.Stats(), r.Stats()
		st.BytesReceived, st.BytesConsumed, st.RecvWindow = rs.BytesReceived, rs.BytesConsumed, rs.RecvWindow
		st.Level = max(st.Level, rs.Level)
		return st, true
	})
	start := time.Now()
	var wg sync.WaitGroup
	var sendErr, recvErr error
	wg.Add(2)
	go func() { // the sender: as fast as credit allows, until the end
		defer wg.Done()
		sendErr = demoSend(ctx, w, start.Add(df.duration))
	}()
	go func() { // the receiver: slow, then fast, to the end
		defer wg.Done()
		recvErr = demoReceive(ctx, r, df.rate, start.Add(slow))
	}()
	wg.Wait()
	v.finish(true)
	if err := errors.Join(sendErr, recvErr); err != nil {
		return err
	}
	return nil
}

// demoSend writes until end, then half-closes and waits until the
// receiver consumed everything.
func demoSend(ctx context.Context, w *mux.Stream, end time.Time) error {
	buf := make([]byte, copyBufSize)
	w.SetWriteDeadline(end)
	for ctx.Err() == nil {
		if _, err := w.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return fmt.Errorf("send: %w", err)
		}
	}
	w.CloseWrite()
	if err := w.WaitConsumed(ctx); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// demoReceive reads at rate until slowEnd, then as fast as it can to the
// end of the stream.
func demoReceive(ctx context.Context, r *mux.Stream, rate uint64, slowEnd time.Time) error {
	sctx, cancel := context.WithDeadline(ctx, slowEnd)
	defer cancel()
	_, err := pacedCopy(sctx, io.Discard, r, make([]byte, copyBufSize), newPacer(rate))
	if err != nil && !(errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
		return fmt.Errorf("receive: %w", err)
	}
	if _, err := copyData(ctx, io.Discard, r, 0); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	return nil
}
