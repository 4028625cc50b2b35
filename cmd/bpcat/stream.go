package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// The rule for when listen and connect end (README.md, "When bpcat
// exits"): a side's transfer has two directions.
//
//   - Sending: stdin is copied to the stream until its end; then the
//     stream is half-closed (always, as nc -N) and the side waits until
//     the peer's application has read everything (WaitConsumed).
//     --recv-only half-closes at once and never reads stdin.
//   - Receiving: the stream is copied to stdout until the peer's end.
//     --send-only stops the peer's direction at once (STOP_SENDING):
//     nothing it sends is written anywhere, and it learns so.
//
// The side exits 0 once both directions are done, with two shortcuts: a
// side whose stdin is a terminal stops waiting for it once the peer's data
// has ended (as nc -l does, so that an interactive listener or a chat ends
// when the peer is done, without a Ctrl-D); and -q D stops receiving D
// after the sending ended (as nc -q). Anything else that ends a direction
// early (an interrupt, the peer's reset or STOP_SENDING, a stdout that
// closed, -w's idle timeout) fails the transfer: the stream is reset, so
// the peer learns of it, and the side exits non-zero.

// pipeStream carries stdin (through in) to s and s to stdout, with the
// live view, by the rule above. Ending the session is the caller's work.
//
// The goroutine reading stdin cannot be interrupted while it waits in a
// Read of a blocking file: pipeStream returns without waiting for it, and
// in keeps what it reads for the next session (listen -k).
func pipeStream(ctx context.Context, e *env, s *mux.Stream, pf *pipeFlags, in *stdinPump) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	size := pf.size
	if size == 0 && e.stdinSize > 0 && !pf.recvOnly && !in.used() {
		size = uint64(e.stdinSize)
	}
	v := startView(viewConfig{w: e.stderr, tty: e.stderrTTY, live: pf.live(e), width: e.columns, size: size},
		func() (mux.StreamStats, bool) { return s.Stats(), true })
	var out io.Writer = outputWriter{e.stdout}
	if e.stdoutTTY && e.stderrTTY {
		out = v.writer(out) // the live line is cleared before received text
	}

	var finished, quitting, peerEnded atomic.Bool
	stopIn := make(chan struct{}) // closed: take stdin as ended
	sendDone := make(chan error, 1)
	recvDone := make(chan error, 1)
	go func() { // stdin -> peer, then wait until the peer consumed it all
		if !pf.recvOnly {
			if _, err := copyData(cctx, s, in.reader(stopIn), 0); err != nil {
				sendDone <- pf.describeSend("send", err)
				return
			}
		}
		s.CloseWrite()
		if err := s.WaitConsumed(cctx); err != nil {
			sendDone <- pf.describeSend("waiting for the peer to consume what was sent", err)
			return
		}
		sendDone <- nil
	}()
	go func() { // peer -> stdout, at the read rate
		if pf.sendOnly {
			s.CloseRead()
			recvDone <- nil
			return
		}
		_, err := copyData(cctx, out, s, pf.readRate)
		var oe *outputError
		switch {
		case err == nil:
			peerEnded.Store(true)
		case quitting.Load() || finished.Load():
			err = nil
		case errors.As(err, &oe):
			s.CloseRead() // STOP_SENDING at once: the peer learns before the reset
			err = describeOutput(oe.err)
		default:
			err = pf.describe("receive", err)
		}
		recvDone <- err
	}()

	idle := newIdleWatch(pf.idle, s)
	defer idle.stop()
	var quit <-chan time.Time
	var err error
	sent, received := false, false
	for !(sent && received) && err == nil {
		select {
		case err = <-sendDone:
			sent = err == nil
			if sent && !received && pf.quitSet {
				quit = time.After(pf.quit)
			}
		case err = <-recvDone:
			received = err == nil
			if received && !sent && e.stdinTTY && peerEnded.Load() {
				close(stopIn) // an interactive side is done when its peer is
			}
			var se *mux.StreamError
			if err != nil && errors.As(err, &se) && se.Remote {
				err = preferStopped(err, sendDone)
			}
		case <-quit:
			quitting.Store(true)
			s.CloseRead()
		case <-idle.c():
			err = idle.check()
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

// preferStopped returns the sending direction's error instead of recvErr
// (the peer reset its direction) if it comes within a moment and says
// that the peer stopped reading: a receiver that stops reading also resets
// its own direction, and what the user needs to hear is that it stopped
// reading.
func preferStopped(recvErr error, sendDone <-chan error) error {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-sendDone:
		var se *mux.StreamError
		if err != nil && errors.As(err, &se) && se.Remote {
			return err
		}
	case <-t.C:
	}
	return recvErr
}

// outputError marks an error of writing to stdout, as opposed to one of
// reading the stream.
type outputError struct{ err error }

func (e *outputError) Error() string { return "stdout: " + e.err.Error() }
func (e *outputError) Unwrap() error { return e.err }

// outputWriter tags its writer's errors as outputErrors.
type outputWriter struct{ w io.Writer }

func (o outputWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil {
		err = &outputError{err}
	}
	return n, err
}

// idleWatch fails a transfer in which nothing moved either way for its
// limit (-w). The zero limit never fires.
type idleWatch struct {
	limit time.Duration
	s     *mux.Stream
	tick  *time.Ticker
	last  uint64
	since time.Time
}

func newIdleWatch(limit time.Duration, s *mux.Stream) *idleWatch {
	w := &idleWatch{limit: limit, s: s, since: time.Now()}
	if limit > 0 {
		w.tick = time.NewTicker(min(max(limit/10, 10*time.Millisecond), time.Second))
	}
	return w
}

// c is the channel on which to call check; nil (never ready) without a
// limit.
func (w *idleWatch) c() <-chan time.Time {
	if w.tick == nil {
		return nil
	}
	return w.tick.C
}

func (w *idleWatch) stop() {
	if w.tick != nil {
		w.tick.Stop()
	}
}

// check returns an error once nothing has moved for the limit.
func (w *idleWatch) check() error {
	st := w.s.Stats()
	moved := st.BytesSent + st.PeerConsumed + st.BytesReceived + st.BytesConsumed
	if moved != w.last {
		w.last, w.since = moved, time.Now()
		return nil
	}
	if time.Since(w.since) >= w.limit {
		return fmt.Errorf("nothing moved either way for %v (-w)", w.limit)
	}
	return nil
}

// stdinPump reads stdin on one goroutine for one session after another,
// and only when a session asks: nothing is read ahead, so a stalled
// stream stops stdin being read, and a read that was still waiting when a
// session ended delivers its bytes to the next one. Only one session uses
// it at a time.
type stdinPump struct {
	src     io.Reader
	started bool
	req     chan int // a read of at most this many bytes is wanted
	resp    chan pumpResult
	pending bool   // a read was asked for and not yet answered
	left    []byte // read and not yet delivered
	err     error  // the sticky end (io.EOF) or failure of src
	usedAny bool
}

type pumpResult struct {
	data []byte
	err  error
}

func newStdinPump(src io.Reader) *stdinPump {
	return &stdinPump{src: src, req: make(chan int), resp: make(chan pumpResult, 1)}
}

// used reports whether a session has read from the pump before.
func (p *stdinPump) used() bool { return p.usedAny }

func (p *stdinPump) loop() {
	buf := make([]byte, copyBufSize)
	for n := range p.req {
		// buf is free again: a session asks only once it has taken
		// everything the previous read gave.
		m, err := p.src.Read(buf[:n])
		p.resp <- pumpResult{buf[:m], err}
		if err != nil {
			return
		}
	}
}

// reader returns the reader of one session: it ends (io.EOF) at stdin's
// end, or as soon as stop is closed.
func (p *stdinPump) reader(stop <-chan struct{}) io.Reader {
	p.usedAny = true
	return &pumpReader{p: p, stop: stop}
}

type pumpReader struct {
	p    *stdinPump
	stop <-chan struct{}
}

func (r *pumpReader) Read(b []byte) (int, error) {
	p := r.p
	for len(p.left) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if !p.pending {
			if !p.started {
				p.started = true
				go p.loop()
			}
			p.req <- min(len(b), copyBufSize)
			p.pending = true
		}
		select {
		case res := <-p.resp:
			p.pending = false
			p.left, p.err = res.data, res.err
		case <-r.stop:
			return 0, io.EOF
		}
	}
	n := copy(b, p.left)
	p.left = p.left[n:]
	return n, nil
}
