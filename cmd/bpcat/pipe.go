package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/bpmux/bp/transport"
)

// pipeFlags are the flags of listen and connect.
type pipeFlags struct {
	sessionFlags
	viewFlags
	familyFlags
	// timeout bounds connecting: for connect, the handshake and the
	// opening of the stream; for listen, the wait for a peer's stream
	// (zero: wait for ever).
	timeout time.Duration
	// idle ends a transfer in which nothing moved either way for so long
	// (-w; zero: never).
	idle time.Duration
	// quit stops receiving so long after this side's sending ended (-q);
	// quitSet says whether it was given.
	quit    time.Duration
	quitSet bool
	// sendOnly and recvOnly use one direction of the stream only.
	sendOnly, recvOnly bool
	// keepOpen serves one session after another (listen -k).
	keepOpen bool
	verbose  bool
	// halfClose is nc's -N, which bpcat always does.
	halfClose bool
}

func (p *pipeFlags) register(fs *flagSet) {
	p.sessionFlags.register(fs)
	p.viewFlags.register(fs)
	p.familyFlags.register(fs)
	fs.BoolVar(&p.sendOnly, "send-only", false, "only send: never write what the peer sends (it is told to stop sending), as ncat --send-only")
	fs.BoolVar(&p.recvOnly, "recv-only", false, "only receive: never read stdin (this side's direction is closed at once), as ncat --recv-only")
	fs.Var(durationFlag{&p.idle}, "idle-timeout", "fail when nothing has moved either way for `DURATION`, as nc -w (connect: also bounds connecting unless --timeout is given)")
	fs.alias("w", "idle-timeout")
	fs.Var(durationFlag{&p.quit}, "q", "stop receiving `DURATION` after stdin's end has been sent and read by the peer, and exit 0, as nc -q (default: wait for the peer's end)")
	fs.BoolVar(&p.halfClose, "N", false, "half-close the stream at stdin's end, as nc -N: bpcat always does, so this changes nothing")
	fs.BoolVar(&p.verbose, "verbose", false, "say more: the peer's address when a session starts, and how each ends")
	fs.alias("v", "verbose")
}

// check validates the flags once parsed.
func (p *pipeFlags) check(fs *flagSet) error {
	if err := p.viewFlags.check(fs); err != nil {
		return err
	}
	if p.sendOnly && p.recvOnly {
		return usageErrorf("--send-only and --recv-only contradict each other")
	}
	p.quitSet = fs.isSet("q")
	if p.quitSet && p.recvOnly {
		return usageErrorf("-q counts from stdin's end, which --recv-only never reads")
	}
	_, err := p.family()
	return err
}

// logf prints a -v line.
func (p *pipeFlags) logf(e *env, format string, a ...any) {
	if p.verbose {
		fmt.Fprintf(e.stderr, "bpcat: "+format+"\n", a...)
	}
}

// setup opens the trace file, if any, and returns the session
// configuration with the trace hooked in (and, with -v, the session's
// log on stderr), and a function that closes the trace.
func (p *pipeFlags) setup(e *env, side string) (*mux.Config, func() error, error) {
	var tw *trace.Writer
	var hook func(mux.Event)
	if p.trace != "" {
		f, err := os.Create(p.trace)
		if err != nil {
			return nil, nil, fmt.Errorf("--trace: %w", err)
		}
		tw = trace.NewWriter(f, time.Now())
		hook = tw.Hook(side)
	}
	cfg, err := p.config(hook)
	if err != nil {
		if tw != nil {
			tw.Close()
		}
		return nil, nil, err
	}
	if p.verbose {
		cfg.Logger = logger(e.stderr)
	}
	closeTrace := func() error {
		if tw == nil {
			return nil
		}
		return tw.Close()
	}
	return cfg, closeTrace, nil
}

// splitHost returns the host of a host:port address, or a usage error.
func splitHost(what, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", usageErrorf("%s %q: want HOST:PORT, like 127.0.0.1:4242", what, addr)
	}
	return host, nil
}

// runListen is `bpcat listen`.
func runListen(ctx context.Context, e *env, args []string) error {
	var pf pipeFlags
	var st serverTLS
	fs := newFlagSet(e, "listen", "[flags] [HOST] PORT | HOST:PORT")
	pf.register(fs)
	fs.Var(durationFlag{&pf.timeout}, "timeout", "give up when no peer has connected and opened its stream within `DURATION` (default: wait for ever)")
	fs.BoolVar(&pf.keepOpen, "keep-open", false, "serve one session after another until interrupted, as nc -lk (stdin goes to the sessions in turn)")
	fs.alias("k", "keep-open")
	st.register(fs)
	rest, err := fs.parse(args, 1, 2)
	if err != nil {
		return err
	}
	if err := pf.check(fs); err != nil {
		return err
	}
	a, err := parseHostPort(rest, true)
	if err != nil {
		return err
	}
	fam, _ := pf.family()
	addr, err := listenAddr(ctx, a, fam)
	if err != nil {
		return err
	}
	if a.host == "" && fam != anyFamily {
		a.host, _, _ = net.SplitHostPort(addr) // 0.0.0.0 or ::, as asked with -4 or -6
	}
	cfg, closeTrace, err := pf.setup(e, "listen")
	if err != nil {
		return err
	}
	if err = pf.startObserver(e); err == nil {
		err = listen(ctx, e, &pf, &st, cfg, addr, a)
		pf.observer.close()
	}
	if terr := closeTrace(); err == nil {
		err = terr
	}
	return err
}

// listen serves one session on addr, or with -k one after another until
// ctx ends. asked is the address as the user gave it, for the messages.
func listen(ctx context.Context, e *env, pf *pipeFlags, st *serverTLS, cfg *mux.Config, addr string, asked hostPort) error {
	tlsConf, fp, err := st.config(asked.host)
	if err != nil {
		return err
	}
	ln, err := bp.Listen(pf.address(addr), tlsConf, cfg)
	if err != nil {
		return withContext("listen on "+addr, err)
	}
	defer ln.Close()
	pf.observer.sessions().trackListener(ln)
	fmt.Fprintf(e.stderr, "fingerprint %s\nlistening on %s\n", fp, shownAddr(asked, ln.Addr()))
	in := newStdinPump(e.stdin)
	for {
		accepted, err := serveOne(ctx, e, pf, ln, in)
		switch {
		case !pf.keepOpen || !accepted:
			return err
		case ctx.Err() != nil:
			return interruption(ctx)
		case err != nil:
			// One session failed: say so, and serve the next.
			fmt.Fprintf(e.stderr, "bpcat listen: %v\n", oneLine(err))
		}
	}
}

// serveOne accepts one session on ln and pipes its first stream. Without
// -k, it closes ln once a session arrived, as nc -l does. It reports
// whether a session was accepted: if not, the listener is done.
func serveOne(ctx context.Context, e *env, pf *pipeFlags, ln *bp.Listener, in *stdinPump) (accepted bool, err error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if pf.timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, pf.timeout)
	}
	defer cancel()
	sess, err := ln.Accept(actx)
	if !pf.keepOpen {
		ln.Close() // one session, like nc -l
	}
	if err != nil {
		return false, acceptError(ctx, actx, pf.timeout, "accept", err)
	}
	defer sess.Close()
	pf.observer.sessions().track(sess)
	pf.logf(e, "session from %s", sess.RemoteAddr())
	s, err := sess.Accept(actx)
	if err != nil {
		err = acceptError(ctx, actx, pf.timeout, "accept stream", err)
		endSession(sess, "bpcat: "+oneLine(err))
		return true, err
	}
	cancel()
	if err := pf.applyCompression(s); err != nil {
		pf.logf(e, "--compress: %v; sending plain", err)
	}
	return true, pipeSession(ctx, e, sess, s, pf, in)
}

// acceptError describes a failed Accept of listen, whose wait was bounded
// by timeout unless ctx (the command's) ended.
func acceptError(ctx, actx context.Context, timeout time.Duration, doing string, err error) error {
	switch {
	case ctx.Err() != nil:
		return interruption(ctx)
	case actx.Err() != nil:
		return fmt.Errorf("%s: no peer connected and opened a stream within %v (--timeout)", doing, timeout)
	}
	return describe(doing, err)
}

// runConnect is `bpcat connect`.
func runConnect(ctx context.Context, e *env, args []string) error {
	var pf pipeFlags
	var ct clientTLS
	fs := newFlagSet(e, "connect", "[flags] HOST PORT | HOST:PORT")
	pf.register(fs)
	registerTimeout(fs, &pf.timeout)
	ct.register(fs, "the server")
	rest, err := fs.parse(args, 1, 2)
	if err != nil {
		return err
	}
	if err := pf.check(fs); err != nil {
		return err
	}
	if pf.idle > 0 && !fs.isSet("timeout") {
		pf.timeout = pf.idle // nc -w bounds connecting too
	}
	a, err := parseHostPort(rest, false)
	if err != nil {
		return err
	}
	tlsConf, ver, err := ct.config(e.stderr, a.host)
	if err != nil {
		return err
	}
	fam, _ := pf.family()
	addr, err := dialAddr(ctx, a, fam)
	if err != nil {
		return err
	}
	if net.ParseIP(a.host) == nil && tlsConf.ServerName == "" {
		tlsConf.ServerName = a.host // the name, even when dialling an address of it
	}
	cfg, closeTrace, err := pf.setup(e, "connect")
	if err != nil {
		return err
	}
	if err = pf.startObserver(e); err == nil {
		err = connect(ctx, e, &pf, tlsConf, ver, cfg, addr)
		pf.observer.close()
	}
	if terr := closeTrace(); err == nil {
		err = terr
	}
	return err
}

func connect(ctx context.Context, e *env, pf *pipeFlags, tlsConf *tls.Config, ver *verifier, cfg *mux.Config, addr string) error {
	sess, err := dial(ctx, pf.address(addr), tlsConf, ver, cfg, pf.timeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	pf.observer.sessions().track(sess)
	pf.logf(e, "connected to %s", sess.RemoteAddr())
	octx, cancel := context.WithTimeout(ctx, pf.timeout)
	s, err := sess.Open(octx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			err = interruption(ctx)
		} else {
			err = pf.describe("open stream", err)
		}
		endSession(sess, "bpcat: "+oneLine(err))
		return err
	}
	if pf.codec != codec.None && s.Stats().Compression.Codec == codec.None {
		fmt.Fprintf(e.stderr, "bpcat: --compress %v: the peer accepts only %v; sending plain\n", pf.codec, sess.PeerCompression())
	}
	return pipeSession(ctx, e, sess, s, pf, newStdinPump(e.stdin))
}

// pipeSession runs the stream s of sess (pipeStream) and ends the
// session. When the transfer failed, pipeStream has reset the stream, so
// the peer learns of the loss on the stream; the session then ends
// gracefully all the same (stream errors never close a session, SPEC.md
// section 9), with a reason phrase that says what happened in case the
// peer does not finish in time.
func pipeSession(ctx context.Context, e *env, sess *mux.Session, s *mux.Stream, pf *pipeFlags, in *stdinPump) error {
	err := pipeStream(ctx, e, s, pf, in)
	if err != nil {
		endSession(sess, "bpcat: "+oneLine(err))
		pf.logf(e, "session with %s failed", sess.RemoteAddr())
		return err
	}
	endSession(sess, "bpcat: done")
	pf.logf(e, "session with %s done", sess.RemoteAddr())
	return nil
}

// dial connects to addr within timeout, turning a refused certificate
// into a message that says what to do.
func dial(ctx context.Context, addr string, tlsConf *tls.Config, ver *verifier, cfg *mux.Config, timeout time.Duration) (*mux.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sess, err := bp.Dial(dctx, addr, tlsConf, cfg)
	if err != nil {
		if xerr := ver.explain(err, addr); xerr != err {
			return nil, xerr
		}
		if ctx.Err() == nil && dctx.Err() != nil {
			if t, hostport, _ := bp.SplitAddress(addr); t == bp.TransportTCP {
				return nil, fmt.Errorf("connect to %s over TCP: no answer within %v (is a bpcat --transport tcp listening there?)", hostport, timeout)
			}
			return nil, fmt.Errorf("connect to %s: no answer within %v (is a bpcat listening there? it uses UDP: is UDP let through? if not, try --transport tcp at both ends)", addr, timeout)
		}
		if ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		if errors.Is(err, transport.ErrConnRefused) {
			// Nothing listens on this transport's port: perhaps the
			// listener runs over another.
			t, _, _ := bp.SplitAddress(addr)
			return nil, &plainError{fmt.Sprintf("%v (nothing listens there over %s; if the listener runs with another --transport, give the same one here)", describe("connect to "+addr, err), t), err}
		}
		return nil, describe("connect to "+addr, err)
	}
	return sess, nil
}
