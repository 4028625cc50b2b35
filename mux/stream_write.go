package mux

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
)

// This file is the stream's sending direction, and everything this side
// writes on the lane: DATA, and the control frames both directions queue.

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

// Write writes p, waiting for credit as the stream's Overload mode says.
func (s *Stream) Write(p []byte) (int, error) {
	if s.overloadMode() == LatestWins {
		return s.writeLatest(p) // latest.go
	}
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
// want bytes of it, at most one frame's worth. A wait is a stall for
// credit, from the moment the credit ran out until the writer resumes
// (or gives up).
func (s *Stream) reserveCredit(want int) (int, error) {
	var out eventBuf
	s.mu.Lock()
	n, err := s.reserveCreditLocked(want, &out)
	if err != nil {
		s.endCreditStallLocked(s.sess.cfg.Now(), false, &out)
	}
	s.mu.Unlock()
	out.emit(s.sess)
	return n, err
}

func (s *Stream) reserveCreditLocked(want int, out *eventBuf) (int, error) {
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
				s.droppedLocked(want, out)
				return 0, errDropped
			}
		}
		if avail > 0 {
			return s.takeCreditLocked(uint64(want), avail, out)
		}
		if s.overload == FailFast {
			return 0, ErrWouldBlock
		}
		s.waitCreditLocked(out)
	}
}

// takeCreditLocked takes up to want bytes of the avail credit there is,
// at most one frame's worth, and counts them sent.
func (s *Stream) takeCreditLocked(want, avail uint64, out *eventBuf) (int, error) {
	n := min(want, avail, s.sess.peerMaxFrame.Load())
	if s.sendCodec() != codec.None { // a frame is one block
		n = min(n, uint64(s.sess.compress.pool.MaxBlock()))
	}
	if err := s.send.OnSent(n); err != nil {
		return 0, err
	}
	s.stats.BytesSent += n
	lag := s.lagLocked()
	s.stats.PeakConsumerLag = max(s.stats.PeakConsumerLag, lag)
	s.sess.stats.bytesSent.Add(n)
	if s.obs.stalled() || s.sess.thresholds {
		now := s.sess.cfg.Now()
		s.endCreditStallLocked(now, true, out)
		s.checkLevelLocked(MetricLag, lag, now, out)
	}
	return int(n), nil
}

// waitCreditLocked waits, as a stall for credit, until credit may have
// arrived, the write deadline passed or the session ended; it releases
// s.mu while it waits (and emits out), and holds it again on return.
func (s *Stream) waitCreditLocked(out *eventBuf) {
	s.startCreditStallLocked(s.sess.cfg.Now(), out)
	s.blockLocked()
	ready := readyChan(&s.writeReady)
	s.mu.Unlock()
	out.emit(s.sess)
	s.flushControl()
	select {
	case <-ready:
	case <-s.writeDeadline.wait():
	case <-s.sess.done:
	}
	s.mu.Lock()
}

// wakeWriter wakes a Write waiting for credit.
func (s *Stream) wakeWriter() { signalReady(&s.writeReady) }

// wakeReader wakes a Read waiting for data.
func (s *Stream) wakeReader() {
	signalReady(&s.readReady)
	if dr := s.direct.Load(); dr != nil {
		signal(dr.wake)
	}
}

// blockLocked queues BLOCKED for a writer out of credit, once per limit.
func (s *Stream) blockLocked() {
	if limit, send := s.send.Blocked(); send {
		s.pendBlocked, s.blockedLimit = true, limit
	}
}

// writeErrLocked says why nothing more may be written, or nil.
func (s *Stream) writeErrLocked() error { return s.sendErrLocked(true) }

// sendErrLocked is writeErrLocked, except that without closed it lets
// CloseWrite pass (LatestWins's flusher delivers the pending message
// before the direction ends; latest.go): then only a lane no longer open
// is ErrClosed.
func (s *Stream) sendErrLocked(closed bool) error {
	switch {
	case s.lc.peerStopped:
		return s.peerStopError()
	case s.lc.send == sendResetQueued || s.lc.send == sendResetSent:
		return &StreamError{StreamID: s.id, Code: s.localReset}
	case closed && s.writeClosed, !closed && s.lc.laneSend != laneOpen:
		return ErrClosed
	case s.sess.isClosed():
		return s.sess.err()
	}
	return nil
}

// writeData sends one DATA frame, compressed if the stream is and that
// pays. Credit for p is already taken.
func (s *Stream) writeData(p []byte) error { return s.writeDataChecked(p, s.writeErrLocked) }

// writeDataChecked is writeData, with check (called under mu) saying
// whether the frame may still be written.
func (s *Stream) writeDataChecked(p []byte, check func() error) error {
	c := s.sendCodec()
	f := s.encode(c, p) // outside laneMu: control frames need not wait for it
	s.laneMu.Lock()
	s.mu.Lock()
	err := check()
	s.laneWriting = err == nil
	start := s.sess.cfg.Now()
	if err == nil {
		s.observing().laneWriteStart = start
	}
	s.mu.Unlock()
	if err == nil {
		s.setLaneDeadline(laneDeadlineFor(s.writeDeadline.when()))
		buf := s.sess.dataHead()
		h := framing.AppendHeader(buf[:0], framing.Header{Type: framing.TypeData, Flags: f.flags, StreamID: s.id, Length: uint64(len(f.payload))})
		k := min(len(f.payload), dataHeadSize-len(h)) // the header never goes alone
		if _, err = s.lane.Write(append(h, f.payload[:k]...)); err == nil && k < len(f.payload) {
			_, err = s.lane.Write(f.payload[k:])
		}
		s.sess.putDataHead(buf)
		var out eventBuf
		s.mu.Lock()
		s.laneWriting = false
		s.endTransportStallLocked(start, s.sess.cfg.Now(), &out)
		if err == nil {
			s.sentFrameLocked(c, &f)
		}
		s.mu.Unlock()
		out.emit(s.sess)
		if err != nil {
			err = s.dataWriteFailed(err)
		}
	}
	f.release(s.sess)
	s.laneMu.Unlock()
	s.flushControl()
	return err
}

// dataWriteFailed handles a DATA write that failed part way. The frame may
// be cut short, so the lane cannot carry another frame: unless the lane or
// the session already ended, the stream is aborted.
func (s *Stream) dataWriteFailed(err error) error {
	s.mu.Lock()
	aborted, code, closed := s.lc.laneSend == laneAborted && s.lc.send == sendResetSent, s.localReset, s.closedByApp
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
	if s.lc.laneSend != laneOpen {
		s.mu.Unlock()
		return
	}
	reset := !s.lc.sendEnded()
	if reset {
		s.localReset = code
	}
	s.closeReadLocked(code)
	s.writeClosed = true
	s.lc.abort()
	s.pendUpdate, s.pendBlocked = false, false
	s.wakeWaitConsumedLocked()
	s.mu.Unlock()
	s.lane.CancelWrite(uint64(code))
	s.lane.CancelRead(uint64(code))
	if reset {
		s.emitLifecycle(EventStreamReset, uint64(code), false)
	}
	s.wakeReader()
	s.wakeWriter()
	s.maybeRemove()
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
	if s.lc.onLaneStopped() {
		s.peerStop = code
	}
	s.pendUpdate, s.pendBlocked = false, false
	s.wakeWaitConsumedLocked()
	s.mu.Unlock()
	s.wakeWriter()
	s.maybeRemove()
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
	if s.lc.laneSend != laneOpen {
		return false
	}
	return s.pendUpdate || s.pendBlocked || s.lc.owesFrames()
}

// writeControl writes the frames the stream owes, and the lane's FIN once
// the lifecycle allows it; the caller holds laneMu.
func (s *Stream) writeControl() {
	now := s.sess.cfg.Now()
	var out eventBuf
	buf := s.sess.frameBuf()
	defer s.sess.putFrameBuf(buf)
	s.mu.Lock()
	b := buf[:0]
	if s.lc.laneSend != laneOpen {
		s.pendUpdate, s.pendBlocked = false, false
		s.mu.Unlock()
		return
	}
	if (s.pendUpdate || s.lc.finalUpdateOwed) && s.recv != nil && s.lc.mayUpdate() &&
		(s.recv.Limit() > s.sentLimit || s.recv.Consumed() > s.sentConsumed) { // never a useless update
		s.sentLimit, s.sentConsumed = s.recv.Limit(), s.recv.Consumed()
		var flags framing.Flags
		if s.recv.BudgetLimited() && s.sess.peerBudgetSignal.Load() {
			flags = framing.FlagBudgetLimited
		}
		b = appendControl(b, framing.Header{Type: framing.TypeWindowUpdate, Flags: flags, StreamID: s.id}, s.sentLimit, s.sentConsumed, 0)
		s.stats.UpdatesSent++
		s.sess.stats.updatesSent.Add(1)
		if o := s.obs; o != nil && !o.updateDueAt.IsZero() {
			d := now.Sub(o.updateDueAt)
			s.stats.histograms().updateDelay.Observe(d)
			s.sess.updateDelayed(d)
			o.updateDueAt = time.Time{}
		}
		if s.sess.hooked {
			s.eventInto(&out, EventGrant, now)
		}
	}
	s.pendUpdate, s.lc.finalUpdateOwed = false, false
	if s.pendBlocked && s.lc.writable() {
		b = appendControl(b, framing.Header{Type: framing.TypeBlocked, StreamID: s.id}, s.blockedLimit, 0, 0)
		s.stats.BlockedSent++
	}
	s.pendBlocked = false
	if s.lc.stopOwed {
		b = appendControl(b, framing.Header{Type: framing.TypeStopSending, StreamID: s.id}, 0, 0, s.localStop)
		s.lc.stopOwed = false
	}
	switch s.lc.send {
	case sendResetQueued:
		b = appendControl(b, framing.Header{Type: framing.TypeReset, StreamID: s.id}, 0, 0, s.localReset)
		s.wakeWaitConsumedLocked()
	case sendFinQueued:
		b = framing.AppendDataHeader(b, s.id, 0, true)
	}
	s.lc.sendWritten()
	// The lane's FIN follows these frames; the state says so once they
	// are written (laneMu keeps any other writer out meanwhile).
	closeLane := s.lc.shouldFinishLane()
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
		s.mu.Lock()
		finish := s.lc.laneSend == laneOpen // unless aborted meanwhile
		if finish {
			s.lc.laneSend = laneFinished
		}
		s.mu.Unlock()
		if finish {
			s.lane.CloseWrite()
			s.maybeRemove()
		}
	}
	out.emit(s.sess)
}

// appendControl appends one of a stream's control frames: header h with
// the fields that frame type has. It is out of line so that the Frame it
// encodes is not in the frame of writeControl, which the lane reader
// calls (see laneReader).
//
//go:noinline
func appendControl(b []byte, h framing.Header, offset, consumed uint64, code framing.ErrorCode) []byte {
	return appendFrame(b, &framing.Frame{Header: h, Offset: offset, Consumed: consumed, ErrorCode: code})
}

func appendFrame(b []byte, f *framing.Frame) []byte {
	b, err := framing.AppendFrame(b, f)
	if err != nil {
		panic(fmt.Sprintf("mux: encoding %v: %v", f.Type, err)) // values are ours and in range
	}
	return b
}
