package mux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
)

// This file is the stream's receiving direction as the lane reader sees
// it: the lane reader owns the lane's receiving half and applies every
// frame the peer sends on it. The application's side, Read, is in
// stream_consume.go; the direct path between the two in stream_direct.go.

// laneReader is the body of the stream's lane-reader goroutine: it owns
// the receiving half of the lane and ends when the peer closes it or the
// session ends. first is the frame header the session already read when
// the peer opened the lane. The caller has done sess.wg.Add(1).
//
// An idle stream's reader waits here, at the top of its goroutine, with a
// shallow Peek: waiting deeper (inside framing.ReadHeader, under the frame
// loop) doubles every idle reader's stack from 2 KiB to 4 KiB. For the
// same reason a frame never takes the reader much deeper than that wait
// does, so that its stack stays at 2 KiB (the GC never shrinks it back,
// as the wait alone uses more than a quarter of 4 KiB): DATA payloads are
// read here, not beneath readFrames; the frames this side owes after
// BLOCKED or STOP_SENDING are written from here (readFlush); and the
// frame handlers keep their frames small, with their cold paths
// (protocol errors, events, the small-frame pacer's wait) out of line.
// The bench's idle-streams case measures the stack (StackInuse).
func (s *Stream) laneReader(br *bufio.Reader, first *framing.Header) {
	defer s.sess.wg.Done()
	s.rd.opening = first != nil // the opener's first frame may be an empty DATA
	var d dataFill              // a DATA payload readFrames left to read here
	for {
		if first == nil && br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				s.laneReadEnded(err)
				return
			}
		}
		s.sess.markHeard()
		next := s.readFrames(br, first, &d)
		first = nil
		switch next {
		case readEnded:
			return
		case readFlush: // the frame just read owes the peer frames of ours
			s.flushControl()
		case readPace: // a small DATA frame waits for the session's rate
			if err := s.sess.paceWait(d.wait); err != nil {
				s.laneReadEnded(err)
				return
			}
			first = &d.held
		case readFill:
			if !s.fillData(br, &d) {
				return
			}
		}
	}
}

// fillData reads the payload of the DATA frame dataBegin began into the
// place d says, and commits it: true to go on, false if the lane or the
// session ended.
func (s *Stream) fillData(br *bufio.Reader, d *dataFill) bool {
	for {
		if d.direct {
			if done, ok := s.fillDirect(br, d); done {
				return ok
			}
		}
		if err := s.fillRing(br, d); err != nil || !d.direct {
			return s.endFill(d, err)
		}
	}
}

// endFill ends the DATA frame fillData read (err says why not all of it):
// true to go on, false if the lane or the session ended.
func (s *Stream) endFill(d *dataFill, err error) bool {
	if err := s.dataEnd(d, midFrame(err)); err != nil {
		s.laneReadEnded(err)
		return false
	}
	s.rd.opening = false
	*d = dataFill{}
	return true
}

// readNext is what readFrames leaves laneReader to do.
type readNext uint8

const (
	readMore  readNext = iota // wait for the lane's next bytes
	readFill                  // read the DATA payload dataBegin made room for, then go on
	readFlush                 // write what the frame just read owes the peer, then go on
	readPace                  // wait d.wait for the small-frame rate, then handle d.held
	readEnded                 // the lane or the session ended
)

// readFrames handles frames until the lane's read buffer is empty at a
// frame boundary (readMore), a frame leaves laneReader work to do
// (readFill, with d filled in; readFlush), or the lane or the session
// ends (readEnded).
func (s *Stream) readFrames(br *bufio.Reader, first *framing.Header, d *dataFill) readNext {
	for {
		var h framing.Header
		var err error
		switch {
		case first != nil:
			h, first = *first, nil
		case br.Buffered() == 0:
			return readMore
		default:
			if h, err = framing.ReadHeader(br); err != nil {
				s.laneReadEnded(err)
				return readEnded
			}
		}
		// Frames of unknown type are skipped whatever their Flags and
		// Stream ID say (SPEC.md 3.5).
		if h.Type.Known() && (h.StreamID != s.id || !h.Type.IsStreamFrame()) {
			s.wrongLane(h)
			return readEnded
		}
		if h.Type != framing.TypeData {
			if !s.readControl(br, h) {
				return readEnded
			}
			if s.rd.flush {
				s.rd.flush = false
				return readFlush
			}
			continue
		}
		if d.paced {
			d.paced = false
		} else if h.Flags&(framing.FlagCompressed|framing.FlagFIN) == 0 && h.Length > 0 && h.Length < SmallFrameBytes {
			// A plain small frame waits for the small-frame rate in
			// laneReader, not beneath this frame (see laneReader).
			if wait := s.sess.smallFrameWait(); wait > 0 {
				d.held, d.wait, d.paced = h, wait, true
				return readPace
			}
		}
		ch, err := s.dataBegin(br, h, s.rd.opening, d)
		switch {
		case err != nil:
		case d.skip > 0:
			if _, err = br.Discard(d.skip); err != nil {
				err = midFrame(err)
			}
		case ch.codec != codec.None && ch.decoded > 0:
			err = s.dataEnd(d, s.fillDecoded(br, ch, d.n))
		case d.n > 0:
			// The payload is read by laneReader, with only its frame above
			// the read (see laneReader).
			return readFill
		}
		if err != nil {
			s.laneReadEnded(err)
			return readEnded
		}
		s.rd.opening = false
		*d = dataFill{}
	}
}

// readControl reads and applies a control frame (or one of unknown type)
// with header h: true to go on, false if the lane or session ended.
func (s *Stream) readControl(br *bufio.Reader, h framing.Header) bool {
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
		return s.sess.useless() == nil
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
	return true
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

// dataFill is what readFrames leaves the lane reader to do with a DATA
// frame: read its payload of n bytes into the free region of the
// stream's buffer (fillRegion; decoding them first if it is compressed)
// or discard skip bytes of it, as dataBegin says; or wait for the
// small-frame rate before handling the frame whose header is held. It is
// small because laneReader holds it in the frame it parks in.
type dataFill struct {
	n, skip int
	got     int // payload bytes already in the buffer a Read lent
	fin     bool
	direct  bool           // the payload goes first into that buffer (stream_direct.go)
	paced   bool           // held has waited its turn
	held    framing.Header // the frame that waits
	wait    time.Duration  // how long
}

// fillRegion returns the free region of the stream's buffer where bytes
// off to off+k of the payload go (all or the first part of it, see
// ring.free), which dataBegin made room for and which stays the lane
// reader's while s.filling is set.
func (s *Stream) fillRegion(off, k int) (p1, p2 []byte) {
	s.mu.Lock()
	p1, p2 = s.buf.free(off, k)
	s.mu.Unlock()
	return p1, p2
}

// dataBegin receives one DATA frame up to its payload: it checks the
// frame against the granted credit and makes room for the payload in the
// stream's buffer. It says in d what is left to do with the payload, and
// in ch how it is compressed if it is; once the lane reader has read it
// into the buffer, dataEnd commits it.
func (s *Stream) dataBegin(br *bufio.Reader, h framing.Header, opening bool, d *dataFill) (ch compressedHeader, _ error) {
	d.fin = h.Flags&framing.FlagFIN != 0
	if h.Length > s.sess.cfg.MaxFramePayload {
		return ch, s.dataTooLarge(h.Length)
	}
	// n is the application bytes the frame carries, which flow control
	// counts, and wire what is left of it to read from the lane.
	n, wire := int(h.Length), int(h.Length)
	if h.Flags&framing.FlagCompressed != 0 {
		var err error
		if ch, err = s.readCompressedPrefix(br, h, opening); err != nil {
			return ch, err
		}
		n, wire = ch.decoded, ch.block
	}
	if ch.codec != codec.None && n > 0 && n < SmallFrameBytes && !d.fin { // readFrames paces the others
		if err := s.sess.paceSmallFrame(); err != nil {
			return ch, err
		}
	}
	s.mu.Lock()
	if err := s.lc.onPeerData(); err != nil {
		s.mu.Unlock()
		return ch, s.streamErr(framing.ProtocolError, err)
	}
	if s.recv == nil {
		s.mu.Unlock()
		return ch, s.streamErr(framing.ProtocolError, errDataFinished)
	}
	if err := s.recv.OnData(uint64(n)); err != nil {
		s.mu.Unlock()
		return ch, s.streamErr(framing.FlowControlError, err)
	}
	s.stats.BytesReceived += uint64(n)
	s.sess.stats.bytesReceived.Add(uint64(n))
	s.receivedFrameLocked(h, ch)
	s.answeredLocked()
	if n == 0 && !d.fin && !opening {
		s.mu.Unlock()
		if err := s.sess.useless(); err != nil {
			return ch, err
		}
		s.mu.Lock()
	}
	if s.readClosed {
		// Nobody will read it: count it, return its credit silently, drop it.
		s.recv.OnConsumed(uint64(n), s.sess.cfg.Now())
		s.pendUpdate = false
		if d.fin {
			s.lc.onPeerFin()
		}
		s.mu.Unlock()
		d.skip = wire
		return ch, nil
	}
	if n == 0 {
		if d.fin {
			s.lc.onPeerFin()
		}
		s.mu.Unlock()
		if d.fin {
			s.wakeReader()
			s.flushControl()
		}
		return ch, nil
	}
	d.n = n
	s.filling = true
	if d.direct = ch.codec == codec.None && s.claimLocked(); !d.direct {
		s.makeRoomLocked(n)
	}
	s.mu.Unlock()
	return ch, nil
}

// makeRoomLocked grows the stream's buffer, if need be, so that n more
// bytes fit.
func (s *Stream) makeRoomLocked(n int) {
	if need := s.buf.len() + n; need > s.buf.cap() {
		limit := int(max(s.recv.Window(), s.recv.BufferSize()))
		s.buf.grow(s.buf.nextCap(need, limit))
		s.recv.SetBufferCap(uint64(s.buf.cap()))
	}
}

// dataEnd commits the payload of the DATA frame dataBegin began, which
// the lane reader has read into the buffer (fillRegion) unless err says
// why not, and wakes the application's Read.
func (s *Stream) dataEnd(d *dataFill, err error) error {
	n := d.n
	s.mu.Lock()
	s.filling = false
	if s.removed && s.recv != nil { // retired while we filled: release here
		s.buf.drop()
		s.sess.closeReceiver(s.recv)
		s.recv = nil
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		s.mu.Unlock()
		return err
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
	if d.fin {
		s.lc.onPeerFin()
	}
	var out eventBuf
	if s.sess.thresholds && s.recv != nil {
		s.checkLevelLocked(MetricUnread, s.recv.Buffered(), now, &out)
	}
	s.mu.Unlock()
	out.emit(s.sess)
	s.wakeReader()
	if d.fin {
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
			return s.badUpdate(f)
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
			ev := s.eventInto(&out, EventCredit, now)
			ev.Consumed = f.Consumed
		}
		if consumedGrew && s.sess.thresholds {
			s.checkLevelLocked(MetricLag, s.lagLocked(), now, &out)
		}
		s.mu.Unlock()
		s.wakeWriter()
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
			e := s.eventInto(&out, EventPeerBlocked, now)
			e.Limit = f.Offset
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
		s.rd.flush = true
	case framing.TypeReset:
		if err := s.lc.onPeerReset(); err != nil {
			s.mu.Unlock()
			return s.streamErr(framing.ProtocolError, err)
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
		s.wakeWriter()
		s.rd.flush = true
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
	s.wakeReader()
	s.wakeWriter()
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

// The protocol errors the frame handlers return are made out of line, so
// that fmt.Errorf's arguments are not in the handlers' frames (see
// laneReader).

// errDataFinished is DATA that arrived after the stream was finished.
var errDataFinished = errors.New("DATA on a finished stream")

// streamErr closes the session with a protocol error of code: err, on
// this stream.
//
//go:noinline
func (s *Stream) streamErr(code framing.ErrorCode, err error) error {
	return s.sess.protocolErr(code, fmt.Errorf("stream %d: %w", s.id, err))
}

// dataTooLarge closes the session for a DATA frame of length bytes,
// over SETTINGS_MAX_FRAME_PAYLOAD.
//
//go:noinline
func (s *Stream) dataTooLarge(length uint64) error {
	return s.sess.protocolErr(framing.FrameSizeError, fmt.Errorf("stream %d: DATA of %d bytes exceeds SETTINGS_MAX_FRAME_PAYLOAD %d", s.id, length, s.sess.cfg.MaxFramePayload))
}

// badUpdate closes the session for a WINDOW_UPDATE f that reports more
// consumed than its limit or than was sent. The caller holds s.mu.
//
//go:noinline
func (s *Stream) badUpdate(f *framing.Frame) error {
	return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: WINDOW_UPDATE reports %d consumed of %d sent (limit %d)", s.id, f.Consumed, s.send.Sent(), f.Offset))
}

// wrongLane closes the session for a frame h of another stream, or of the
// session, on this stream's lane.
//
//go:noinline
func (s *Stream) wrongLane(h framing.Header) {
	s.sess.protocolError(framing.ProtocolError, fmt.Errorf("%v for stream %d on the lane of stream %d", h.Type, h.StreamID, s.id))
}

// midFrame reports a lane that ended inside a frame's payload.
func midFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
