package mux

import (
	"errors"
	"os"
)

// LatestWins: the "latest wins" answer to overload (see Overload).
//
// Each Write is a message. Write never waits for credit:
//
//   - With nothing pending and credit for the whole message, Write sends
//     it itself, as a Drop-mode Write does.
//   - Otherwise the message becomes the stream's pending message (Write
//     copies it), replacing the one already pending, which is counted in
//     StreamStats.Replaced and BytesReplaced and reported as
//     EventReplaced. Write returns len(p), nil.
//
// A flusher, a goroutine of the stream's own, sends the pending message
// once the credit covers it. It is started by the Write that leaves a
// message pending and ends when nothing is pending, so there is at most
// one per stream, and none on an idle stream; the session's Close waits
// for it. The flusher, not the lane reader that receives the
// WINDOW_UPDATE, writes the message on the lane, and never while holding
// the stream's mu.
//
// At most one message is pending: latest wins means only the newest value
// is worth sending once the window opens, so a deeper queue would only
// deliver stale values first and hold more memory. The memory is bounded
// by one copy of the newest message, plus the message being written.
//
// A message larger than the peer's window (the credit the peer's latest
// WINDOW_UPDATE, or its SETTINGS, granted beyond what its application had
// consumed) can never be covered whole. The flusher starts on it as soon
// as there is any credit, and sends it in frames as credit allows, as a
// Block Write would; the peer receives it whole and in order, so the
// application's message boundaries hold. A message so begun is no longer
// pending: newer ones wait behind it, the newest winning. To keep
// latest-wins semantics for every message, keep messages within the
// window (Config.InitialWindow) or raise the window.
//
// The write deadline bounds the wait: once it passes, the pending message
// is discarded (counted in Drops and BytesDropped, and reported as
// EventDropped), as is the unsent rest of a large message begun; Write
// returns os.ErrDeadlineExceeded as in every mode.
//
// CloseWrite delivers the pending message: it waits until the flusher has
// sent it (or the deadline passed, or the stream or session ended), then
// ends the direction. Close discards it (counted as dropped) and returns
// at once, as it ends pending Writes: the last value of a real-time
// stream is stale by the time it is closed; call CloseWrite first to
// deliver it. Reset, the peer's STOP_SENDING and the session's end abandon
// it uncounted, like any unsent data.
//
// SetOverload takes effect at the next Write: a Write in another mode
// waits until the pending message is sent or discarded, and a LatestWins
// Write waits behind a Write in another mode still in progress.

// latestState is a LatestWins stream's sending state, guarded by s.mu.
type latestState struct {
	// pending is the newest message waiting for credit: a copy owned by
	// the stream, nil when none.
	pending []byte
	// sending says a LatestWins sender holds the send turn, and with it
	// writeMu (taken just after it): a Write sending a message the credit
	// covers, or the flusher. Writes that find it set leave their message
	// pending instead of waiting.
	sending bool
}

// errLatestClosed ends the flusher's wait when Close discards the pending
// message.
var errLatestClosed = errors.New("closed")

func (s *Stream) overloadMode() Overload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overload
}

// writeLatest is Write in LatestWins mode.
func (s *Stream) writeLatest(p []byte) (int, error) {
	if len(p) == 0 { // no message: nothing to wait for
		return 0, nil
	}
	var out eventBuf
	s.mu.Lock()
	if err := s.writeCheckLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	if s.latest.sending { // the sender sends it, or a newer message
		s.keepLatestLocked(p, &out)
		s.mu.Unlock()
		out.emit(s.sess)
		return len(p), nil
	}
	s.latest.sending = true
	s.mu.Unlock()
	// The turn is ours, so writeMu is held, if at all, only by a Write in
	// another mode or by CloseWrite: no wait for credit on our account.
	s.writeMu.Lock()
	s.mu.Lock()
	err := s.writeCheckLocked()
	switch {
	case err != nil:
		s.discardLatestLocked(true, &out) // left by Writes while we waited
		s.latest.sending = false
		s.mu.Unlock()
		s.writeMu.Unlock()
		out.emit(s.sess)
		return 0, err
	case s.latest.pending != nil: // Writes after ours left a newer message
		s.replacedLocked(len(p), &out)
		s.mu.Unlock()
		out.emit(s.sess)
		s.startFlusher()
		return len(p), nil
	case uint64(len(p)) > s.send.Available():
		s.keepLatestLocked(p, &out)
		s.mu.Unlock()
		out.emit(s.sess)
		s.startFlusher()
		return len(p), nil
	}
	s.mu.Unlock()
	out.emit(s.sess)
	err = s.sendLatest(p)
	if err != nil && !discarded(err) { // the stream or the session ended
		s.mu.Lock()
		s.discardLatestLocked(false, &out)
		s.latest.sending = false
		s.mu.Unlock()
		s.writeMu.Unlock()
		out.emit(s.sess)
		return 0, err
	}
	// Messages left while it was written go to a flusher (which discards
	// them too if the deadline passed or Close came).
	s.mu.Lock()
	more := s.latest.pending != nil
	if !more {
		s.latest.sending = false
	}
	s.mu.Unlock()
	if more {
		s.startFlusher()
	} else {
		s.writeMu.Unlock()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, err
	}
	return len(p), nil
}

// discarded says whether err of sendLatest discarded the message, counted
// as dropped, with the stream still writable: its deadline passed or
// Close came.
func discarded(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errLatestClosed)
}

// writeCheckLocked says why a Write may not begin, or nil.
func (s *Stream) writeCheckLocked() error {
	if s.writeDeadline.expired() {
		return os.ErrDeadlineExceeded
	}
	return s.writeErrLocked()
}

// keepLatestLocked makes a copy of p the pending message, replacing the
// one pending, if any.
func (s *Stream) keepLatestLocked(p []byte, out *eventBuf) {
	if old := s.latest.pending; old != nil {
		s.replacedLocked(len(old), out)
		s.latest.pending = append(old[:0], p...)
		return
	}
	s.latest.pending = append([]byte(nil), p...)
}

// replacedLocked counts a message of n bytes replaced unsent.
func (s *Stream) replacedLocked(n int, out *eventBuf) {
	s.stats.Replaced++
	s.stats.BytesReplaced += uint64(n)
	if s.sess.hooked {
		ev := s.eventInto(out, EventReplaced, s.sess.cfg.Now())
		ev.Dropped = uint64(n)
	}
}

// droppedLocked counts n bytes of a message discarded unsent.
func (s *Stream) droppedLocked(n int, out *eventBuf) {
	s.stats.Drops++
	s.stats.BytesDropped += uint64(n)
	if s.sess.hooked {
		ev := s.eventInto(out, EventDropped, s.sess.cfg.Now())
		ev.Dropped = uint64(n)
	}
}

// discardLatestLocked discards the pending message, counting it as
// dropped if counted.
func (s *Stream) discardLatestLocked(counted bool, out *eventBuf) {
	if s.latest.pending != nil && counted {
		s.droppedLocked(len(s.latest.pending), out)
	}
	s.latest.pending = nil
}

// startFlusher hands the send turn and writeMu, which the caller holds,
// to a new flusher goroutine. The caller holds no other lock.
func (s *Stream) startFlusher() {
	sess := s.sess
	sess.mu.Lock()
	open := !sess.isClosed()
	if open { // counted under mu with the session open (see waitGoroutines)
		sess.wg.Add(1)
	}
	sess.mu.Unlock()
	if open {
		go s.flushLatest()
		return
	}
	s.mu.Lock()
	s.latest.pending = nil // abandoned with the session
	s.latest.sending = false
	s.mu.Unlock()
	s.writeMu.Unlock()
}

// flushLatest is the flusher's body: it sends the pending message until
// none is left, then gives up the turn and writeMu and ends.
func (s *Stream) flushLatest() {
	defer s.sess.wg.Done()
	for {
		var out eventBuf
		s.mu.Lock()
		msg := s.awaitLatestLocked(&out)
		if msg == nil {
			s.discardLatestLocked(false, &out) // the stream or the session ended
			s.latest.sending = false
			s.mu.Unlock()
			s.writeMu.Unlock()
			out.emit(s.sess)
			return
		}
		s.mu.Unlock()
		out.emit(s.sess)
		// An error ended the message; what it means for the next one,
		// awaitLatestLocked sees.
		_ = s.sendLatest(msg)
	}
}

// awaitLatestLocked waits until the pending message may go, and takes it:
// when the credit covers it, or, for a message larger than the peer's
// window, when there is any credit. The message stays pending while it
// waits, so a newer one replaces it. It returns nil when nothing is
// pending, or when the stream or the session ended; past the write
// deadline, or after Close, the pending message is discarded, counted as
// dropped.
func (s *Stream) awaitLatestLocked(out *eventBuf) []byte {
	for {
		msg := s.latest.pending
		if msg == nil {
			return nil
		}
		if s.latestErrLocked() != nil {
			s.endCreditStallLocked(s.sess.cfg.Now(), false, out)
			return nil
		}
		if s.closedByApp || s.writeDeadline.expired() {
			s.endCreditStallLocked(s.sess.cfg.Now(), false, out)
			s.discardLatestLocked(true, out)
			continue
		}
		avail := s.send.Available()
		if avail > 0 && (avail >= uint64(len(msg)) || s.largeLocked(len(msg))) {
			s.latest.pending = nil
			return msg
		}
		s.waitCreditLocked(out)
	}
}

// largeLocked says whether a message of n bytes is larger than the peer's
// window: the credit its latest WINDOW_UPDATE (or its SETTINGS) granted
// beyond what its application had consumed. No credit the peer gives
// without its window growing can cover it whole.
func (s *Stream) largeLocked(n int) bool {
	return uint64(n) > s.send.Max()-s.peerConsumed
}

// sendLatest writes msg, a message taken from pending (or a Write's, with
// the credit for it); the caller holds the send turn and writeMu. A
// message larger than the peer's window waits for credit for its rest as
// a Block Write would; if the deadline passes or Close comes first, the
// unsent rest is counted as dropped.
func (s *Stream) sendLatest(msg []byte) error {
	sent := 0
	for sent < len(msg) {
		var out eventBuf
		s.mu.Lock()
		n, err := s.reserveLatestLocked(len(msg)-sent, &out)
		if err != nil {
			s.endCreditStallLocked(s.sess.cfg.Now(), false, &out)
			if discarded(err) {
				s.droppedLocked(len(msg)-sent, &out)
			}
		}
		s.mu.Unlock()
		out.emit(s.sess)
		if err != nil {
			return err
		}
		if err := s.writeDataChecked(msg[sent:sent+n], s.latestErrLocked); err != nil {
			return err
		}
		sent += n
	}
	return nil
}

// reserveLatestLocked waits for credit and takes up to want bytes of it,
// at most a frame's worth.
func (s *Stream) reserveLatestLocked(want int, out *eventBuf) (int, error) {
	for {
		if err := s.latestErrLocked(); err != nil {
			return 0, err
		}
		if s.closedByApp {
			return 0, errLatestClosed
		}
		if s.writeDeadline.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if avail := s.send.Available(); avail > 0 {
			return s.takeCreditLocked(uint64(want), avail, out)
		}
		s.waitCreditLocked(out)
	}
}

// latestErrLocked says why a LatestWins message may no longer be sent,
// or nil. Unlike writeErrLocked it lets CloseWrite pass: CloseWrite waits
// for the turn (writeMu), so the message is delivered before the
// direction ends.
func (s *Stream) latestErrLocked() error { return s.sendErrLocked(false) }
