package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
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
	sessionFlags
	viewFlags
	// timeout bounds connecting: for connect, the handshake and the
	// opening of the stream; for listen, the wait for a peer's stream
	// (zero: wait for ever).
	timeout time.Duration
}

func (p *pipeFlags) register(fs *flagSet) {
	p.sessionFlags.register(fs)
	p.viewFlags.register(fs)
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
	fs.Var(durationFlag{&pf.timeout}, "timeout", "give up when no peer has connected and opened its stream within `DURATION` (default: wait for ever)")
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
	actx, cancel := ctx, context.CancelFunc(func() {})
	if pf.timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, pf.timeout)
	}
	defer cancel()
	sess, err := ln.Accept(actx)
	ln.Close() // one session, like nc -l
	if err != nil {
		return acceptError(ctx, actx, pf.timeout, "accept", err)
	}
	defer sess.Close()
	s, err := sess.Accept(actx)
	if err != nil {
		err = acceptError(ctx, actx, pf.timeout, "accept stream", err)
		endSession(sess, "bpcat: "+oneLine(err))
		return err
	}
	cancel()
	return pipeSession(ctx, e, sess, s, pf)
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
	fs := newFlagSet(e, "connect", "[flags] ADDR")
	pf.register(fs)
	registerTimeout(fs, &pf.timeout)
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
		if ctx.Err() != nil {
			err = interruption(ctx)
		} else {
			err = pf.describe("open stream", err)
		}
		endSession(sess, "bpcat: "+oneLine(err))
		return err
	}
	return pipeSession(ctx, e, sess, s, pf)
}

// pipeSession runs the stream s of sess (pipeStream) and ends the
// session. When the transfer failed, pipeStream has reset the stream, so
// the peer learns of the loss on the stream; the session then ends
// gracefully all the same (stream errors never close a session, SPEC.md
// section 9), with a reason phrase that says what happened in case the
// peer does not finish in time.
func pipeSession(ctx context.Context, e *env, sess *mux.Session, s *mux.Stream, pf *pipeFlags) error {
	err := pipeStream(ctx, e, s, pf)
	if err != nil {
		endSession(sess, "bpcat: "+oneLine(err))
		return err
	}
	endSession(sess, "bpcat: done")
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
// On an error, or when ctx ends (an interrupt), it resets the stream with
// CANCEL: a RESET for what this side sent and, if the peer's data had not
// ended, a STOP_SENDING for what it sent, so that the peer learns that data
// was lost. Ending the session is the caller's work.
//
// The goroutine reading stdin cannot be interrupted while it waits in a
// Read of a blocking file: on an error, pipeStream returns without it, and
// it ends with the process (or at its stdin's next byte or EOF).
func pipeStream(ctx context.Context, e *env, s *mux.Stream, pf *pipeFlags) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var finished atomic.Bool
	v := startView(e.stderr, e.stderrTTY, pf.live(e), func() (mux.StreamStats, bool) { return s.Stats(), true })
	sendDone := make(chan error, 1)
	recvDone := make(chan error, 1)
	go func() { // stdin -> peer, then wait until the peer consumed it all
		_, err := copyData(cctx, s, e.stdin, 0)
		if err != nil {
			sendDone <- pf.describeSend("send", err)
			return
		}
		s.CloseWrite()
		if err := s.WaitConsumed(cctx); err != nil {
			sendDone <- pf.describeSend("waiting for the peer to consume what was sent", err)
			return
		}
		sendDone <- nil
	}()
	go func() { // peer -> stdout, at the read rate
		_, err := copyData(cctx, e.stdout, s, pf.readRate)
		if err != nil && !finished.Load() {
			recvDone <- pf.describe("receive", err)
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
			err = interruption(ctx)
		}
	}
	if err != nil {
		finished.Store(true)
		s.Reset(framing.Cancel) // tell the peer, and unblock the other direction
		if ctx.Err() != nil {
			err = interruption(ctx)
		}
	}
	v.finish(!pf.quiet)
	return err
}

// plainError is an error whose message is written for people and leaves
// out the wrapped error's words (they are still there for errors.Is).
type plainError struct {
	msg string
	err error
}

func (e *plainError) Error() string { return e.msg }
func (e *plainError) Unwrap() error { return e.err }

// peerUnreachable reports whether err says the peer stopped answering: the
// session's dead-peer timeout, or the transport's idle timeout.
func peerUnreachable(err error) bool {
	return errors.Is(err, mux.ErrPeerUnreachable) || errors.Is(err, transport.ErrIdleTimeout)
}

// describeSend is describe for the sending direction, where a stream error
// from the peer means that it stopped reading (STOP_SENDING).
func (f *sessionFlags) describeSend(doing string, err error) error {
	var se *mux.StreamError
	if errors.As(err, &se) && se.Remote {
		return &plainError{fmt.Sprintf("%s: the peer stopped reading (%v): data sent was lost", doing, se.Code), err}
	}
	return f.describe(doing, err)
}

// describe wraps a transfer error with what was being done, in words a
// user can act on. For a peer that stopped answering, use
// sessionFlags.describe, which knows how long it was waited for.
func describe(doing string, err error) error {
	var se *mux.SessionError
	var ae *transport.ApplicationError
	var ste *mux.StreamError
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted: %w", doing, err)
	case peerUnreachable(err):
		return &plainError{doing + ": the peer stopped answering (it, or the path to it, is gone)", err}
	case errors.As(err, &se) && se.Remote:
		return &plainError{fmt.Sprintf("%s: the peer closed the session (%v)%s", doing, se.Code, reasonOf(err)), err}
	case errors.As(err, &ae) && ae.Remote:
		return &plainError{fmt.Sprintf("%s: the peer closed the connection (code 0x%x)%s", doing, ae.Code, reasonOf(err)), err}
	case errors.Is(err, transport.ErrConnClosed):
		return fmt.Errorf("%s: connection lost: %w", doing, err)
	case errors.As(err, &ste) && ste.Remote:
		return &plainError{fmt.Sprintf("%s: the peer reset the stream (%v): data was lost", doing, ste.Code), err}
	case errors.Is(err, mux.ErrStreamReset):
		return fmt.Errorf("%s: the stream was reset: %w", doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// reasonOf returns ": " and the reason phrase of the peer's
// CONNECTION_CLOSE in err, or "" if there is none.
func reasonOf(err error) string {
	var ae *transport.ApplicationError
	if errors.As(err, &ae) && ae.Reason != "" {
		return ": " + strings.Join(strings.Fields(ae.Reason), " ")
	}
	return ""
}
