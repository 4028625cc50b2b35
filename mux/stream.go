package mux

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/window"
)

// Overload chooses what a stream's Write does when the peer's window is
// full: the three answers to overload.
type Overload uint8

const (
	// Block makes Write wait for credit: backpressure reaches the writer.
	// This is the default.
	Block Overload = iota
	// FailFast makes Write send what credit allows and return
	// ErrWouldBlock for the rest, instead of waiting.
	FailFast
	// Drop treats each Write as a message that is worthless late: it is
	// sent whole if the credit allows, or else discarded whole, counted in
	// the stream's stats and reported as EventDropped. Write returns nil
	// either way.
	Drop
	// LatestWins is for real-time data where only the newest value
	// matters (metrics, tickers, video frames): each Write is a message,
	// sent whole or not at all, and Write never waits for credit. A
	// message the credit covers is sent at once; otherwise it is kept as
	// the stream's one pending message, replacing the one already pending
	// (counted in StreamStats.Replaced and BytesReplaced and reported as
	// EventReplaced), and Write returns nil. When credit arrives, a
	// goroutine of the stream's own sends the pending message without
	// any further Write, so the peer gets the latest value once its
	// window opens. See latest.go for the details: at most one message
	// pending, messages larger than the peer's window, the write
	// deadline, CloseWrite (delivers it), Close (discards it) and Reset.
	LatestWins
)

// Stream is one logical stream of a session: a net.Conn with its own
// flow-control window in each direction. Its methods are safe for
// concurrent use.
//
// The stream's code is split by direction: this file has the type and the
// calls that end it, stream_write.go the sending direction and the frames
// this side writes on the lane, stream_read.go the receiving direction and
// the lane reader. Its lifecycle is the pure state in state.go.
type Stream struct {
	sess *Session
	id   uint64
	lane transport.Lane

	readDeadline, writeDeadline lazyDeadline
	// The channels that wake a Read waiting for data, EOF or an error
	// (wakeReader), and a Write waiting for credit or an error
	// (wakeWriter): made by the first Read or Write that waits (see
	// readyChan), so that a stream nobody waits on has none.
	readReady, writeReady atomic.Pointer[chan struct{}]
	// The buffer a waiting Read lent the lane reader (stream_direct.go):
	// nil until a Read first lends one.
	direct atomic.Pointer[directRead]

	writeMu sync.Mutex // one Write or CloseWrite at a time
	laneMu  sync.Mutex // one writer on the lane at a time; see flushControl

	// Everything below is guarded by mu. The small fields sit together,
	// so that an idle stream's Stream stays in a small size class.
	mu         sync.Mutex
	lc         lifecycle // the states of both directions and of the lane
	recv       *window.Receiver
	buf        ring
	lastActive time.Time
	send       window.Sender
	// The Retry After of the peer's RESET, when it refused the stream
	// for its admission rate (SPEC.md 5.4); zero when none.
	peerRetryAfter time.Duration
	codec          atomic.Uint32 // codec.Codec this side's direction is compressed with, if the peer accepts it (sendCodec)
	probe          codec.Probe   // whether the next frame is worth compressing; the writer's (writeMu)
	prio           Priority      // SetPriority's
	overload       Overload
	filling        bool // the lane reader is writing into buf's free region
	answered       bool // the peer answered or refused a stream this side opened (the breaker heard)
	accepted       bool // handed to the application (always, for streams this side opened)
	refused        bool // reset by the peer before the application saw it, and refused
	removed        bool // retired from the session

	// What the application called. These decide what Read and Write
	// return; the lifecycle decides what goes on the wire.
	readClosed  bool // CloseRead, Close or Reset: Read returns ErrClosed
	writeClosed bool // CloseWrite, Close or Reset: Write returns ErrClosed
	closedByApp bool // Close

	// Receive direction's flow control: whether the peer's last BLOCKED
	// was seen (its Limit is peerBlocked), and whether a WINDOW_UPDATE is
	// worth sending.
	peerBlockedSeen bool
	pendUpdate      bool

	// Send direction's flow control, its flags.
	pendBlocked       bool // BLOCKED(blockedLimit) waits for the lane
	laneWriting       bool // a DATA frame is being written to the lane
	peerBudgetLimited bool // the peer's last WINDOW_UPDATE had BUDGET_LIMITED

	// Error codes of the frames that ended a direction.
	peerReset  framing.ErrorCode // of the peer's RESET
	peerStop   framing.ErrorCode // of the peer's STOP_SENDING
	localReset framing.ErrorCode // of the RESET this side sends
	localStop  framing.ErrorCode // of the STOP_SENDING this side sends

	// Receive direction's flow control. The Limit of the peer's last
	// BLOCKED: a sender sends one per limit, so a repeat does no work
	// (SPEC.md section 10).
	peerBlocked uint64
	// What the last WINDOW_UPDATE this side sent carried (initially the
	// credit the peer assumes, so that an update never repeats it).
	sentLimit, sentConsumed uint64

	// Send direction's flow control.
	blockedLimit uint64
	laneDeadline time.Time // the write deadline set on the lane
	peerConsumed uint64
	consumedWait chan struct{} // made by WaitConsumed, closed when it should look again

	// LatestWins's pending message and send turn (latest.go).
	latest latestState

	stats streamCounters

	// Observability (stream_observe.go): what a stream that stalls,
	// grants or writes keeps of it; nil until then (see observing).
	obs *streamObs

	// The lane reader's own state, touched by no other goroutine.
	rd struct {
		ctl     *controlScratch // made when the first control frame arrives
		opening bool            // the next frame may be the opening empty DATA
		flush   bool            // the frame just handled owes the peer frames (flushControl)
	}
}

func newStream(sess *Session, id uint64, lane transport.Lane, recv *window.Receiver, peerInitial uint64) *Stream {
	now := sess.cfg.Now()
	return &Stream{
		sess:       sess,
		id:         id,
		lane:       lane,
		recv:       recv,
		sentLimit:  recv.Limit(),
		send:       window.NewSender(peerInitial),
		lastActive: now,
		prio:       DefaultPriority,
	}
}

// ID returns the stream's ID (odd when the client opened it).
func (s *Stream) ID() uint64 { return s.id }

// Session returns the session the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// LocalAddr returns the session's local address.
func (s *Stream) LocalAddr() net.Addr { return s.sess.conn.LocalAddr() }

// RemoteAddr returns the session's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.sess.conn.RemoteAddr() }

// SetOverload chooses what Write does without credit (Block by default).
func (s *Stream) SetOverload(o Overload) {
	s.mu.Lock()
	s.overload = o
	s.mu.Unlock()
	s.wakeWriter()
}

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for pending and future Reads.
func (s *Stream) SetReadDeadline(t time.Time) error { s.readDeadline.set(t); return nil }

// SetWriteDeadline sets the deadline for pending and future Writes.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDeadline.set(t)
	s.mu.Lock()
	inLane := s.laneWriting
	s.mu.Unlock()
	if inLane { // a Write is held by the transport: the new deadline applies to it too
		s.setLaneDeadline(laneDeadlineFor(t))
	}
	return nil
}

// CloseWrite ends the sending direction: the peer reads io.EOF after the
// data already written. Reading goes on.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	s.writeClosed = true
	s.mu.Unlock()
	s.wakeWriter()
	s.writeMu.Lock() // wait for a Write in progress to return
	s.mu.Lock()
	s.lc.closeWrite()
	s.mu.Unlock()
	s.writeMu.Unlock()
	s.flushControl()
	s.maybeRemove()
	return nil
}

// CloseRead stops reading: unread data is discarded and the peer is asked
// to stop sending (STOP_SENDING with CANCEL), unless it already finished
// and everything was read.
func (s *Stream) CloseRead() error {
	s.mu.Lock()
	s.closeReadLocked(framing.Cancel)
	s.mu.Unlock()
	s.wakeReader()
	s.flushControl()
	s.maybeRemove()
	return nil
}

// closeReadLocked ends the application's reading: STOP_SENDING with code
// if data is left unread, or the final update if everything was read.
func (s *Stream) closeReadLocked(code framing.ErrorCode) {
	if s.readClosed {
		return
	}
	s.readClosed = true
	if s.lc.closeRead(s.buf.len() == 0 && !s.filling) {
		s.localStop = code
	}
	s.discardLocked()
}

// Close closes both directions: data already written is still delivered
// (the peer reads it, then io.EOF), unread data is discarded, and pending
// Reads and Writes return at once. To learn that the peer consumed all
// data, use CloseWrite and WaitConsumed before Close.
//
// A Write held by the transport itself (the peer stopped reading its end
// of the connection while it still had credit) cannot end gracefully:
// Close then aborts the stream instead, as Reset does.
func (s *Stream) Close() error {
	s.mu.Lock()
	s.closeReadLocked(framing.Cancel)
	s.closedByApp = true
	held := s.laneWriting
	s.mu.Unlock()
	s.wakeReader()
	if held {
		s.abortLane(framing.Cancel)
		return nil
	}
	return s.CloseWrite()
}

// Reset aborts both directions with an application error code: unsent data
// is abandoned, unread data discarded, and the peer's Reads and Writes fail
// with a *StreamError carrying code.
func (s *Stream) Reset(code framing.ErrorCode) error {
	s.mu.Lock()
	s.closeReadLocked(code)
	reset := s.lc.reset()
	if reset {
		s.localReset = code
	}
	s.writeClosed = true
	held := s.laneWriting
	s.mu.Unlock()
	if reset {
		s.emitLifecycle(EventStreamReset, uint64(code), false)
	}
	s.wakeReader()
	s.wakeWriter()
	if held { // the RESET frame cannot get past the held write: abort the lane
		s.abortLane(code)
		return nil
	}
	s.flushControl()
	s.maybeRemove()
	return nil
}

// WaitConsumed waits until the peer's application has read every byte
// written on this stream, as reported in its WINDOW_UPDATE frames. A peer
// reports its last bytes when it reads io.EOF, so call it after CloseWrite.
func (s *Stream) WaitConsumed(ctx context.Context) error {
	for {
		s.mu.Lock()
		done := s.peerConsumed == s.send.Sent()
		if s.consumedWait == nil {
			s.consumedWait = make(chan struct{})
		}
		wait := s.consumedWait
		err := error(nil)
		switch {
		case done:
		case s.lc.peerStopped:
			err = s.peerStopError()
		case s.lc.send == sendResetQueued || s.lc.send == sendResetSent:
			err = &StreamError{StreamID: s.id, Code: s.localReset}
		case s.sess.isClosed():
			err = s.sess.err()
		}
		s.mu.Unlock()
		if done || err != nil {
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.sess.done:
		}
	}
}

// wakeWaitConsumedLocked wakes WaitConsumed callers to look again: the
// peer reported consumption, or the send side ended.
func (s *Stream) wakeWaitConsumedLocked() {
	if s.consumedWait != nil {
		close(s.consumedWait)
		s.consumedWait = nil
	}
}

// maybeRemove retires the stream from the session once its lifecycle says
// it is gone (lifecycle.retired).
func (s *Stream) maybeRemove() {
	s.mu.Lock()
	done := !s.removed && s.lc.retired(s.buf.len() > 0)
	if done {
		s.removed = true
		if s.recv != nil && !s.filling { // else the lane reader releases it when its fill ends
			s.buf.drop()
			s.sess.closeReceiver(s.recv)
			s.recv = nil
		}
	}
	s.mu.Unlock()
	if done {
		s.emitLifecycle(EventStreamClosed, 0, false)
		s.sess.removeStream(s)
	}
}

// state describes the stream's lifecycle, for tests and debugging.
func (s *Stream) state() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lc.String()
}

// Stats returns a snapshot of the stream's counters.
func (s *Stream) Stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats.snapshot()
	st.ID = s.id
	st.SendLimit = s.send.Max()
	st.SendCredit = s.send.Available()
	st.PeerConsumed = s.peerConsumed
	st.ConsumerLag = s.send.Sent() - s.peerConsumed
	st.Compression.Codec = codec.None
	if c := s.sendCodec(); s.sess.peerAccepts(c) {
		st.Compression.Codec = c
	}
	s.fillObservedLocked(&st, s.sess.cfg.Now())
	if s.recv != nil {
		st.BytesReceived = s.recv.Received()
		st.Buffered = s.recv.Buffered()
		st.RecvLimit = s.recv.Limit()
		st.RecvWindow = s.recv.Window()
		st.Reserved = s.recv.Reserved()
	}
	return st
}

// eventLocked returns the stream's event of kind k at now, with the
// stream's windows and credit.
func (s *Stream) eventLocked(k EventKind, now time.Time) Event {
	var ev Event
	s.setEventLocked(&ev, k, now)
	return ev
}

// setEventLocked fills ev in as eventLocked's.
func (s *Stream) setEventLocked(ev *Event, k EventKind, now time.Time) {
	*ev = Event{Time: now, Stream: s.id, Kind: k, Limit: s.send.Max(), Credit: s.send.Available()}
	if s.recv != nil {
		if k <= EventPeerBlocked {
			ev.Limit = s.recv.Limit()
		}
		ev.Window, ev.Consumed, ev.Buffered = s.recv.Window(), s.recv.Consumed(), s.recv.Buffered()
	}
}
