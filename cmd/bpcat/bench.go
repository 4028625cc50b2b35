package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// benchFlags are the flags of `bpcat bench`.
type benchFlags struct {
	sessionFlags
	serverTLS
	clientTLS
	listen   string
	parallel int
	duration time.Duration
	json     bool
	quiet    bool
	timeout  time.Duration
}

// runBench is `bpcat bench`: with -l it serves, otherwise it measures.
func runBench(ctx context.Context, e *env, args []string) error {
	var bf benchFlags
	fs := newFlagSet(e, "bench", "[flags] (-l ADDR | ADDR)")
	bf.sessionFlags.register(fs)
	bf.serverTLS.register(fs)
	bf.clientTLS.register(fs, "the server")
	fs.StringVar(&bf.listen, "l", "", "serve on `ADDR` (the measuring side connects to it)")
	fs.IntVar(&bf.parallel, "P", 1, "parallel streams, `N`")
	bf.duration = 10 * time.Second
	fs.Var(durationFlag{&bf.duration}, "t", "measure for `DURATION`")
	fs.BoolVar(&bf.json, "json", false, "print one JSON object per interval and a final summary on stdout")
	fs.BoolVar(&bf.quiet, "quiet", false, "server: do not log sessions")
	registerTimeout(fs, &bf.timeout)
	rest, err := fs.parse(args, 0, 1)
	if err != nil {
		return err
	}
	switch {
	case bf.listen != "" && len(rest) > 0:
		return usageErrorf("-l serves, ADDR measures: give one of them")
	case bf.listen != "" && fs.isSet("timeout"):
		return usageErrorf("--timeout bounds connecting, so it is for the measuring side (ADDR), not -l")
	case bf.listen != "":
		return bf.serve(ctx, e)
	case len(rest) == 0:
		return usageErrorf("missing arguments: want -l ADDR to serve or ADDR to measure")
	}
	if bf.parallel < 1 || bf.parallel > mux.DefaultMaxStreams {
		return usageErrorf("-P %d: want 1 to %d streams", bf.parallel, mux.DefaultMaxStreams)
	}
	if bf.duration <= 0 {
		return usageErrorf("-t %v: want a positive duration", bf.duration)
	}
	return bf.measure(ctx, e, rest[0])
}

// serve accepts sessions until ctx is done and discards what every stream
// carries, reading as fast as it can.
func (bf *benchFlags) serve(ctx context.Context, e *env) error {
	host, err := splitHost("-l", bf.listen)
	if err != nil {
		return err
	}
	cfg, err := bf.sessionFlags.config(nil)
	if err != nil {
		return err
	}
	tlsConf, fp, err := bf.serverTLS.config(host)
	if err != nil {
		return err
	}
	ln, err := bp.Listen(bf.listen, tlsConf, cfg)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", bf.listen, err)
	}
	defer ln.Close()
	fmt.Fprintf(e.stderr, "fingerprint %s\nlistening on %s\n", fp, ln.Addr())
	var wg sync.WaitGroup
	defer wg.Wait()
	var logMu sync.Mutex
	for {
		sess, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return describe("accept", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, streams, d := benchSink(ctx, sess)
			if !bf.quiet {
				logMu.Lock()
				fmt.Fprintf(e.stderr, "session: %d streams, %s in %.2fs (%s)\n", streams, formatSize(n), d.Seconds(), formatRate(float64(n)/max(d.Seconds(), 1e-9)))
				logMu.Unlock()
			}
		}()
	}
}

// benchSink reads every stream of sess to its end and returns the bytes,
// the streams, and the time from the first stream to the last byte. When
// ctx ends (an interrupt) it resets the streams in progress and ends the
// session.
func benchSink(ctx context.Context, sess *mux.Session) (total uint64, streams int, d time.Duration) {
	defer sess.Close()
	defer func() {
		reason := "bpcat bench: done"
		if ctx.Err() != nil {
			reason = "bpcat bench: " + interruption(ctx).Error()
		}
		endSession(sess, reason)
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first, last time.Time
	for {
		s, err := sess.Accept(ctx)
		if err != nil {
			break // the measuring side closed the session
		}
		streams++
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := time.Now()
			mu.Lock()
			if first.IsZero() {
				first = now
			}
			mu.Unlock()
			stop := context.AfterFunc(ctx, func() { s.Reset(framing.Cancel) }) // Reads do not watch ctx
			n, err := copyData(ctx, io.Discard, s, 0)
			stop()
			if err != nil {
				s.Reset(framing.Cancel)
			} else {
				s.CloseWrite()
			}
			mu.Lock()
			total += uint64(n)
			last = time.Now()
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total, streams, last.Sub(first)
}

// benchInterval is one report: what the server consumed in [Start, End).
type benchInterval struct {
	Type           string  `json:"type"` // "interval"
	Start          float64 `json:"start"`
	End            float64 `json:"end"`
	Bytes          uint64  `json:"bytes"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	BitsPerSecond  float64 `json:"bits_per_second"`
	Stalls         uint64  `json:"stalls"`
}

// benchSummary is the final report.
type benchSummary struct {
	Type               string   `json:"type"` // "summary"
	Streams            int      `json:"streams"`
	Seconds            float64  `json:"seconds"`
	Bytes              uint64   `json:"bytes"`
	BytesPerSecond     float64  `json:"bytes_per_second"`
	BitsPerSecond      float64  `json:"bits_per_second"`
	Stalls             uint64   `json:"stalls"`
	TimeStalledSeconds float64  `json:"time_stalled_seconds"`
	Fairness           float64  `json:"jain_fairness"`
	StreamBytes        []uint64 `json:"stream_bytes"`
	RTTSeconds         float64  `json:"rtt_seconds"`
}

// measure sends for the duration on P streams and reports what the
// server consumed.
func (bf *benchFlags) measure(ctx context.Context, e *env, addr string) error {
	host, err := splitHost("address", addr)
	if err != nil {
		return err
	}
	tlsConf, ver, err := bf.clientTLS.config(e.stderr, host)
	if err != nil {
		return err
	}
	cfg, err := bf.sessionFlags.config(nil)
	if err != nil {
		return err
	}
	sess, err := dial(ctx, addr, tlsConf, ver, cfg, bf.timeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	streams := make([]*mux.Stream, bf.parallel)
	for i := range streams {
		octx, cancel := context.WithTimeout(ctx, bf.timeout)
		streams[i], err = sess.Open(octx)
		cancel()
		if err != nil {
			return describe("open stream", err)
		}
	}
	out := newBenchOutput(e.stdout, bf.json)
	if !bf.json {
		fmt.Fprintf(e.stdout, "bench: %d stream(s) to %s for %v\n", bf.parallel, addr, bf.duration)
	}

	start := time.Now()
	end := start.Add(bf.duration)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(streams))
	for _, s := range streams {
		go func() { errs <- bf.send(wctx, s, end) }()
	}
	// abort resets every stream, so that the server learns that the
	// measurement was abandoned, and ends the session saying why.
	abort := func(err error) error {
		for _, s := range streams {
			s.Reset(framing.Cancel)
		}
		endSession(sess, "bpcat bench: "+oneLine(err))
		return err
	}
	// Report once a second what the server consumed.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sum := func() (consumed, stalls uint64) {
		for _, s := range streams {
			st := s.Stats()
			consumed += st.PeerConsumed
			stalls += st.Stalls
		}
		return consumed, stalls
	}
	var prevBytes, prevStalls uint64
	prevT := 0.0
	var firstErr error
	for pending := len(streams); pending > 0; {
		select {
		case err := <-errs:
			pending--
			if err != nil && firstErr == nil {
				firstErr = err
				cancel()
			}
		case now := <-tick.C:
			t := now.Sub(start).Seconds()
			b, st := sum()
			out.interval(benchInterval{Type: "interval", Start: prevT, End: t, Bytes: b - prevBytes,
				BytesPerSecond: float64(b-prevBytes) / (t - prevT), BitsPerSecond: 8 * float64(b-prevBytes) / (t - prevT), Stalls: st - prevStalls})
			prevBytes, prevStalls, prevT = b, st, t
		case <-ctx.Done():
			cancel()
			return abort(interruption(ctx))
		}
	}
	if firstErr != nil {
		return abort(firstErr)
	}
	elapsed := time.Since(start).Seconds()
	s := benchSummary{Type: "summary", Streams: len(streams), Seconds: elapsed, RTTSeconds: sess.Stats().RTT.Seconds()}
	var sumX, sumX2 float64
	for _, st := range streams {
		ss := st.Stats()
		s.Bytes += ss.PeerConsumed
		s.Stalls += ss.Stalls
		s.TimeStalledSeconds += ss.TimeStalled.Seconds()
		s.StreamBytes = append(s.StreamBytes, ss.PeerConsumed)
		x := float64(ss.PeerConsumed)
		sumX, sumX2 = sumX+x, sumX2+x*x
	}
	s.BytesPerSecond = float64(s.Bytes) / elapsed
	s.BitsPerSecond = 8 * s.BytesPerSecond
	s.Fairness = 1
	if sumX2 > 0 {
		s.Fairness = sumX * sumX / (float64(len(streams)) * sumX2)
	}
	out.summary(s)
	endSession(sess, "bpcat bench: done")
	return nil
}

// send writes to s until end, then half-closes it and waits until the
// server consumed everything.
func (bf *benchFlags) send(ctx context.Context, s *mux.Stream, end time.Time) error {
	buf := make([]byte, copyBufSize)
	s.SetWriteDeadline(end)
	for ctx.Err() == nil && time.Now().Before(end) {
		if _, err := s.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return bf.describe(fmt.Sprintf("stream %d", s.ID()), err)
		}
	}
	s.CloseWrite()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.WaitConsumed(wctx); err != nil {
		return bf.describe(fmt.Sprintf("stream %d: waiting for the server to consume", s.ID()), err)
	}
	return nil
}

// benchOutput prints reports as text or JSON lines.
type benchOutput struct {
	w    io.Writer
	json bool
	enc  *json.Encoder
}

func newBenchOutput(w io.Writer, asJSON bool) *benchOutput {
	return &benchOutput{w: w, json: asJSON, enc: json.NewEncoder(w)}
}

func (o *benchOutput) interval(iv benchInterval) {
	if o.json {
		o.enc.Encode(iv)
		return
	}
	fmt.Fprintf(o.w, "[%5.1f-%5.1f s]  %10s  %12s  %8.2f Gbit/s  stalls %d\n",
		iv.Start, iv.End, formatSize(iv.Bytes), formatRate(iv.BytesPerSecond), iv.BitsPerSecond/1e9, iv.Stalls)
}

func (o *benchOutput) summary(s benchSummary) {
	if o.json {
		o.enc.Encode(s)
		return
	}
	fmt.Fprintf(o.w, "[%5.1f-%5.1f s]  %10s  %12s  %8.2f Gbit/s  consumed by the server; %d stream(s), stalls %d (%.2fs), fairness %.3f, RTT %v\n",
		0.0, s.Seconds, formatSize(s.Bytes), formatRate(s.BytesPerSecond), s.BitsPerSecond/1e9,
		s.Streams, s.Stalls, s.TimeStalledSeconds, s.Fairness, time.Duration(math.Round(s.RTTSeconds*1e6))*time.Microsecond)
}
