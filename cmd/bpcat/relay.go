package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
)

// relay forwards every stream of every accepted session to a stream of
// its own session to the upstream. Its memory per stream is the windows it
// grants plus one copy buffer per direction: it reads a stream only as
// fast as the other hop's credit lets it write, so backpressure crosses
// the hop. With --spool, the direction towards the upstream goes through
// a bounded queue on disk instead (spool.go, which documents the restart
// contract), and backpressure reaches the client only once it is full.
type relay struct {
	e        *env
	upstream string
	tlsConf  *tls.Config
	ver      *verifier
	sf       *sessionFlags
	downCfg  *mux.Config
	upCfg    *mux.Config
	timeout  time.Duration
	quiet    bool
	spool    *spooler // nil: no --spool

	logMu sync.Mutex // one log line at a time
}

// runRelay is `bpcat relay`.
func runRelay(ctx context.Context, e *env, args []string) error {
	var wf sessionFlags
	var st serverTLS
	var ct clientTLS
	var traceFile string
	var quiet bool
	var timeout time.Duration
	var spf spoolFlags
	fs := newFlagSet(e, "relay", "[flags] LISTEN_ADDR UPSTREAM_ADDR")
	wf.register(fs)
	st.register(fs)
	ct.register(fs, "the upstream")
	fs.StringVar(&traceFile, "trace", "", "write every flow-control event of both hops to `FILE` as JSON lines")
	fs.BoolVar(&quiet, "quiet", false, "do not log sessions and streams")
	registerTimeout(fs, &timeout)
	spf.register(fs)
	rest, err := fs.parse(args, 2, 2)
	if err != nil {
		return err
	}
	listenHost, err := splitHost("listen address", rest[0])
	if err != nil {
		return err
	}
	upHost, err := splitHost("upstream address", rest[1])
	if err != nil {
		return err
	}
	tlsConf, ver, err := ct.config(e.stderr, upHost)
	if err != nil {
		return err
	}
	var downHook, upHook func(mux.Event)
	var tw *trace.Writer
	if traceFile != "" {
		f, err := os.Create(traceFile)
		if err != nil {
			return fmt.Errorf("--trace: %w", err)
		}
		tw = trace.NewWriter(f, time.Now())
		downHook, upHook = tw.Hook("relay-down"), tw.Hook("relay-up")
	}
	r := &relay{e: e, upstream: rest[1], tlsConf: tlsConf, ver: ver, sf: &wf, timeout: timeout, quiet: quiet}
	if r.spool, err = spf.open(fs, r.logf); err != nil {
		return err
	}
	if r.spool != nil {
		defer func() {
			r.spool.close()
			r.logf("%s", r.spool.summary())
		}()
	}
	if r.downCfg, err = wf.config(downHook); err == nil {
		r.upCfg, err = wf.config(upHook)
	}
	if err == nil {
		err = wf.startObserver(e)
	}
	if err == nil {
		err = r.serve(ctx, &st, rest[0], listenHost)
		wf.observer.close()
	}
	if tw != nil {
		if terr := tw.Close(); err == nil {
			err = terr
		}
	}
	return err
}

func (r *relay) logf(format string, a ...any) {
	if r.quiet {
		return
	}
	r.logMu.Lock()
	fmt.Fprintf(r.e.stderr, format+"\n", a...)
	r.logMu.Unlock()
}

// serve accepts sessions until ctx is done.
func (r *relay) serve(ctx context.Context, st *serverTLS, addr, host string) error {
	tlsConf, fp, err := st.config(host)
	if err != nil {
		return err
	}
	ln, err := bp.Listen(r.sf.address(addr), tlsConf, r.downCfg)
	if err != nil {
		return withContext("listen on "+addr, err)
	}
	defer ln.Close()
	r.sf.observer.tracker("hop", "downstream").trackListener(ln)
	fmt.Fprintf(r.e.stderr, "fingerprint %s\nlistening on %s\n", fp, ln.Addr())
	r.logf("relaying to %s", r.upstream)
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.spool != nil {
		wg.Go(func() {
			r.spool.deliverPending(ctx, func(ctx context.Context) (*mux.Session, error) {
				return dial(ctx, r.sf.address(r.upstream), r.tlsConf, r.ver, r.upCfg, r.timeout)
			})
		})
	}
	for {
		down, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: a relay's normal end
			}
			return describe("accept", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.session(ctx, down)
		}()
	}
}

// session relays one accepted session: one upstream session, a stream
// upstream for every stream accepted. It ends when the client ends its
// session, when the upstream session ends, or when ctx is done (an
// interrupt); then the streams in progress are reset on both hops and both
// sessions end gracefully (endSession), with a reason phrase that says why.
func (r *relay) session(ctx context.Context, down *mux.Session) {
	defer down.Close()
	r.sf.observer.tracker("hop", "downstream").track(down)
	up, err := dial(ctx, r.sf.address(r.upstream), r.tlsConf, r.ver, r.upCfg, r.timeout)
	if err != nil {
		r.logf("relay: session refused: upstream: %v", oneLine(err))
		// Not a stream error: no stream of this session can be served, a
		// failure of the relay's own, so a session code (INTERNAL_ERROR
		// "closes either", SPEC.md section 9). None of the client's
		// streams has been processed yet, so closing at once loses no
		// frame that the client could not learn of from the close.
		down.CloseWithError(framing.InternalError, truncate("bpcat relay: upstream unavailable: "+oneLine(err)))
		return
	}
	defer up.Close()
	r.sf.observer.tracker("hop", "upstream").track(up)
	r.logf("session: relaying to %s", r.upstream)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the upstream session ended: so does this one
		select {
		case <-up.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	var wg sync.WaitGroup
	for {
		s, err := down.Accept(sctx)
		if err != nil {
			break // the client closed the session, the upstream's ended, or ctx is done
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stream(ctx, sctx, s, up)
		}()
	}
	wg.Wait()
	var reason string
	switch {
	case ctx.Err() != nil:
		reason = "bpcat relay: " + interruption(ctx).Error()
	case down.Err() == nil: // the upstream ended first
		err := r.sf.describe("upstream session", up.Err())
		r.logf("relay: %v", oneLine(err))
		reason = "bpcat relay: " + oneLine(err)
	default:
		reason = "bpcat relay: the client ended its session"
	}
	var ends sync.WaitGroup
	ends.Go(func() { endSession(up, reason) })
	endSession(down, reason)
	ends.Wait()
}

// stream relays one stream both ways through one copy buffer per
// direction (towards the upstream through the spool, if any). Each
// direction ends by half-closing the other hop and waiting until that hop
// consumed everything. relayCtx is the relay's, ctx the session's.
func (r *relay) stream(relayCtx, ctx context.Context, ds *mux.Stream, up *mux.Session) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	us, err := up.Open(octx)
	cancel()
	if err != nil {
		r.logf("relay: stream %d: open upstream: %v", ds.ID(), oneLine(err))
		ds.Reset(framing.RefusedStream)
		return
	}
	// On an interrupt, or when either session ends, abort both hops:
	// Reads and Writes do not watch ctx.
	stop := context.AfterFunc(ctx, func() {
		ds.Reset(framing.Cancel)
		us.Reset(framing.Cancel)
	})
	defer stop()
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	// abort resets both hops, with the code of err if it is a stream's
	// reset, which ends both directions.
	var abortOnce sync.Once
	abort := func(err error) {
		abortOnce.Do(func() {
			code := framing.Cancel
			var se *mux.StreamError
			if errors.As(err, &se) {
				code = se.Code
			}
			ds.Reset(code)
			us.Reset(code)
		})
	}
	forward := func(dst, src *mux.Stream, what string) {
		n, err := copyData(ctx, dst, src, 0)
		if err == nil {
			dst.CloseWrite()
			err = dst.WaitConsumed(ctx)
		}
		if err != nil {
			err = fmt.Errorf("%s after %s: %w", what, formatSize(uint64(n)), err)
		}
		errs <- err
	}
	var ss *spoolStream
	if r.spool != nil {
		if ss, err = r.spool.newStream(ds.ID()); err != nil {
			r.logf("relay: stream %d: %v", ds.ID(), oneLine(err))
			ds.Reset(framing.InternalError)
			us.Reset(framing.InternalError)
			return
		}
		go func() {
			n, err := ss.forward(ctx, us, ds, abort)
			if err != nil {
				err = fmt.Errorf("to upstream after %s: %w", formatSize(uint64(n)), err)
			}
			errs <- err
		}()
	} else {
		go forward(us, ds, "to upstream")
	}
	go forward(ds, us, "from upstream")
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			abort(err) // which ends the other direction too
		}
	}
	dst, ust := ds.Stats(), us.Stats()
	spooled := ""
	if ss != nil {
		if what := ss.finish(relayCtx); what != "" {
			r.logf("relay: stream %d: %s", ds.ID(), what)
		}
		spooled = "; " + ss.stats()
	}
	if first != nil {
		r.logf("relay: stream %d aborted: %v%s", ds.ID(), oneLine(first), spooled)
		return
	}
	if ss != nil {
		r.logf("stream %d: %s to upstream, %s back (stalls: %d downstream, %d upstream)%s",
			ds.ID(), formatSize(ust.BytesSent), formatSize(dst.BytesSent), dst.Stalls, ust.Stalls, spooled)
		return
	}
	r.logf("stream %d: %s to upstream, %s back; held at most one window per hop (stalls: %d downstream, %d upstream)",
		ds.ID(), formatSize(ust.BytesSent), formatSize(dst.BytesSent), dst.Stalls, ust.Stalls)
}
