package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// benchFlags are the flags of `bpcat bench ADDR`, the measuring side.
type benchFlags struct {
	sessionFlags
	clientTLS
	parallel int
	duration time.Duration
	interval time.Duration
	reverse  bool
	bidir    bool
	rate     uint64 // bytes per second per stream
	json     bool
	timeout  time.Duration
}

func (bf *benchFlags) register(fs *flagSet) {
	bf.sessionFlags.register(fs)
	bf.clientTLS.register(fs, "the server")
	fs.IntVar(&bf.parallel, "P", 1, "parallel streams, `N` (in each direction with --bidir)")
	bf.duration = 10 * time.Second
	fs.Var(durationFlag{&bf.duration}, "t", "measure for `DURATION`")
	bf.interval = time.Second
	fs.Var(durationFlag{&bf.interval}, "i", "report every `DURATION` (0: no interval reports)")
	fs.BoolVar(&bf.reverse, "R", false, "reverse: the server sends, this side receives")
	fs.BoolVar(&bf.bidir, "bidir", false, "both directions at once, -P streams each way")
	fs.Var(bitrateFlag{&bf.rate}, "b", "pace each stream's sender to `RATE`: bits per second as iperf3 takes them (100M, 1.5G) or bytes with a B (12MiB/s)")
	fs.BoolVar(&bf.json, "json", false, "print one JSON document in iperf3's shape (start, intervals, end) on stdout")
	fs.BoolVar(&bf.json, "J", false, "same as --json")
	registerTimeout(fs, &bf.timeout)
}

// runBench is `bpcat bench`: with -l it serves, otherwise it measures.
// The two sides take different flags, so -l is looked for first.
func runBench(ctx context.Context, e *env, args []string) error {
	if benchServing(args) {
		var sf benchServerFlags
		fs := newFlagSet(e, "bench", "-l ADDR [flags]")
		sf.register(fs)
		rest, err := fs.parse(args, 0, 1)
		if err != nil {
			return benchFlagHint(err, "-l serves; that flag is for the measuring side (bpcat bench ADDR)")
		}
		if len(rest) > 0 {
			return usageErrorf("-l serves, ADDR measures: give one of them")
		}
		return sf.serve(ctx, e)
	}
	var bf benchFlags
	fs := newFlagSet(e, "bench", "[flags] HOST PORT | HOST:PORT   (the server: bpcat bench -l ADDR; 'bpcat bench -l : -h' for its flags)")
	bf.register(fs)
	rest, err := fs.parse(args, 1, 2)
	if err != nil {
		return benchFlagHint(err, "that flag is for the server (bpcat bench -l ADDR)")
	}
	server, err := parseHostPort(rest, false) // HOST PORT or HOST:PORT, as connect takes
	if err != nil {
		return err
	}
	maxP := mux.DefaultMaxStreams - 1
	if bf.bidir {
		maxP /= 2
	}
	switch {
	case bf.parallel < 1 || bf.parallel > maxP:
		return usageErrorf("-P %d: want 1 to %d streams", bf.parallel, maxP)
	case bf.duration <= 0 || bf.duration > 24*time.Hour:
		return usageErrorf("-t %v: want a positive duration up to 24h", bf.duration)
	case bf.reverse && bf.bidir:
		return usageErrorf("-R and --bidir: give one of them")
	case fs.isSet("b") && bf.rate == 0:
		return usageErrorf("-b 0: want a positive rate (leave -b out for no pacing)")
	}
	return bf.measure(ctx, e, server.String())
}

// benchServing reports whether args ask to serve (-l).
func benchServing(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "l" {
			return true
		}
	}
	return false
}

// serverOnly and clientOnly are the flags only one side of bench takes,
// for a hint when the other side is given one.
var (
	serverOnly = []string{"l", "quiet", "1", "cert", "key"}
	clientOnly = []string{"P", "t", "i", "R", "bidir", "b", "json", "J", "timeout", "pin", "ca", "insecure"}
)

// benchFlagHint adds hint to an error about a flag the other side of
// bench takes.
func benchFlagHint(err error, hint string) error {
	msg := err.Error()
	if !strings.HasPrefix(msg, "flag provided but not defined: -") {
		return err
	}
	name := strings.TrimLeft(strings.TrimPrefix(msg, "flag provided but not defined: "), "-")
	for _, list := range [][]string{serverOnly, clientOnly} {
		for _, f := range list {
			if f == name {
				return usageErrorf("%s: %s", msg, hint)
			}
		}
	}
	return err
}

// benchStream is one data stream on the measuring side.
type benchStream struct {
	s  *mux.Stream
	up bool // this side sends on it
	// done is when the stream finished, in UnixNano (0: not yet): the
	// peer read everything (up) or this side read to the end (down).
	done atomic.Int64
}

func (bs *benchStream) finishedAt(now time.Time) time.Time {
	if n := bs.done.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return now
}

// measure runs the test against the server at addr and reports.
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
	if err := bf.startObserver(e); err != nil {
		return err
	}
	defer bf.observer.close()
	sess, err := dial(ctx, bf.address(addr), tlsConf, ver, cfg, bf.timeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	bf.observer.sessions().track(sess)
	up, down := bf.parallel, 0
	switch {
	case bf.reverse:
		up, down = 0, bf.parallel
	case bf.bidir:
		down = bf.parallel
	}
	req := benchRequest{Version: benchProtoVersion, Cookie: newCookie(), Up: up, Down: down, Rate: bf.rate, Duration: bf.duration}
	ctl, ctlR, err := bf.handshake(ctx, sess, req)
	if err != nil {
		endSession(sess, "bpcat bench: "+oneLine(err))
		return err
	}
	cpu := startCPU()
	streams := make([]*benchStream, 0, up+down)
	for i := range up + down {
		octx, cancel := context.WithTimeout(ctx, bf.timeout)
		s, err := sess.Open(octx)
		cancel()
		if err == nil {
			dir := benchUp
			if i >= up {
				dir = benchDown
			}
			_, err = s.Write([]byte{dir})
			if dir == benchDown {
				s.CloseWrite()
			}
			streams = append(streams, &benchStream{s: s, up: dir == benchUp})
		}
		if err != nil {
			err = describe("open stream", err)
			for _, bs := range streams {
				bs.s.Reset(framing.Cancel)
			}
			ctl.Reset(framing.Cancel)
			endSession(sess, "bpcat bench: "+oneLine(err))
			return err
		}
	}

	start := time.Now()
	end := start.Add(bf.duration)
	rep := newBenchReport(e.stdout, bf, addr, req.Cookie, sess, streams, start)
	stopCtx, stopSending := context.WithDeadline(ctx, end)
	defer stopSending()
	errs := make(chan error, len(streams))
	for _, bs := range streams {
		doing := fmt.Sprintf("stream %d", bs.s.ID())
		go func() {
			var err error
			if bs.up {
				err = benchSend(stopCtx, bs.s, bf.rate, &bf.sessionFlags, doing)
			} else {
				err = benchReceive(ctx, bs.s, &bf.sessionFlags, doing)
			}
			if err == nil {
				bs.done.Store(time.Now().UnixNano())
			}
			errs <- err
		}()
	}
	// abort resets every stream, so that the server learns that the
	// measurement was abandoned, reports what was measured, and ends the
	// session saying why.
	abort := func(err error) error {
		if ctx.Err() != nil {
			err = interruption(ctx)
		}
		for _, bs := range streams {
			bs.s.Reset(framing.Cancel)
		}
		ctl.Reset(framing.Cancel)
		rep.finish(time.Now(), nil, cpu.percent(), err)
		endSession(sess, "bpcat bench: "+oneLine(err))
		return err
	}

	// The test: an interval report at each boundary until the end.
	nextTick := end
	if bf.interval > 0 {
		nextTick = start.Add(bf.interval)
	}
	pending := len(streams)
	for sending := true; sending; {
		boundary := nextTick
		if end.Before(boundary) {
			boundary = end
		}
		t := time.NewTimer(time.Until(boundary))
		select {
		case <-t.C:
			rep.interval(boundary)
			if !boundary.Before(end) {
				sending = false
			}
			nextTick = nextTick.Add(bf.interval)
		case err := <-errs:
			pending--
			if err != nil {
				t.Stop()
				return abort(err)
			}
		case <-ctx.Done():
			t.Stop()
			rep.interval(time.Now())
			return abort(nil)
		}
		t.Stop()
	}
	// Stop the server's senders; wait for every stream to finish.
	ctl.CloseWrite()
	for ; pending > 0; pending-- {
		select {
		case err := <-errs:
			if err != nil {
				return abort(err)
			}
		case <-ctx.Done():
			return abort(nil)
		}
	}
	finished := time.Now()
	res, err := readResult(ctx, ctl, ctlR, &bf.sessionFlags)
	if err != nil {
		return abort(err)
	}
	rep.finish(finished, res, cpu.percent(), nil)
	endSession(sess, "bpcat bench: done")
	return nil
}

// handshake opens the control stream and has the server accept req.
func (bf *benchFlags) handshake(ctx context.Context, sess *mux.Session, req benchRequest) (*mux.Stream, *bufio.Reader, error) {
	octx, cancel := context.WithTimeout(ctx, bf.timeout)
	defer cancel()
	ctl, err := sess.Open(octx)
	if err != nil {
		return nil, nil, describe("open the control stream", err)
	}
	fail := func(err error) (*mux.Stream, *bufio.Reader, error) {
		ctl.Reset(framing.Cancel)
		return nil, nil, err
	}
	if err := writeJSONLine(ctl, req); err != nil {
		return fail(bf.describe("send the request", err))
	}
	ctl.SetReadDeadline(time.Now().Add(bf.timeout))
	r := bufio.NewReader(ctl)
	var reply benchReply
	if err := readJSONLine(r, &reply); err != nil {
		if ctx.Err() != nil {
			return fail(interruption(ctx))
		}
		return fail(bf.describe("waiting for the server to accept the test (is it a bpcat bench -l?)", err))
	}
	ctl.SetReadDeadline(time.Time{})
	if !reply.OK {
		return fail(fmt.Errorf("the server refused the test: %s", reply.Error))
	}
	return ctl, r, nil
}

// readResult reads the server's results from the control stream.
func readResult(ctx context.Context, ctl *mux.Stream, r *bufio.Reader, f *sessionFlags) (*benchResult, error) {
	ctl.SetReadDeadline(time.Now().Add(benchSetupTimeout))
	stop := context.AfterFunc(ctx, func() { ctl.SetReadDeadline(time.Now()) })
	defer stop()
	var res benchResult
	if err := readJSONLine(r, &res); err != nil {
		if ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		return nil, f.describe("reading the server's results", err)
	}
	var rest [1]byte
	for i := 0; i < 16; i++ { // to the end of the control stream, so that it retires
		if _, err := r.Read(rest[:]); err != nil {
			break
		}
	}
	return &res, nil
}

// newCookie returns a random name for a test, as iperf3's cookie.
func newCookie() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
