package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

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
)

// Stream is one logical stream of a session: a net.Conn with its own
// flow-control window in each direction. Its methods are safe for
// concurrent use.
type Stream struct {
	sess *Session
	id   uint64
	lane transport.Lane

	readDeadline, writeDeadline deadline
	readReady                   chan struct{} // signalled when data, EOF or an error arrives
	writeReady                  chan struct{} // signalled when credit or an error arrives

	writeMu sync.Mutex // one Write or CloseWrite at a time
	laneMu  sync.Mutex // one writer on the lane at a time; see flushControl

	mu         sync.Mutex // guards everything below
	recv       *window.Receiver
	buf        ring
	filling    bool // the lane reader is writing into buf's free region
	lastActive time.Time
	send       window.Sender
	overload   Overload
	accepted   bool // handed to the application (for peer streams)

	// Receive direction.
	finRecvd   bool
	resetRecvd framing.ErrorCode
	gotReset   bool
	readClosed bool // the application closed reading: STOP_SENDING queued or sent
	eofSeen    bool // Read returned io.EOF; the final consumed count is queued
	// The Limit of the peer's last BLOCKED: a sender sends one per limit,
	// so a repeat does no work (SPEC.md section 10).
	peerBlocked     uint64
	peerBlockedSeen bool
	// Send direction.
	writeClosed  bool      // CloseWrite or Close: no more Write
	laneWriting  bool      // a DATA frame is being written to the lane
	laneDeadline time.Time // the write deadline set on the lane
	closedByApp  bool      // Close was called
	finSent      bool
	resetSent    bool
	localReset   framing.ErrorCode // code of a reset this side sent
	stopRecvd    bool
	stopCode     framing.ErrorCode
	peerConsumed uint64
	consumedWait chan struct{} // made by WaitConsumed, closed when it should look again
	// What the last WINDOW_UPDATE this side sent carried.
	sentLimit, sentConsumed uint64
	// Control frames waiting for the lane.
	pendUpdate, pendBlocked, pendStop, pendReset, pendFin bool
	blockedLimit                                          uint64
	stopOut, resetOut                                     framing.ErrorCode
	// Lane lifecycle.
	laneSendClosed bool
	laneRecvDone   bool
	removed        bool

	stats      StreamStats
	stallStart time.Time

	// The lane reader's own state, touched by no other goroutine.
	rd struct {
		ctl     *controlScratch // made when the first control frame arrives
		opening bool            // the next frame may be the opening empty DATA
	}
}

func newStream(sess *Session, id uint64, lane transport.Lane, recv *window.Receiver, peerInitial uint64) *Stream {
	now := sess.cfg.Now()
	return &Stream{
		sess:       sess,
		id:         id,
		lane:       lane,
		readReady:  make(chan struct{}, 1),
		writeReady: make(chan struct{}, 1),
		recv:       recv,
		send:       window.NewSender(peerInitial),
		lastActive: now,
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
	signal(s.writeReady)
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

// laneWriteGrace is how long past its deadline a Write may take to finish
// the DATA frame it is writing on the lane. A frame cut short breaks the
// lane, so a deadline that passes mid-frame lets the frame finish, and the
// Write returns the timeout at its next wait for credit; only a frame held
// this much longer, by a peer that stopped reading its transport, aborts
// the stream.
const laneWriteGrace = time.Second

func laneDeadlineFor(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	if now := time.Now(); t.Before(now) {
		t = now // a deadline already past still leaves the frame its grace
	}
	return t.Add(laneWriteGrace)
}

// controlWriteTimeout bounds a write of control frames on a lane. Peers
// read their lanes eagerly (SPEC.md 3.3), so only a peer that stopped
// reading its transport can hold one this long; the stream is then aborted.
const controlWriteTimeout = 10 * time.Second

// setLaneDeadline sets the lane's write deadline if it changed.
func (s *Stream) setLaneDeadline(t time.Time) {
	s.mu.Lock()
	changed := !t.Equal(s.laneDeadline)
	s.laneDeadline = t
	s.mu.Unlock()
	if changed {
		s.lane.SetWriteDeadline(t)
	}
}

// Read reads data the peer sent. Each byte read returns credit to the peer.
// It returns io.EOF after the peer's CloseWrite and all data are read.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.readDeadline.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		s.mu.Lock()
		if s.buf.len() > 0 && !s.readClosed {
			n, ev := s.consumeLocked(p)
			s.mu.Unlock()
			s.flushControl()
			s.sess.emitAll(ev)
			return n, nil
		}
		err := s.readErrLocked()
		if err == io.EOF && !s.eofSeen {
			s.eofSeen = true
			s.pendUpdate = s.recv != nil // report the final consumed count
		}
		s.mu.Unlock()
		if err != nil {
			s.flushControl()
			s.maybeRemove()
			return 0, err
		}
		if len(p) == 0 {
			return 0, nil
		}
		select {
		case <-s.readReady:
		case <-s.readDeadline.wait():
		case <-s.sess.done:
		}
	}
}

// readErrLocked says why there is nothing to read, or nil to wait.
func (s *Stream) readErrLocked() error {
	switch {
	case s.readClosed:
		return ErrClosed
	case s.gotReset:
		return &StreamError{StreamID: s.id, Code: s.resetRecvd, Remote: true}
	case s.finRecvd:
		return io.EOF
	case s.sess.isClosed():
		return s.sess.err()
	}
	return nil
}

// consumeLocked copies buffered data into p, returning credit.
func (s *Stream) consumeLocked(p []byte) (int, []Event) {
	n := s.buf.read(p)
	if s.buf.len() == 0 && s.buf.cap() <= smallRing && !s.filling {
		// A small buffer is cheaper to make again than to keep: a stream
		// that carries messages now and then holds no memory in between.
		s.buf.drop()
		s.recv.SetBufferCap(0)
	}
	now := s.sess.cfg.Now()
	s.lastActive = now
	s.stats.BytesConsumed += uint64(n)
	s.recv.SetRTT(s.sess.rtt())
	oldWindow := s.recv.Window()
	_, grant := s.recv.OnConsumed(uint64(n), now)
	if grant {
		s.pendUpdate = true
	}
	if !s.sess.hasHook() {
		return n, nil
	}
	ev := []Event{s.eventLocked(EventConsumed, now)}
	if w := s.recv.Window(); w != oldWindow {
		ev = append(ev, s.eventLocked(EventWindowResized, now))
	}
	return n, ev
}

// Write writes p, waiting for credit as the stream's Overload mode says.
func (s *Stream) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	written := 0
	for len(p) > 0 {
		n, err := s.reserveCredit(len(p))
		if err != nil || n == 0 {
			if errors.Is(err, errDropped) {
				return written + len(p), nil
			}
			return written, err
		}
		if err := s.writeData(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

var errDropped = errors.New("dropped")

// reserveCredit waits until some credit is available and takes up to
// want bytes of it, at most one frame's worth.
func (s *Stream) reserveCredit(want int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.writeDeadline.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if err := s.writeErrLocked(); err != nil {
			return 0, err
		}
		avail := s.send.Available()
		if s.overload == Drop {
			if uint64(want) > avail {
				s.stats.Drops++
				s.stats.BytesDropped += uint64(want)
				ev := s.eventLocked(EventDropped, s.sess.cfg.Now())
				ev.Dropped = uint64(want)
				s.mu.Unlock()
				s.sess.emit(ev)
				s.mu.Lock()
				return 0, errDropped
			}
		}
		if avail > 0 {
			n := min(uint64(want), avail, s.sess.peerMaxFrame.Load())
			if err := s.send.OnSent(n); err != nil {
				return 0, err
			}
			s.stats.BytesSent += n
			s.sess.stats.bytesSent.Add(n)
			return int(n), nil
		}
		if s.overload == FailFast {
			return 0, ErrWouldBlock
		}
		s.blockLocked()
		s.mu.Unlock()
		s.flushControl()
		select {
		case <-s.writeReady:
		case <-s.writeDeadline.wait():
		case <-s.sess.done:
		}
		s.mu.Lock()
	}
}

// blockLocked records that a writer is out of credit and queues BLOCKED.
func (s *Stream) blockLocked() {
	limit, send := s.send.Blocked()
	if !send {
		return
	}
	now := s.sess.cfg.Now()
	s.pendBlocked, s.blockedLimit = true, limit
	s.stats.Stalls++
	s.sess.stats.stalls.Add(1)
	s.stallStart = now
	if s.sess.hasHook() {
		ev := s.eventLocked(EventBlocked, now)
		s.mu.Unlock()
		s.sess.emit(ev)
		s.mu.Lock()
	}
}

func (s *Stream) writeErrLocked() error {
	switch {
	case s.stopRecvd:
		return &StreamError{StreamID: s.id, Code: s.stopCode, Remote: true}
	case s.resetSent || s.pendReset:
		return &StreamError{StreamID: s.id, Code: s.localReset}
	case s.writeClosed:
		return ErrClosed
	case s.sess.isClosed():
		return s.sess.err()
	}
	return nil
}

// writeData sends one DATA frame. Credit for p is already taken.
func (s *Stream) writeData(p []byte) error {
	s.laneMu.Lock()
	s.mu.Lock()
	err := s.writeErrLocked()
	s.laneWriting = err == nil
	s.mu.Unlock()
	if err == nil {
		s.setLaneDeadline(laneDeadlineFor(s.writeDeadline.when()))
		buf := s.sess.frameBuf()
		h := framing.AppendDataHeader(buf[:0], s.id, len(p), false)
		if _, err = s.lane.Write(h); err == nil {
			_, err = s.lane.Write(p)
		}
		s.sess.putFrameBuf(buf)
		s.mu.Lock()
		s.laneWriting = false
		s.mu.Unlock()
		if err != nil {
			err = s.dataWriteFailed(err)
		}
	}
	s.laneMu.Unlock()
	s.flushControl()
	return err
}

// dataWriteFailed handles a DATA write that failed part way. The frame may
// be cut short, so the lane cannot carry another frame: unless the lane or
// the session already ended, the stream is aborted.
func (s *Stream) dataWriteFailed(err error) error {
	s.mu.Lock()
	aborted, code, closed := s.resetSent && s.laneSendClosed, s.localReset, s.closedByApp
	s.mu.Unlock()
	var le *transport.LaneError
	switch {
	case s.sess.isClosed():
		return s.sess.err()
	case aborted && closed: // by Close while the write was held
		return ErrClosed
	case aborted: // by Reset while the write was held
		return &StreamError{StreamID: s.id, Code: code}
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.abortLane(framing.Cancel)
		return os.ErrDeadlineExceeded
	case errors.As(err, &le): // the peer aborted the lane at the QUIC level
		s.laneWriteFailed(err)
		s.mu.Lock()
		defer s.mu.Unlock()
		if werr := s.writeErrLocked(); werr != nil {
			return werr
		}
		return err
	}
	s.sess.fail(err) // anything else: the transport connection is failing
	return s.sess.err()
}

// abortLane abandons both directions of the stream at the transport level,
// for when nothing more can be written on the lane: a frame was cut short,
// or a write is held by a peer that stopped reading its transport. The
// peer sees the lane reset and stopped (SPEC.md 3.4).
func (s *Stream) abortLane(code framing.ErrorCode) {
	s.mu.Lock()
	if s.laneSendClosed {
		s.mu.Unlock()
		return
	}
	if !s.sendDoneLocked() {
		s.resetSent, s.localReset = true, code
	}
	s.closeReadLocked(code)
	s.pendUpdate, s.pendBlocked, s.pendStop, s.pendReset, s.pendFin = false, false, false, false, false
	s.laneSendClosed = true
	s.wakeWaitConsumedLocked()
	s.mu.Unlock()
	s.lane.CancelWrite(uint64(code))
	s.lane.CancelRead(uint64(code))
	signal(s.readReady)
	signal(s.writeReady)
	s.maybeRemove()
}

// CloseWrite ends the sending direction: the peer reads io.EOF after the
// data already written. Reading goes on.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if s.writeClosed {
		s.mu.Unlock()
		return nil
	}
	s.writeClosed = true
	s.mu.Unlock()
	signal(s.writeReady)
	s.writeMu.Lock() // wait for a Write in progress to return
	s.mu.Lock()
	if !s.resetSent && !s.pendReset && !s.stopRecvd {
		s.pendFin = true
	}
	s.mu.Unlock()
	s.writeMu.Unlock()
	s.flushControl()
	return nil
}

// CloseRead stops reading: unread data is discarded and the peer is asked
// to stop sending (STOP_SENDING with CANCEL), unless it already finished.
func (s *Stream) CloseRead() error {
	s.mu.Lock()
	s.closeReadLocked(framing.Cancel)
	s.mu.Unlock()
	signal(s.readReady)
	s.flushControl()
	s.maybeRemove()
	return nil
}

func (s *Stream) closeReadLocked(code framing.ErrorCode) {
	if s.readClosed {
		return
	}
	switch {
	case s.gotReset:
	case s.finRecvd && s.buf.len() == 0 && !s.filling:
		// Everything was read but the end: report it consumed, as at EOF.
		if !s.eofSeen {
			s.eofSeen = true
			s.pendUpdate = s.recv != nil
		}
	default: // data the application will never read: tell the sender
		s.pendStop, s.stopOut = true, code
	}
	s.discardLocked()
	s.readClosed = true
}

// discardLocked throws away unread data, returning its memory.
func (s *Stream) discardLocked() {
	if s.recv == nil {
		return
	}
	if n := s.buf.len(); n > 0 {
		s.recv.OnConsumed(uint64(n), s.sess.cfg.Now()) // no update: the stream is done reading
		s.pendUpdate = false
		s.buf.skip(n)
	}
	if !s.filling { // else the lane reader drops it when its fill ends
		s.buf.drop()
		s.recv.SetBufferCap(0)
	}
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
	signal(s.readReady)
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
	if !s.finSent && !s.resetSent {
		s.pendReset, s.resetOut, s.localReset = true, code, code
		s.pendFin = false
	}
	s.writeClosed = true
	held := s.laneWriting
	s.mu.Unlock()
	signal(s.readReady)
	signal(s.writeReady)
	if held { // the RESET frame cannot get past the held write: abort the lane
		s.abortLane(code)
		return nil
	}
	s.flushControl()
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
		case s.stopRecvd:
			err = &StreamError{StreamID: s.id, Code: s.stopCode, Remote: true}
		case s.resetSent:
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

// Stats returns a snapshot of the stream's counters.
func (s *Stream) Stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ID = s.id
	st.SendLimit = s.send.Max()
	st.SendCredit = s.send.Available()
	st.PeerConsumed = s.peerConsumed
	st.ConsumerLag = s.send.Sent() - s.peerConsumed
	if !s.stallStart.IsZero() {
		st.TimeStalled += s.sess.cfg.Now().Sub(s.stallStart)
	}
	if s.recv != nil {
		st.BytesReceived = s.recv.Received()
		st.Buffered = s.recv.Buffered()
		st.RecvLimit = s.recv.Limit()
		st.RecvWindow = s.recv.Window()
		st.Reserved = s.recv.Reserved()
	}
	return st
}

func (s *Stream) eventLocked(k EventKind, now time.Time) Event {
	ev := Event{Time: now, Stream: s.id, Kind: k, Limit: s.send.Max(), Credit: s.send.Available()}
	if s.recv != nil {
		if k <= EventPeerBlocked {
			ev.Limit = s.recv.Limit()
		}
		ev.Window, ev.Consumed, ev.Buffered = s.recv.Window(), s.recv.Consumed(), s.recv.Buffered()
	}
	return ev
}

// flushControl writes the stream's queued control frames. The caller holds
// no lock. Whoever holds laneMu flushes after releasing it, so a frame
// queued while another goroutine writes on the lane is never stranded.
func (s *Stream) flushControl() {
	for {
		s.mu.Lock()
		pending := s.hasPendingLocked()
		s.mu.Unlock()
		if !pending || !s.laneMu.TryLock() {
			return
		}
		s.writeControl()
		s.laneMu.Unlock()
	}
}

func (s *Stream) hasPendingLocked() bool {
	if s.laneSendClosed {
		return false
	}
	return s.pendUpdate || s.pendBlocked || s.pendStop || s.pendReset || s.pendFin ||
		(!s.laneSendClosed && s.sendDoneLocked() && s.recvDoneLocked())
}

func (s *Stream) sendDoneLocked() bool { return s.finSent || s.resetSent }

// recvDoneLocked reports whether this side will send nothing more for the
// receiving direction: the peer reset it, or finished and the application
// read to the end (so the final consumed count went out), or the
// application stopped reading and STOP_SENDING went out.
func (s *Stream) recvDoneLocked() bool {
	return s.gotReset || (s.finRecvd && s.eofSeen && !s.pendUpdate) || (s.readClosed && !s.pendStop)
}

// writeControl writes queued frames; the caller holds laneMu.
func (s *Stream) writeControl() {
	now := s.sess.cfg.Now()
	var events [2]Event
	nev := 0
	buf := s.sess.frameBuf()
	defer s.sess.putFrameBuf(buf)
	s.mu.Lock()
	b := buf[:0]
	if s.laneSendClosed {
		s.pendUpdate, s.pendBlocked, s.pendStop, s.pendReset, s.pendFin = false, false, false, false, false
		s.mu.Unlock()
		return
	}
	if s.pendUpdate && s.recv != nil && (!s.readClosed || s.eofSeen) &&
		(s.recv.Limit() > s.sentLimit || s.recv.Consumed() > s.sentConsumed) { // never a useless update
		s.sentLimit, s.sentConsumed = s.recv.Limit(), s.recv.Consumed()
		b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeWindowUpdate, StreamID: s.id},
			Offset: s.sentLimit, Consumed: s.sentConsumed})
		s.stats.UpdatesSent++
		s.sess.stats.updatesSent.Add(1)
		events[nev] = s.eventLocked(EventGrant, now)
		nev++
	}
	s.pendUpdate = false
	if s.pendBlocked && !s.sendDoneLocked() {
		b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeBlocked, StreamID: s.id}, Offset: s.blockedLimit})
		s.stats.BlockedSent++
	}
	s.pendBlocked = false
	if s.pendStop {
		b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeStopSending, StreamID: s.id}, ErrorCode: s.stopOut})
		s.pendStop = false
	}
	if s.pendReset && !s.sendDoneLocked() {
		b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeReset, StreamID: s.id}, ErrorCode: s.resetOut})
		s.resetSent = true
		s.wakeWaitConsumedLocked()
	}
	s.pendReset = false
	if s.pendFin && !s.sendDoneLocked() {
		b = framing.AppendDataHeader(b, s.id, 0, true)
		s.finSent = true
	}
	s.pendFin = false
	closeLane := !s.laneSendClosed && s.sendDoneLocked() && s.recvDoneLocked()
	if closeLane {
		s.laneSendClosed = true
	}
	s.mu.Unlock()
	if len(b) > 0 {
		s.setLaneDeadline(time.Now().Add(controlWriteTimeout))
		if _, err := s.lane.Write(b); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.abortLane(framing.Cancel)
			} else {
				s.laneWriteFailed(s.sess.laneError(err))
			}
			return
		}
	}
	if closeLane {
		s.lane.CloseWrite()
		s.maybeRemove()
	}
	for _, ev := range events[:nev] {
		s.sess.emit(ev)
	}
}

func appendFrame(b []byte, f *framing.Frame) []byte {
	b, err := framing.AppendFrame(b, f)
	if err != nil {
		panic(fmt.Sprintf("mux: encoding %v: %v", f.Type, err)) // values are ours and in range
	}
	return b
}

// laneWriteFailed handles a lane whose sending half failed under us (the
// peer aborted reading it at the QUIC level, SPEC.md 3.4): as if by
// STOP_SENDING, nothing more can be sent; the receiving half goes on.
func (s *Stream) laneWriteFailed(err error) {
	code := framing.Cancel
	var le *transport.LaneError
	if errors.As(err, &le) {
		code = framing.ErrorCode(le.Code)
	}
	s.mu.Lock()
	if !s.stopRecvd && !s.sendDoneLocked() {
		s.stopRecvd, s.stopCode = true, code
	}
	s.laneSendClosed = true
	s.wakeWaitConsumedLocked()
	s.mu.Unlock()
	signal(s.writeReady)
	s.maybeRemove()
}

// laneReadFailed handles a lane whose receiving half the peer aborted at
// the QUIC level: as if by RESET, and the lane is done for reading.
func (s *Stream) laneReadFailed(le *transport.LaneError) {
	s.mu.Lock()
	if !s.gotReset && !s.finRecvd {
		s.gotReset, s.resetRecvd = true, framing.ErrorCode(le.Code)
		s.discardLocked()
	}
	s.laneRecvDone = true
	s.mu.Unlock()
	signal(s.readReady)
	s.flushControl()
	s.maybeRemove()
}

// maybeRemove retires the stream from the session once its lane is done in
// both directions and its unread data is gone.
func (s *Stream) maybeRemove() {
	s.mu.Lock()
	done := !s.removed && s.laneSendClosed && s.laneRecvDone && (s.buf.len() == 0 || s.readClosed || s.gotReset)
	if done {
		s.removed = true
		if s.recv != nil && !s.filling {
			s.buf.drop()
			s.recv.Close()
			s.recv = nil
		}
	}
	s.mu.Unlock()
	if done {
		s.sess.removeStream(s)
	}
}

// laneReader is the body of the stream's lane-reader goroutine: it owns
// the receiving half of the lane and ends when the peer closes it or the
// session ends. first is the frame header the session already read when
// the peer opened the lane. The caller has done sess.wg.Add(1).
//
// An idle stream's reader waits here, at the top of its goroutine, with a
// shallow Peek: waiting deeper (inside framing.ReadHeader, under the frame
// loop) doubles every idle reader's stack from 2 KiB to 4 KiB.
func (s *Stream) laneReader(br *bufio.Reader, first *framing.Header) {
	defer s.sess.wg.Done()
	s.rd.opening = first != nil // the opener's first frame may be an empty DATA
	for {
		if first == nil && br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				s.laneReadEnded(err)
				return
			}
		}
		if !s.readFrames(br, first) {
			return
		}
		first = nil
	}
}

// readFrames handles frames until the lane's read buffer is empty at a
// frame boundary (true: wait for more) or the lane or session ends (false).
func (s *Stream) readFrames(br *bufio.Reader, first *framing.Header) bool {
	for {
		var h framing.Header
		var err error
		switch {
		case first != nil:
			h, first = *first, nil
		case br.Buffered() == 0:
			return true
		default:
			if h, err = framing.ReadHeader(br); err != nil {
				s.laneReadEnded(err)
				return false
			}
		}
		if h.StreamID != s.id || !h.Type.IsStreamFrame() && h.Type.Known() {
			s.sess.protocolError(framing.ProtocolError, fmt.Errorf("%v for stream %d on the lane of stream %d", h.Type, h.StreamID, s.id))
			return false
		}
		if h.Type == framing.TypeData {
			if err := s.onData(br, h, s.rd.opening); err != nil {
				s.laneReadEnded(err)
				return false
			}
			s.rd.opening = false
			continue
		}
		if s.rd.ctl == nil {
			s.rd.ctl = new(controlScratch)
		}
		ctl := s.rd.ctl
		payload := ctl.payload[:h.Length]
		if _, err := io.ReadFull(br, payload); err != nil {
			s.laneReadEnded(midFrame(err))
			return false
		}
		if !h.Type.Known() {
			if err := s.sess.useless(); err != nil {
				return false
			}
			continue
		}
		if err := framing.DecodePayload(&ctl.frame, h, payload); err != nil {
			s.sess.protocolError(codeFor(err), err)
			return false
		}
		s.rd.opening = false
		if err := s.onControl(&ctl.frame); err != nil {
			s.sess.fail(err)
			return false
		}
	}
}

// Receive buffer sizes: a buffer starts at no less than minRing and
// doubles as data needs; one no larger than smallRing is freed as soon as
// the application has read it empty.
const (
	minRing   = 512
	smallRing = 4096
)

// controlScratch is where a lane reader decodes control frames.
type controlScratch struct {
	payload [framing.MaxControlPayload]byte
	frame   framing.Frame
}

func codeFor(err error) framing.ErrorCode {
	switch {
	case errors.Is(err, framing.ErrFrameSize):
		return framing.FrameSizeError
	case errors.Is(err, framing.ErrSettingValue):
		return framing.SettingsError
	}
	return framing.ProtocolError
}

// laneReadEnded handles the end of the lane's receiving half.
func (s *Stream) laneReadEnded(err error) {
	if s.sess.isClosed() {
		return
	}
	var le *transport.LaneError
	switch {
	case errors.As(err, &le):
		s.laneReadFailed(le)
		return
	case err == io.EOF:
		s.mu.Lock()
		clean := s.finRecvd || s.gotReset
		s.laneRecvDone = true
		s.mu.Unlock()
		if !clean {
			s.sess.protocolError(framing.ProtocolError, fmt.Errorf("lane of stream %d ended without FIN or RESET", s.id))
			return
		}
		s.flushControl()
		s.maybeRemove()
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.sess.protocolError(framing.ProtocolError, fmt.Errorf("lane of stream %d ended inside a frame", s.id))
	case errors.Is(err, framing.ErrFrameSize) || errors.Is(err, framing.ErrMalformed):
		s.sess.protocolError(codeFor(err), fmt.Errorf("stream %d: %w", s.id, err))
	default:
		s.sess.fail(err)
	}
}

// onData receives one DATA frame, reading its payload straight into the
// stream's buffer after checking it against the granted credit.
func (s *Stream) onData(br *bufio.Reader, h framing.Header, opening bool) error {
	fin := h.Flags&framing.FlagFIN != 0
	n := int(h.Length)
	if h.Length > s.sess.cfg.MaxFramePayload {
		return s.sess.protocolErr(framing.FrameSizeError, fmt.Errorf("stream %d: DATA of %d bytes exceeds SETTINGS_MAX_FRAME_PAYLOAD %d", s.id, h.Length, s.sess.cfg.MaxFramePayload))
	}
	s.mu.Lock()
	switch {
	case s.finRecvd || s.gotReset:
		s.mu.Unlock()
		return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: DATA after FIN or RESET", s.id))
	case s.recv == nil:
		s.mu.Unlock()
		return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: DATA on a finished stream", s.id))
	}
	if err := s.recv.OnData(h.Length); err != nil {
		s.mu.Unlock()
		return s.sess.protocolErr(framing.FlowControlError, fmt.Errorf("stream %d: %w", s.id, err))
	}
	s.stats.BytesReceived += h.Length
	s.sess.stats.bytesReceived.Add(h.Length)
	if n == 0 && !fin && !opening {
		s.mu.Unlock()
		if err := s.sess.useless(); err != nil {
			return err
		}
		s.mu.Lock()
	}
	if s.readClosed {
		// Nobody will read it: count it, return its credit silently, drop it.
		s.recv.OnConsumed(h.Length, s.sess.cfg.Now())
		s.pendUpdate = false
		s.finRecvd = s.finRecvd || fin
		s.mu.Unlock()
		if _, err := br.Discard(n); err != nil {
			return midFrame(err)
		}
		return nil
	}
	if n == 0 {
		s.finRecvd = s.finRecvd || fin
		s.mu.Unlock()
		if fin {
			signal(s.readReady)
			s.flushControl()
		}
		return nil
	}
	if need := s.buf.len() + n; need > s.buf.cap() {
		limit := int(max(s.recv.Window(), s.recv.BufferSize()))
		s.buf.grow(min(max(need, 2*s.buf.cap(), minRing), limit))
		s.recv.SetBufferCap(uint64(s.buf.cap()))
	}
	p1, p2 := s.buf.free(n)
	s.filling = true
	s.mu.Unlock()

	_, err := io.ReadFull(br, p1)
	if err == nil && len(p2) > 0 {
		_, err = io.ReadFull(br, p2)
	}

	s.mu.Lock()
	s.filling = false
	if s.removed && s.recv != nil { // retired while we filled: release here
		s.buf.drop()
		s.recv.Close()
		s.recv = nil
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		s.mu.Unlock()
		return midFrame(err)
	}
	if s.readClosed {
		s.discardLocked()
		s.recv.OnConsumed(uint64(n), s.sess.cfg.Now())
		s.pendUpdate = false
	} else {
		s.buf.commit(n)
	}
	s.lastActive = s.sess.cfg.Now()
	s.finRecvd = s.finRecvd || fin
	s.mu.Unlock()
	signal(s.readReady)
	if fin {
		s.flushControl()
	}
	return nil
}

// onControl applies WINDOW_UPDATE, BLOCKED, RESET or STOP_SENDING.
func (s *Stream) onControl(f *framing.Frame) error {
	now := s.sess.cfg.Now()
	var ev []Event
	s.mu.Lock()
	switch f.Type {
	case framing.TypeWindowUpdate:
		if f.Consumed > f.Offset || f.Consumed > s.send.Sent() {
			s.mu.Unlock()
			return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: WINDOW_UPDATE reports %d consumed of %d sent (limit %d)", s.id, f.Consumed, s.send.Sent(), f.Offset))
		}
		s.stats.UpdatesReceived++
		s.sess.stats.updatesReceived.Add(1)
		wasBlocked := s.send.Available() == 0
		grew := s.send.OnUpdate(f.Offset)
		consumedGrew := f.Consumed > s.peerConsumed
		if consumedGrew {
			s.peerConsumed = f.Consumed
			s.wakeWaitConsumedLocked()
		}
		if !grew && !consumedGrew {
			s.mu.Unlock()
			return s.sess.useless()
		}
		if grew && s.sess.hasHook() {
			ev = append(ev, s.eventLocked(EventCredit, now))
			ev[0].Consumed = f.Consumed
			if wasBlocked && !s.stallStart.IsZero() {
				ev = append(ev, s.eventLocked(EventUnblocked, now))
			}
		}
		if grew && wasBlocked && !s.stallStart.IsZero() {
			s.stats.TimeStalled += now.Sub(s.stallStart)
			s.stallStart = time.Time{}
		}
		s.mu.Unlock()
		signal(s.writeReady)
	case framing.TypeBlocked:
		s.stats.BlockedReceived++
		repeated := s.peerBlockedSeen && f.Offset == s.peerBlocked
		s.peerBlocked, s.peerBlockedSeen = f.Offset, true
		if s.recv == nil || s.readClosed || repeated {
			s.mu.Unlock()
			return s.sess.useless()
		}
		oldWindow := s.recv.Window()
		unreached := f.Offset > s.recv.Received()
		s.recv.SetRTT(s.sess.rtt())
		_, grant := s.recv.OnBlocked(f.Offset, now)
		if grant {
			s.pendUpdate = true
		}
		if s.sess.hasHook() {
			e := s.eventLocked(EventPeerBlocked, now)
			e.Limit = f.Offset
			ev = append(ev, e)
			if s.recv.Window() != oldWindow {
				ev = append(ev, s.eventLocked(EventWindowResized, now))
			}
		}
		s.mu.Unlock()
		if unreached {
			if err := s.sess.useless(); err != nil {
				return err
			}
		}
		s.flushControl()
	case framing.TypeReset:
		if s.finRecvd || s.gotReset {
			s.mu.Unlock()
			return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: RESET after FIN or RESET", s.id))
		}
		s.gotReset, s.resetRecvd = true, f.ErrorCode
		if !s.accepted {
			s.mu.Unlock()
			if err := s.sess.useless(); err != nil {
				return err
			}
			s.mu.Lock()
		}
		s.discardLocked()
		s.mu.Unlock()
		signal(s.readReady)
		s.flushControl()
	case framing.TypeStopSending:
		if s.stopRecvd { // a peer sends it once: a repeat does no work
			s.mu.Unlock()
			return s.sess.useless()
		}
		s.stopRecvd, s.stopCode = true, f.ErrorCode
		s.wakeWaitConsumedLocked()
		if !s.sendDoneLocked() {
			s.pendReset, s.resetOut, s.localReset = true, f.ErrorCode, f.ErrorCode
			s.pendFin = false
		}
		s.mu.Unlock()
		signal(s.writeReady)
		s.flushControl()
	default:
		s.mu.Unlock()
	}
	s.sess.emitAll(ev)
	return nil
}

// tick runs the stream's periodic housekeeping: idle window shrink and
// releasing the buffer of a stream that has gone quiet.
func (s *Stream) tick(now time.Time, idleFor time.Duration) {
	s.mu.Lock()
	var ev Event
	shrunk := false
	if s.recv != nil {
		if s.recv.OnTick(now) {
			shrunk = true
			ev = s.eventLocked(EventWindowResized, now)
		}
		if s.buf.len() == 0 && s.buf.cap() > 0 && !s.filling && now.Sub(s.lastActive) >= idleFor {
			s.buf.drop()
			s.recv.SetBufferCap(0)
		}
	}
	s.mu.Unlock()
	if shrunk {
		s.sess.emit(ev)
	}
}

// midFrame reports a lane that ended inside a frame's payload.
func midFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
