package mux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/window"
)

// This file is the stream's receiving direction: Read, and the lane
// reader, which owns the lane's receiving half and applies every frame
// the peer sends on it.

// Read reads data the peer sent. Each byte read returns credit to the peer.
// It returns io.EOF after the peer's CloseWrite and all data are read.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.readDeadline.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		s.mu.Lock()
		if s.buf.len() > 0 && !s.readClosed {
			var out eventBuf
			n := s.consumeLocked(p, &out)
			s.mu.Unlock()
			s.flushControl()
			out.emit(s.sess)
			return n, nil
		}
		err := s.readErrLocked()
		if err == io.EOF {
			s.lc.readEOF() // the final update reports everything consumed
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
	case s.lc.recv == recvResetRecvd:
		return &StreamError{StreamID: s.id, Code: s.peerReset, Remote: true, After: s.peerRetryAfter}
	case s.lc.recv == recvDataRecvd:
		return io.EOF
	case s.sess.isClosed():
		return s.sess.err()
	}
	return nil
}

// consumeLocked copies buffered data into p, returning credit.
func (s *Stream) consumeLocked(p []byte, out *eventBuf) int {
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
	s.sess.obs.consumed.Add(uint64(n))
	s.recv.SetRTT(s.sess.rtt())
	oldWindow, oldCounts := s.recv.Window(), s.recv.Counts()
	_, grant := s.recv.OnConsumed(uint64(n), now)
	if grant {
		s.grantedLocked(now, out)
	}
	if s.sess.thresholds {
		s.checkLevelLocked(MetricUnread, s.recv.Buffered(), now, out)
	}
	if s.sess.hooked {
		ev := s.eventLocked(EventConsumed, now)
		ev.Value = uint64(n)
		out.add(ev)
	}
	s.windowChangedLocked(oldWindow, oldCounts, now, out)
	return n
}

// grantedLocked notes a grant the receiver just made: a WINDOW_UPDATE is
// due, and the peer's stall (if this side's reader held it) is over.
func (s *Stream) grantedLocked(now time.Time, out *eventBuf) {
	s.pendUpdate = true
	if s.updateDueAt.IsZero() {
		s.updateDueAt = now
	}
	s.endUnreadStallLocked(now, out)
}

// windowChangedLocked records what the window policy did since the
// receiver had window oldWindow and counts before: a new size, a refusal
// by the budget.
func (s *Stream) windowChangedLocked(oldWindow uint64, before window.Counts, now time.Time, out *eventBuf) {
	after := s.recv.Counts()
	if after == before && s.recv.Window() == oldWindow {
		return
	}
	s.sess.windowCounted(before, after)
	if !s.sess.hooked {
		return
	}
	if s.recv.Window() != oldWindow {
		out.add(s.eventLocked(EventWindowResized, now))
	}
	if after.Refusals != before.Refusals {
		ev := s.eventLocked(EventBudgetRefused, now)
		ev.Value = after.Refused
		out.add(ev)
	}
}

// discardLocked throws away unread data, returning its memory. A stall
// the unread data held ends here; nobody will read (its event is not
// reported: the stream's end is).
func (s *Stream) discardLocked() {
	if !s.unreadStart.IsZero() {
		var out eventBuf // dropped: the callers report the stream's end instead
		s.endUnreadStallLocked(s.sess.cfg.Now(), &out)
	}
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
		s.sess.markHeard()
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
		// Frames of unknown type are skipped whatever their Flags and
		// Stream ID say (SPEC.md 3.5).
		if h.Type.Known() && (h.StreamID != s.id || !h.Type.IsStreamFrame()) {
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
	case err == io.EOF:
		s.mu.Lock()
		err := s.lc.onLaneFin()
		s.mu.Unlock()
		if err != nil {
			s.sess.protocolError(framing.ProtocolError, fmt.Errorf("stream %d: %w", s.id, err))
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

// laneReadFailed handles a lane whose receiving half was aborted at the
// QUIC level, by the peer or by this side: as if by RESET, and the lane is
// done for reading.
func (s *Stream) laneReadFailed(le *transport.LaneError) {
	s.mu.Lock()
	first := s.lc.onLaneReset()
	refused := first && s.peerResetLocked(framing.ErrorCode(le.Code))
	s.mu.Unlock()
	if first {
		s.emitLifecycle(EventStreamReset, le.Code, le.Remote)
	}
	s.afterPeerReset(refused)
	if first && le.Remote {
		s.sess.uselessIfIdle(s)
	}
}

// onData receives one DATA frame, reading its payload straight into the
// stream's buffer after checking it against the granted credit.
func (s *Stream) onData(br *bufio.Reader, h framing.Header, opening bool) error {
	fin := h.Flags&framing.FlagFIN != 0
	if h.Length > s.sess.cfg.MaxFramePayload {
		return s.sess.protocolErr(framing.FrameSizeError, fmt.Errorf("stream %d: DATA of %d bytes exceeds SETTINGS_MAX_FRAME_PAYLOAD %d", s.id, h.Length, s.sess.cfg.MaxFramePayload))
	}
	// n is the application bytes the frame carries, which flow control
	// counts, and wire what is left of it to read from the lane.
	n, wire := int(h.Length), int(h.Length)
	compressed := h.Flags&framing.FlagCompressed != 0
	var ch compressedHeader
	if compressed {
		var err error
		if ch, err = s.readCompressedPrefix(br, h, opening); err != nil {
			return err
		}
		n, wire = ch.decoded, ch.block
	}
	if n > 0 && n < SmallFrameBytes && !fin {
		if err := s.sess.paceSmallFrame(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if err := s.lc.onPeerData(); err != nil {
		s.mu.Unlock()
		return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: %w", s.id, err))
	}
	if s.recv == nil {
		s.mu.Unlock()
		return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: DATA on a finished stream", s.id))
	}
	if err := s.recv.OnData(uint64(n)); err != nil {
		s.mu.Unlock()
		return s.sess.protocolErr(framing.FlowControlError, fmt.Errorf("stream %d: %w", s.id, err))
	}
	s.stats.BytesReceived += uint64(n)
	s.sess.stats.bytesReceived.Add(uint64(n))
	s.receivedFrameLocked(h, ch)
	s.answeredLocked()
	if n == 0 && !fin && !opening {
		s.mu.Unlock()
		if err := s.sess.useless(); err != nil {
			return err
		}
		s.mu.Lock()
	}
	if s.readClosed {
		// Nobody will read it: count it, return its credit silently, drop it.
		s.recv.OnConsumed(uint64(n), s.sess.cfg.Now())
		s.pendUpdate = false
		if fin {
			s.lc.onPeerFin()
		}
		s.mu.Unlock()
		if _, err := br.Discard(wire); err != nil {
			return midFrame(err)
		}
		return nil
	}
	if n == 0 {
		if fin {
			s.lc.onPeerFin()
		}
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

	var err error
	if compressed {
		err = s.fillDecoded(br, ch, p1, p2)
	} else if _, err = io.ReadFull(br, p1); err == nil && len(p2) > 0 {
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
		if compressed { // fillDecoded said what went wrong
			return err
		}
		return midFrame(err)
	}
	if s.readClosed {
		s.discardLocked()
		s.recv.OnConsumed(uint64(n), s.sess.cfg.Now())
		s.pendUpdate = false
	} else {
		s.buf.commit(n)
	}
	now := s.sess.cfg.Now()
	s.lastActive = now
	if fin {
		s.lc.onPeerFin()
	}
	var out eventBuf
	if s.sess.thresholds && s.recv != nil {
		s.checkLevelLocked(MetricUnread, s.recv.Buffered(), now, &out)
	}
	s.mu.Unlock()
	out.emit(s.sess)
	signal(s.readReady)
	if fin {
		s.flushControl()
	}
	return nil
}

// onControl applies WINDOW_UPDATE, BLOCKED, RESET or STOP_SENDING.
func (s *Stream) onControl(f *framing.Frame) error {
	now := s.sess.cfg.Now()
	var out eventBuf
	s.mu.Lock()
	switch f.Type {
	case framing.TypeWindowUpdate:
		if f.Consumed > f.Offset || f.Consumed > s.send.Sent() {
			s.mu.Unlock()
			return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: WINDOW_UPDATE reports %d consumed of %d sent (limit %d)", s.id, f.Consumed, s.send.Sent(), f.Offset))
		}
		s.stats.UpdatesReceived++
		s.sess.stats.updatesReceived.Add(1)
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
		s.peerBudgetLimited = f.Flags&framing.FlagBudgetLimited != 0
		if grew {
			s.creditLocked(now, s.peerBudgetLimited)
		}
		if grew && s.sess.hooked {
			ev := s.eventLocked(EventCredit, now)
			ev.Consumed = f.Consumed
			out.add(ev)
		}
		if consumedGrew && s.sess.thresholds {
			s.checkLevelLocked(MetricLag, s.lagLocked(), now, &out)
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
		oldWindow, oldCounts := s.recv.Window(), s.recv.Counts()
		unreached := f.Offset > s.recv.Received()
		s.recv.SetRTT(s.sess.rtt())
		_, grant := s.recv.OnBlocked(f.Offset, now)
		if s.sess.hooked {
			e := s.eventLocked(EventPeerBlocked, now)
			e.Limit = f.Offset
			out.add(e)
		}
		if grant {
			s.grantedLocked(now, &out)
		} else {
			s.startUnreadStallLocked(f.Offset, now, &out)
		}
		s.windowChangedLocked(oldWindow, oldCounts, now, &out)
		s.mu.Unlock()
		if unreached {
			if err := s.sess.useless(); err != nil {
				return err
			}
		}
		s.flushControl()
	case framing.TypeReset:
		if err := s.lc.onPeerReset(); err != nil {
			s.mu.Unlock()
			return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: %w", s.id, err))
		}
		s.refusedByPeerLocked(f)
		refused := s.peerResetLocked(f.ErrorCode)
		s.mu.Unlock()
		s.emitLifecycle(EventStreamReset, uint64(f.ErrorCode), true)
		s.afterPeerReset(refused)
		if err := s.sess.uselessIfIdle(s); err != nil {
			return err
		}
	case framing.TypeStopSending:
		first, answer := s.lc.onStopSending()
		if !first { // a peer sends it once: a repeat does no work
			s.mu.Unlock()
			return s.sess.useless()
		}
		s.peerStop = f.ErrorCode
		if answer {
			s.localReset = f.ErrorCode
		}
		s.wakeWaitConsumedLocked()
		s.mu.Unlock()
		signal(s.writeReady)
		s.flushControl()
	default:
		s.mu.Unlock()
	}
	out.emit(s.sess)
	return nil
}

// peerResetLocked applies what follows the peer's reset of its direction
// (by RESET or at the QUIC level), once the lifecycle has recorded it: the
// unread data goes, and a stream not yet accepted is refused. It reports
// whether it was refused.
func (s *Stream) peerResetLocked(code framing.ErrorCode) (refused bool) {
	s.peerReset = code
	refused = s.refuseUnacceptedLocked()
	s.discardLocked()
	return refused
}

// afterPeerReset wakes the stream's callers after peerResetLocked, writes
// what this side owes, and retires the stream if it is gone.
func (s *Stream) afterPeerReset(refused bool) {
	signal(s.readReady)
	signal(s.writeReady)
	s.flushControl()
	if refused {
		s.sess.dequeue(s)
	}
	s.maybeRemove()
}

// refuseUnacceptedLocked refuses a stream the peer reset before the
// application accepted it: it is never handed out (Accept skips it), and
// this side's direction ends with RESET REFUSED_STREAM (SPEC.md 6.2). It
// reports whether it did.
func (s *Stream) refuseUnacceptedLocked() bool {
	if s.accepted || s.refused {
		return false
	}
	s.refused, s.writeClosed, s.readClosed = true, true, true
	if s.lc.reset() {
		s.localReset = framing.RefusedStream
	}
	return true
}

// didWork reports whether the stream carried any data either way: a
// stream that ends without doing so is churn (SPEC.md section 10).
func (s *Stream) didWork() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.BytesReceived > 0 || s.stats.BytesSent > 0
}

// tick runs the stream's periodic housekeeping: idle window shrink and
// releasing the buffer of a stream that has gone quiet.
func (s *Stream) tick(now time.Time, idleFor time.Duration) {
	var out eventBuf
	s.mu.Lock()
	if s.recv != nil {
		oldWindow, oldCounts := s.recv.Window(), s.recv.Counts()
		s.recv.OnTick(now)
		s.windowChangedLocked(oldWindow, oldCounts, now, &out)
		if s.buf.len() == 0 && s.buf.cap() > 0 && !s.filling && now.Sub(s.lastActive) >= idleFor {
			s.buf.drop()
			s.recv.SetBufferCap(0)
		}
	}
	s.observeTickLocked(now, &out)
	s.mu.Unlock()
	out.emit(s.sess)
}

// midFrame reports a lane that ended inside a frame's payload.
func midFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
