// Package memconn is an in-memory [transport.Conn] pair, for tests and
// fuzzing.
//
// [Pair] and [PairWith] return two connected endpoints that behave as the
// QUIC binding in package transport does, without sockets or TLS: one
// unidirectional control lane each way, bidirectional lanes accepted in the
// order they were opened, lane and connection errors of the same types
// (*transport.LaneError, *transport.ApplicationError) with the same Remote
// flags, write deadlines that fail with an error matching
// os.ErrDeadlineExceeded, and the same blocking rules. Every buffer is bounded: each
// direction of each lane is a pipe of Options.LaneBuffer bytes whose writer
// blocks while it is full, as QUIC flow control would block it, and each
// side may have at most Options.MaxLanes unfinished lanes open, as QUIC's
// stream limit allows. When either side calls CloseWithError, every blocked
// call on both sides returns at once, so nothing leaks a goroutine.
//
// What QUIC does over a network and memconn does not: there is no latency
// (RTT only reports the configured value), no loss or reordering, and a
// close reaches the peer instantly. A wait that ends because its context is
// done returns ctx.Err() itself.
//
// As in QUIC, a lane becomes visible to the peer's AcceptLane only once its
// opener has sent something on it (data, CloseWrite, CancelWrite or
// CancelRead), and lanes are accepted in the order they were opened: a
// visible lane makes every lane opened before it acceptable too, as a QUIC
// stream ID implicitly opens the lower ones.
package memconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/transport"
)

// Defaults of [Options].
const (
	// DefaultLaneBuffer is the default capacity of one lane direction.
	DefaultLaneBuffer = 1 << 20
	// DefaultMaxLanes is the default number of unfinished lanes a side may
	// have opened, as transport.QUICConfig's default MaxStreams.
	DefaultMaxLanes = 256
)

// Options configures a pair made by [PairWith]. The zero value gives the
// defaults.
type Options struct {
	// LaneBuffer is the capacity in bytes of each direction of each lane
	// and of each control lane. A Write blocks while the buffer is full.
	// Zero means DefaultLaneBuffer.
	LaneBuffer int
	// MaxLanes is how many unfinished lanes each side may have opened
	// (QUIC's MaxIncomingStreams of the other side). OpenLane blocks while
	// the limit is reached. A lane is finished when the side that accepted
	// it is done with both of its directions: it has ended or cancelled its
	// sending direction, and it has read to the end or cancelled its
	// receiving direction. Zero means DefaultMaxLanes.
	MaxLanes int
	// RTT is the round-trip time both Conns report. Zero by default.
	RTT time.Duration
}

func (o Options) withDefaults() Options {
	if o.LaneBuffer <= 0 {
		o.LaneBuffer = DefaultLaneBuffer
	}
	if o.MaxLanes <= 0 {
		o.MaxLanes = DefaultMaxLanes
	}
	return o
}

// Addr is the fake network address of a memconn endpoint.
type Addr struct {
	// Name identifies the endpoint, for example "memconn-3/client".
	Name string
}

// Network returns "memconn".
func (a Addr) Network() string { return "memconn" }

// String returns the endpoint's name.
func (a Addr) String() string { return a.Name }

var pairCount atomic.Uint64

// Pair returns two connected in-memory Conns with default [Options].
func Pair() (client, server transport.Conn) { return PairWith(Options{}) }

// PairWith returns two connected in-memory Conns configured by opts.
func PairWith(opts Options) (client, server transport.Conn) {
	opts = opts.withDefaults()
	n := pairCount.Add(1)
	p := &pair{opts: opts, done: make(chan struct{})}
	c := &Conn{p: p, client: true, addr: Addr{fmt.Sprintf("memconn-%d/client", n)}}
	s := &Conn{p: p, addr: Addr{fmt.Sprintf("memconn-%d/server", n)}}
	c.peer, s.peer = s, c
	return c, s
}

// pair is the state shared by the two ends. One mutex guards all of it:
// both Conns, their lanes and their pipes.
type pair struct {
	opts Options
	mu   sync.Mutex
	done chan struct{} // closed by the first CloseWithError
}

func (p *pair) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Conn is one end of an in-memory connection. It implements
// [transport.Conn]; all its methods are safe for concurrent use.
type Conn struct {
	p      *pair
	peer   *Conn
	client bool
	addr   Addr

	// Guarded by p.mu.
	closeErr   error // what this side's blocked calls return once closed
	ctlOpened  bool  // OpenControl was called: the uni stream limit (1) is used
	ctlIn      *pipe // the peer's control lane, once it opened one
	ctlTaken   bool  // AcceptControl returned ctlIn
	ctlWake    waker // AcceptControl waiters
	opened     int   // lanes this side opened that the peer has not finished
	openWake   waker // OpenLane waiters
	nextSeq    uint64
	incoming   []*lane // lanes the peer opened, not yet accepted, in order
	visibleSeq uint64  // lanes the peer opened with seq < visibleSeq are visible
	acceptWake waker   // AcceptLane waiters
}

var _ transport.Conn = (*Conn)(nil)

// waker wakes the goroutines waiting for a change: they take the channel
// under the pair's lock and wait on it without the lock; wake closes it.
// The channel is made only when someone waits.
type waker struct{ ch chan struct{} }

func (w *waker) wait() <-chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *waker) wake() {
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// OpenControl opens this side's control lane. Like a QUIC connection that
// allows one unidirectional stream, a second call blocks until ctx is done
// or the connection closes.
func (c *Conn) OpenControl(ctx context.Context) (transport.SendLane, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed() {
			return nil, c.closeErr
		}
		if !c.ctlOpened {
			c.ctlOpened = true
			pp := newPipe(p, nil)
			pp.onVisible = func() {
				c.peer.ctlIn = pp
				c.peer.ctlWake.wake()
			}
			return sendLane{c, pp}, nil
		}
		if err := c.waitLocked(ctx, nil); err != nil {
			return nil, err
		}
	}
}

// AcceptControl waits for the peer's control lane. The lane arrives once
// the peer has sent something on it. A second call blocks until ctx is
// done or the connection closes.
func (c *Conn) AcceptControl(ctx context.Context) (io.Reader, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed() {
			return nil, c.closeErr
		}
		if c.ctlIn != nil && !c.ctlTaken {
			c.ctlTaken = true
			return recvLane{c, c.ctlIn}, nil
		}
		if err := c.waitLocked(ctx, &c.ctlWake); err != nil {
			return nil, err
		}
	}
}

// OpenLane opens a bidirectional lane, waiting while this side has
// Options.MaxLanes unfinished lanes, until ctx is done or the connection
// closes. The peer sees the lane once something is sent on it.
func (c *Conn) OpenLane(ctx context.Context) (transport.Lane, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed() {
			return nil, c.closeErr
		}
		if c.opened < p.opts.MaxLanes {
			break
		}
		if err := c.waitLocked(ctx, &c.openWake); err != nil {
			return nil, err
		}
	}
	c.opened++
	l := &lane{opener: c, seq: c.nextSeq, counted: true}
	c.nextSeq++
	l.fwd = newPipe(p, l)
	l.back = newPipe(p, l)
	c.peer.incoming = append(c.peer.incoming, l)
	return &laneEnd{c: c, out: l.fwd, in: l.back}, nil
}

// AcceptLane waits for the next lane the peer opens, in the order the peer
// opened them, until ctx is done or the connection closes.
func (c *Conn) AcceptLane(ctx context.Context) (transport.Lane, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed() {
			return nil, c.closeErr
		}
		if len(c.incoming) > 0 && c.incoming[0].seq < c.visibleSeq {
			l := c.incoming[0]
			c.incoming[0] = nil
			c.incoming = c.incoming[1:]
			if len(c.incoming) == 0 {
				c.incoming = nil // let the backing array go
			}
			return &laneEnd{c: c, out: l.back, in: l.fwd}, nil
		}
		if err := c.waitLocked(ctx, &c.acceptWake); err != nil {
			return nil, err
		}
	}
}

// waitLocked waits, with p.mu held on entry and on return, until w is
// woken (w may be nil), ctx is done or the connection closes. It returns
// ctx.Err() only if ctx is done and the connection is still open.
func (c *Conn) waitLocked(ctx context.Context, w *waker) error {
	var ch <-chan struct{}
	if w != nil {
		ch = w.wait()
	}
	c.p.mu.Unlock()
	select {
	case <-ch:
	case <-c.p.done:
	case <-ctx.Done():
	}
	c.p.mu.Lock()
	if c.p.closed() {
		return nil // the caller reports the close
	}
	return ctx.Err()
}

// CloseWithError closes the connection with a bp/1 error code. This side's
// blocked and later calls fail with *transport.ApplicationError{Code,
// Remote: false}, the peer's with Remote: true. Data not yet read is lost.
// Closing again, from either side, does nothing.
func (c *Conn) CloseWithError(code uint64, reason string) error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed() {
		return nil
	}
	c.closeErr = &transport.ApplicationError{Code: code, Remote: false, Reason: reason}
	c.peer.closeErr = &transport.ApplicationError{Code: code, Remote: true, Reason: reason}
	close(p.done) // every wait selects on it
	for _, end := range []*Conn{c, c.peer} {
		end.incoming = nil
	}
	return nil
}

// Done is closed when the connection is closed by either side.
func (c *Conn) Done() <-chan struct{} { return c.p.done }

// RTT returns Options.RTT.
func (c *Conn) RTT() time.Duration { return c.p.opts.RTT }

// LocalAddr returns this end's fake address.
func (c *Conn) LocalAddr() net.Addr { return c.addr }

// RemoteAddr returns the peer's fake address.
func (c *Conn) RemoteAddr() net.Addr { return c.peer.addr }

// IsClient reports whether this is the client end of the pair.
func (c *Conn) IsClient() bool { return c.client }

// lane is one bidirectional lane: fwd carries the opener's data to the
// acceptor, back the acceptor's data to the opener.
type lane struct {
	opener  *Conn
	seq     uint64
	fwd     *pipe
	back    *pipe
	visible bool
	counted bool // still counts against opener.opened
}

// sent marks the lane as visible to the acceptor: the opener sent
// something on it. The caller holds p.mu.
func (l *lane) sent() {
	if l.visible {
		return
	}
	l.visible = true
	acc := l.opener.peer
	if l.seq >= acc.visibleSeq {
		acc.visibleSeq = l.seq + 1
		acc.acceptWake.wake()
	}
}

// update releases the lane's slot in the opener's limit once the acceptor
// is done with both directions, as QUIC returns stream credit when the
// receiving endpoint's stream completes. The caller holds p.mu.
func (l *lane) update() {
	if !l.counted || !l.back.senderDone() || !l.fwd.receiverDone() {
		return
	}
	l.counted = false
	l.opener.opened--
	l.opener.openWake.wake()
}

// pipe is one direction of a lane, or a control lane: a bounded buffer
// with a writer end and a reader end. All fields are guarded by p.mu.
type pipe struct {
	p         *pair
	l         *lane  // nil for a control lane
	onVisible func() // control lanes: called on the first send
	buf       bytes.Buffer
	readWake  waker // data, FIN or reset arrived; or the reader cancelled
	writeWake waker // space freed; or the reader stopped the writer

	// Writer side.
	fin         bool                 // CloseWrite: the peer reads io.EOF after the data
	resetErr    *transport.LaneError // the sending direction is cancelled: what Write returns
	remoteReset *transport.LaneError // what the reader's Read returns after the reset
	errSeen     bool                 // Write returned resetErr, or CloseWrite/CancelWrite came after it
	deadline    time.Time            // SetWriteDeadline; zero for none
	// Reader side.
	readErr  *transport.LaneError // CancelRead: what Read returns
	doneRead bool                 // Read returned io.EOF or the reset error
}

func newPipe(p *pair, l *lane) *pipe { return &pipe{p: p, l: l} }

// markSent records that the writer sent something.
func (pp *pipe) markSent() {
	if pp.l != nil {
		if pp.l.fwd == pp {
			pp.l.sent()
		}
		return
	}
	if pp.onVisible != nil {
		pp.onVisible()
		pp.onVisible = nil
	}
}

// senderDone reports whether the writer is done: it sent FIN, cancelled,
// or was stopped by the reader and has learnt of it.
func (pp *pipe) senderDone() bool {
	return pp.fin || (pp.resetErr != nil && (!pp.resetErr.Remote || pp.errSeen))
}

// receiverDone reports whether the reader is done: it cancelled, or read
// to the end or to the reset error.
func (pp *pipe) receiverDone() bool { return pp.readErr != nil || pp.doneRead }

func (pp *pipe) changed() {
	if pp.l != nil {
		pp.l.update()
	}
}

func (pp *pipe) write(c *Conn, b []byte) (int, error) {
	p := pp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	written := 0
	for {
		if pp.resetErr != nil {
			pp.errSeen = true
			pp.changed()
			return written, pp.resetErr
		}
		if p.closed() {
			return written, c.closeErr
		}
		if pp.fin {
			return written, errors.New("memconn: write on a lane closed for writing")
		}
		if !pp.deadline.IsZero() && !time.Now().Before(pp.deadline) {
			return written, errDeadline
		}
		if len(b) == 0 {
			return written, nil
		}
		if free := p.opts.LaneBuffer - pp.buf.Len(); free > 0 {
			n := min(free, len(b))
			pp.buf.Write(b[:n])
			b = b[n:]
			written += n
			pp.markSent()
			pp.readWake.wake()
			continue
		}
		ch := pp.writeWake.wait()
		var timer *time.Timer
		var timeout <-chan time.Time
		if !pp.deadline.IsZero() {
			timer = time.NewTimer(time.Until(pp.deadline))
			timeout = timer.C
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		p.mu.Lock()
	}
}

// errDeadline is what a Write past its deadline returns, as the QUIC
// binding does.
var errDeadline = fmt.Errorf("memconn: lane write: %w", os.ErrDeadlineExceeded)

func (pp *pipe) setWriteDeadline(t time.Time) {
	pp.p.mu.Lock()
	defer pp.p.mu.Unlock()
	pp.deadline = t
	pp.writeWake.wake() // blocked Writes look at the new deadline
}

func (pp *pipe) closeWrite() error {
	p := pp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed() || pp.fin {
		return nil
	}
	if pp.resetErr != nil {
		pp.errSeen = true
		pp.changed()
		return fmt.Errorf("memconn: CloseWrite on a cancelled lane: %w", pp.resetErr)
	}
	pp.fin = true
	pp.markSent()
	pp.readWake.wake()
	pp.changed()
	return nil
}

func (pp *pipe) cancelWrite(code uint64) {
	p := pp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed() {
		return
	}
	if pp.resetErr != nil {
		pp.errSeen = true
		pp.changed()
		return
	}
	pp.resetErr = &transport.LaneError{Code: code}
	pp.markSent()
	if !pp.doneRead && pp.readErr == nil {
		// The reset overtakes data and FIN the reader has not read yet.
		pp.remoteReset = &transport.LaneError{Code: code, Remote: true}
		pp.buf.Reset()
	}
	pp.readWake.wake()
	pp.writeWake.wake()
	pp.changed()
}

func (pp *pipe) cancelRead(code uint64) {
	p := pp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed() || pp.readErr != nil || pp.doneRead {
		return
	}
	if pp.l != nil && pp.l.back == pp {
		pp.l.sent() // STOP_SENDING makes the lane known to the acceptor
	}
	if pp.remoteReset != nil {
		// As in quic-go: the reader keeps the peer's error.
		pp.readErr = pp.remoteReset
	} else {
		pp.readErr = &transport.LaneError{Code: code}
	}
	pp.buf.Reset()
	if pp.resetErr == nil && !pp.fin {
		// STOP_SENDING: the writer's transport resets the direction.
		pp.resetErr = &transport.LaneError{Code: code, Remote: true}
	}
	pp.readWake.wake()
	pp.writeWake.wake()
	pp.changed()
}

func (pp *pipe) read(c *Conn, b []byte) (int, error) {
	p := pp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case pp.doneRead && pp.remoteReset == nil:
			return 0, io.EOF
		case pp.readErr != nil:
			return 0, pp.readErr
		case pp.remoteReset != nil:
			pp.doneRead = true
			pp.changed()
			return 0, pp.remoteReset
		case p.closed():
			return 0, c.closeErr
		}
		if pp.buf.Len() > 0 {
			n, _ := pp.buf.Read(b)
			if n > 0 {
				pp.writeWake.wake()
			}
			if pp.buf.Len() == 0 {
				pp.buf.Reset()
				if pp.fin {
					pp.doneRead = true
					pp.changed()
					return n, io.EOF
				}
			}
			return n, nil
		}
		if pp.fin {
			pp.doneRead = true
			pp.changed()
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		ch := pp.readWake.wait()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
		}
		p.mu.Lock()
	}
}

// laneEnd is one side's end of a lane: it writes out and reads in.
type laneEnd struct {
	c       *Conn
	out, in *pipe
}

var _ transport.Lane = (*laneEnd)(nil)

// Read reads the peer's data. It returns io.EOF (possibly with the last
// bytes) after the peer's CloseWrite and all its data, a
// *transport.LaneError after either side cancelled the direction, and the
// connection's error once it closed.
func (e *laneEnd) Read(b []byte) (int, error) { return e.in.read(e.c, b) }

// Write writes all of b, blocking while the lane's buffer is full.
func (e *laneEnd) Write(b []byte) (int, error) { return e.out.write(e.c, b) }

// CloseWrite ends the sending direction: the peer reads io.EOF after the
// data already written.
func (e *laneEnd) CloseWrite() error { return e.out.closeWrite() }

// CancelWrite abandons the sending direction: unread data is discarded and
// the peer's Read fails with *transport.LaneError{Code: code, Remote: true}.
func (e *laneEnd) CancelWrite(code uint64) { e.out.cancelWrite(code) }

// SetWriteDeadline makes Writes that have not completed by t fail with an
// error matching os.ErrDeadlineExceeded, having written part of their data
// perhaps. Zero means no deadline.
func (e *laneEnd) SetWriteDeadline(t time.Time) error {
	e.out.setWriteDeadline(t)
	return nil
}

// CancelRead stops the receiving direction: unread data is discarded, this
// side's Read fails with *transport.LaneError{Code: code}, and the peer's
// Write with *transport.LaneError{Code: code, Remote: true}.
func (e *laneEnd) CancelRead(code uint64) { e.in.cancelRead(code) }

// sendLane is the sending end of a control lane.
type sendLane struct {
	c  *Conn
	pp *pipe
}

func (s sendLane) Write(b []byte) (int, error) { return s.pp.write(s.c, b) }
func (s sendLane) CloseWrite() error           { return s.pp.closeWrite() }
func (s sendLane) CancelWrite(code uint64)     { s.pp.cancelWrite(code) }
func (s sendLane) SetWriteDeadline(t time.Time) error {
	s.pp.setWriteDeadline(t)
	return nil
}

// recvLane is the receiving end of a control lane.
type recvLane struct {
	c  *Conn
	pp *pipe
}

func (r recvLane) Read(b []byte) (int, error) { return r.pp.read(r.c, b) }
