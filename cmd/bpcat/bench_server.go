package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// benchServerFlags are the flags of `bpcat bench -l`.
type benchServerFlags struct {
	sessionFlags
	serverTLS
	listen string
	quiet  bool
	oneOff bool
}

func (bf *benchServerFlags) register(fs *flagSet) {
	bf.sessionFlags.register(fs)
	bf.serverTLS.register(fs)
	fs.StringVar(&bf.listen, "l", "", "serve on `ADDR`: PORT or HOST:PORT (the measuring side connects to it)")
	fs.BoolVar(&bf.quiet, "quiet", false, "do not log sessions")
	fs.BoolVar(&bf.oneOff, "1", false, "serve one session, then exit (iperf3's --one-off)")
}

// benchSetupTimeout bounds each step of setting a measurement up: the
// control stream, the request, each data stream's first byte.
const benchSetupTimeout = 10 * time.Second

// serve accepts sessions until ctx is done (or, with -1, one session) and
// runs each one's measurement, logging its result on stderr.
func (bf *benchServerFlags) serve(ctx context.Context, e *env) error {
	if isPort(bf.listen) { // -l PORT: every address, as listen PORT
		bf.listen = net.JoinHostPort("", bf.listen)
	}
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
	if err := bf.startObserver(e); err != nil {
		return err
	}
	defer bf.observer.close()
	ln, err := bp.Listen(bf.address(bf.listen), tlsConf, cfg)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", bf.listen, err)
	}
	defer ln.Close()
	bf.observer.sessions().trackListener(ln)
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
		bf.observer.sessions().track(sess)
		wg.Add(1)
		run := func() {
			defer wg.Done()
			line := bf.session(ctx, sess)
			if !bf.quiet {
				logMu.Lock()
				fmt.Fprintln(e.stderr, line)
				logMu.Unlock()
			}
		}
		if bf.oneOff {
			run()
			return nil
		}
		go run()
	}
}

// benchServerStream is one data stream of a session on the server.
type benchServerStream struct {
	s      *mux.Stream
	sender bool // the server sends on it (benchDown)
	start  time.Time
	end    time.Time
	err    error
}

// session runs one client's measurement and returns the line to log.
func (bf *benchServerFlags) session(ctx context.Context, sess *mux.Session) string {
	defer sess.Close()
	cpu := startCPU()
	peer := sess.RemoteAddr().String()
	var (
		mu      sync.Mutex
		all     []*mux.Stream // to reset when interrupted; under mu
		streams []*benchServerStream
	)
	track := func(s *mux.Stream) {
		mu.Lock()
		all = append(all, s)
		mu.Unlock()
	}
	stopReset := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range all {
			s.Reset(framing.Cancel)
		}
	})
	defer stopReset()
	var cpuUsed *cpuPercent // at the end of the measurement
	finish := func(err error) string {
		reason := "bpcat bench: done"
		switch {
		case ctx.Err() != nil:
			err = interruption(ctx)
			reason = "bpcat bench: " + err.Error()
		case err != nil:
			reason = "bpcat bench: " + oneLine(err)
		}
		if cpuUsed == nil {
			c := cpu.percent()
			cpuUsed = &c
		}
		endSession(sess, reason)
		return benchServerLog(peer, streams, *cpuUsed, err)
	}

	// The request.
	actx, cancel := context.WithTimeout(ctx, benchSetupTimeout)
	ctl, err := sess.Accept(actx)
	cancel()
	if err != nil {
		return finish(bf.describe("waiting for the control stream", err))
	}
	track(ctl)
	ctl.SetReadDeadline(time.Now().Add(benchSetupTimeout))
	r := bufio.NewReader(io.LimitReader(ctl, 1<<20))
	var req benchRequest
	if err := readJSONLine(r, &req); err != nil {
		ctl.Reset(framing.Cancel)
		return finish(bf.describe("reading the request (is the peer a bpcat bench?)", err))
	}
	ctl.SetReadDeadline(time.Time{})
	if err := req.check(); err != nil {
		writeJSONLine(ctl, benchReply{Error: err.Error()})
		ctl.CloseWrite()
		return finish(err)
	}
	if err := writeJSONLine(ctl, benchReply{OK: true}); err != nil {
		return finish(bf.describe("answering the request", err))
	}
	// The client half-closes the control stream to stop the senders; a
	// bound beyond the test's duration guards against a client that never
	// does.
	stopCtx, stop := context.WithTimeout(ctx, req.Duration+benchDrainTimeout)
	defer stop()
	go func() {
		io.Copy(io.Discard, r)
		stop()
	}()

	// The data streams.
	var wg sync.WaitGroup
	var firstErr error
	for i := 0; i < req.Up+req.Down; i++ {
		actx, cancel := context.WithTimeout(ctx, benchSetupTimeout)
		s, err := sess.Accept(actx)
		cancel()
		if err != nil {
			firstErr = bf.describe("waiting for the data streams", err)
			break
		}
		track(s)
		bs := &benchServerStream{s: s, start: time.Now()}
		streams = append(streams, bs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs.err = bf.serveStream(stopCtx, bs, req.Rate)
			if bs.err != nil {
				s.Reset(framing.Cancel)
			}
			bs.end = time.Now()
		}()
	}
	wg.Wait()
	for _, bs := range streams {
		if firstErr == nil {
			firstErr = bs.err
		}
	}
	if firstErr != nil || ctx.Err() != nil {
		ctl.Reset(framing.Cancel)
		return finish(firstErr)
	}
	<-stopCtx.Done() // the client said stop (or is gone)
	c := cpu.percent()
	cpuUsed = &c
	res := benchResult{CPU: c}
	for _, bs := range streams {
		res.Streams = append(res.Streams, bs.result())
	}
	if err := writeJSONLine(ctl, res); err != nil {
		return finish(bf.describe("sending the results", err))
	}
	ctl.CloseWrite()
	return finish(nil)
}

// check validates a request.
func (req *benchRequest) check() error {
	switch {
	case req.Version != benchProtoVersion:
		return fmt.Errorf("the client speaks bench protocol %d, this server %d: use the same bpcat on both ends", req.Version, benchProtoVersion)
	case req.Up < 0 || req.Down < 0 || req.Up+req.Down < 1 || req.Up+req.Down >= mux.DefaultMaxStreams:
		return fmt.Errorf("the client asked for %d+%d streams: want 1 to %d", req.Up, req.Down, mux.DefaultMaxStreams-1)
	case req.Duration <= 0 || req.Duration > 24*time.Hour:
		return fmt.Errorf("the client asked for a duration of %v: want up to 24h", req.Duration)
	}
	return nil
}

// serveStream reads the stream's first byte and then reads it to its end
// (benchUp) or sends on it until stop (benchDown).
func (bf *benchServerFlags) serveStream(stop context.Context, bs *benchServerStream, rate uint64) error {
	s := bs.s
	doing := fmt.Sprintf("stream %d", s.ID())
	s.SetReadDeadline(time.Now().Add(benchSetupTimeout))
	var dir [1]byte
	if _, err := io.ReadFull(s, dir[:]); err != nil {
		return bf.describe(doing+": reading its direction", err)
	}
	s.SetReadDeadline(time.Time{})
	switch dir[0] {
	case benchUp:
		return benchReceive(context.Background(), s, &bf.sessionFlags, doing)
	case benchDown:
		bs.sender = true
		if _, err := io.Copy(io.Discard, s); err != nil { // the client's direction ends at once
			return bf.describe(doing, err)
		}
		return benchSend(stop, s, rate, &bf.sessionFlags, doing)
	}
	return fmt.Errorf("%s: unknown direction %q", doing, dir[0])
}

// result is what the server reports of a stream.
func (bs *benchServerStream) result() benchStreamResult {
	st := bs.s.Stats()
	r := benchStreamResult{ID: bs.s.ID(), Sender: bs.sender, Seconds: bs.end.Sub(bs.start).Seconds()}
	if bs.sender {
		r.Bytes, r.Stalls, r.TimeStalled, r.PeakLag = st.BytesSent, st.Stalls, st.TimeStalled, st.PeakConsumerLag
		r.Window = st.SendLimit - st.PeerConsumed
	} else {
		r.Bytes, r.Window = sat(st.BytesConsumed, benchHeaderLen), st.RecvWindow
	}
	return r
}

// benchServerLog is the line a server logs for a session: how many
// streams, what it received and sent, and its CPU.
func benchServerLog(peer string, streams []*benchServerStream, cpu cpuPercent, err error) string {
	var recv, sent uint64
	var nRecv, nSent int
	var first, last time.Time
	for _, bs := range streams {
		st := bs.s.Stats()
		if bs.sender {
			nSent++
			sent += st.BytesSent
		} else {
			nRecv++
			recv += sat(st.BytesConsumed, benchHeaderLen)
		}
		if first.IsZero() || bs.start.Before(first) {
			first = bs.start
		}
		if bs.end.After(last) {
			last = bs.end
		}
	}
	secs := max(last.Sub(first).Seconds(), 1e-9)
	line := fmt.Sprintf("session: %d streams from %s: received %s (%s) on %d, sent %s (%s) on %d, in %.2fs",
		len(streams), peer, formatSize(recv), formatRate(float64(recv)/secs), nRecv,
		formatSize(sent), formatRate(float64(sent)/secs), nSent, last.Sub(first).Seconds())
	if cpu.Measured {
		line += fmt.Sprintf("; CPU %.1f%%", cpu.Total)
	}
	switch {
	case errors.Is(err, errInterrupted), isInterruption(err):
		line += "; " + err.Error()
	case err != nil:
		line += "; ended early: " + oneLine(err)
	}
	return line
}

// isInterruption reports whether err is a signal's interruption.
func isInterruption(err error) bool {
	var ie *interruptedError
	return errors.As(err, &ie)
}
