package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/bpmux/bp/transport"
)

// pipeFlags are the flags of listen and connect.
type pipeFlags struct {
	windowFlags
	viewFlags
	timeout time.Duration
}

func (p *pipeFlags) register(fs *flagSet) {
	p.windowFlags.register(fs)
	p.viewFlags.register(fs)
	registerTimeout(fs, &p.timeout)
}

// setup opens the trace file, if any, and returns the session
// configuration with the trace hooked in, and a function that closes the
// trace.
func (p *pipeFlags) setup(side string) (*mux.Config, func() error, error) {
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
	fs := newFlagSet(e, "listen", "[flags] ADDR")
	pf.register(fs)
	st.register(fs)
	rest, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	host, err := splitHost("address", rest[0])
	if err != nil {
		return err
	}
	cfg, closeTrace, err := pf.setup("listen")
	if err != nil {
		return err
	}
	err = listen(ctx, e, &pf, &st, cfg, rest[0], host)
	if terr := closeTrace(); err == nil {
		err = terr
	}
	return err
}

func listen(ctx context.Context, e *env, pf *pipeFlags, st *serverTLS, cfg *mux.Config, addr, host string) error {
	tlsConf, fp, err := st.config(host)
	if err != nil {
		return err
	}
	ln, err := bp.Listen(addr, tlsConf, cfg)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	fmt.Fprintf(e.stderr, "fingerprint %s\nlistening on %s\n", fp, ln.Addr())
	sess, err := ln.Accept(ctx)
	ln.Close() // one session, like nc -l
	if err != nil {
		return describe("accept", err)
	}
	defer sess.Close()
	s, err := sess.Accept(ctx)
	if err != nil {
		return describe("accept stream", err)
	}
	if err := pipeStream(ctx, e, s, pf); err != nil {
		sess.CloseWithError(framing.Cancel, "bpcat: "+oneLine(err)) // tell the peer why
		return err
	}
	endSession(ctx, sess)
	return nil
}

// runConnect is `bpcat connect`.
func runConnect(ctx context.Context, e *env, args []string) error {
	var pf pipeFlags
	var ct clientTLS
	fs := newFlagSet(e, "connect", "[flags] ADDR")
	pf.register(fs)
	ct.register(fs, "the server")
	rest, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	host, err := splitHost("address", rest[0])
	if err != nil {
		return err
	}
	tlsConf, ver, err := ct.config(e.stderr, host)
	if err != nil {
		return err
	}
	cfg, closeTrace, err := pf.setup("connect")
	if err != nil {
		return err
	}
	err = connect(ctx, e, &pf, tlsConf, ver, cfg, rest[0])
	if terr := closeTrace(); err == nil {
		err = terr
	}
	return err
}

func connect(ctx context.Context, e *env, pf *pipeFlags, tlsConf *tls.Config, ver *verifier, cfg *mux.Config, addr string) error {
	sess, err := dial(ctx, addr, tlsConf, ver, cfg, pf.timeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	octx, cancel := context.WithTimeout(ctx, pf.timeout)
	s, err := sess.Open(octx)
	cancel()
	if err != nil {
		return describe("open stream", err)
	}
	if err := pipeStream(ctx, e, s, pf); err != nil {
		sess.CloseWithError(framing.Cancel, "bpcat: "+oneLine(err)) // tell the peer why
		return err
	}
	endSession(ctx, sess)
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
			return nil, fmt.Errorf("connect to %s: no answer within %v (is a bpcat listening there?)", addr, timeout)
		}
		return nil, describe("connect to "+addr, err)
	}
	return sess, nil
}

// pipeStream carries stdin to s and s to stdout, with the live view. It
// returns when the peer has consumed everything sent (CloseWrite, then
// WaitConsumed) and everything received has been written to stdout.
//
// The goroutine reading stdin cannot be interrupted while it waits in a
// Read of a blocking file: on an error, pipeStream returns without it, and
// it ends with the process (or at its stdin's next byte or EOF).
func pipeStream(ctx context.Context, e *env, s *mux.Stream, pf *pipeFlags) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var finished atomic.Bool
	v := startView(e.stderr, e.stderrTTY, pf.live(e), func() (mux.StreamStats, bool) { return s.Stats(), true })
	sendDone := make(chan error, 1)
	recvDone := make(chan error, 1)
	go func() { // stdin -> peer, then wait until the peer consumed it all
		_, err := copyData(ctx, s, e.stdin, 0)
		if err != nil {
			sendDone <- describe("send", err)
			return
		}
		s.CloseWrite()
		if err := s.WaitConsumed(ctx); err != nil {
			sendDone <- describe("waiting for the peer to consume what was sent", err)
			return
		}
		sendDone <- nil
	}()
	go func() { // peer -> stdout, at the read rate
		_, err := copyData(ctx, e.stdout, s, pf.readRate)
		if err != nil && !finished.Load() {
			recvDone <- describe("receive", err)
			return
		}
		recvDone <- nil
	}()
	var err error
	for pending := 2; pending > 0 && err == nil; pending-- {
		select {
		case err = <-sendDone:
		case err = <-recvDone:
		case <-ctx.Done(): // interrupted: Reads and Writes do not watch ctx
			err = errors.New("interrupted")
		}
	}
	if err != nil {
		finished.Store(true)
		s.Reset(framing.Cancel) // unblock the other direction
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
	}
	v.finish(!pf.quiet)
	return err
}

// describe wraps a transfer error with what was being done, in words a
// user can act on.
func describe(doing string, err error) error {
	var se *mux.SessionError
	var ae *transport.ApplicationError
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted: %w", doing, err)
	case errors.As(err, &se) && se.Remote:
		return fmt.Errorf("%s: the peer closed the session (%v): %w", doing, se.Code, err)
	case errors.As(err, &ae) && ae.Remote:
		return fmt.Errorf("%s: the peer closed the connection: %w", doing, err)
	case errors.Is(err, transport.ErrConnClosed):
		return fmt.Errorf("%s: connection lost: %w", doing, err)
	case errors.Is(err, mux.ErrStreamReset):
		return fmt.Errorf("%s: the stream was reset: %w", doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}
