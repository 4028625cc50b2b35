package mux

import (
	"io"
	"os"
	"time"

	"github.com/bpmux/bp/window"
)

// This file is the receiving direction as the application sees it: Read,
// and the accounting of what it consumes, which returns credit to the
// peer. The lane reader that fills the stream's buffer is in
// stream_read.go.

// Read reads data the peer sent. Each byte read returns credit to the peer.
// It returns io.EOF after the peer's CloseWrite and all data are read.
func (s *Stream) Read(p []byte) (int, error) {
	lent := false // p is lent to the lane reader (stream_direct.go)
	for {
		expired := s.readDeadline.expired()
		s.mu.Lock()
		if lent {
			n, wait, interrupted := s.reclaimLocked(expired || s.readClosed || s.sess.isClosed())
			if wait { // the lane reader is reading into p
				s.mu.Unlock()
				s.waitRead(s.direct.Load().wake, interrupted)
				continue
			}
			lent = false
			if n > 0 && !s.readClosed { // closed meanwhile: dropped, as the ring's would be
				s.mu.Unlock()
				s.flushControl()
				return n, nil
			}
		}
		if expired {
			s.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
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
		var ready chan struct{}
		if err == nil && len(p) > 0 {
			if ready = s.lendLocked(p); ready != nil {
				lent = true
			} else {
				ready = readyChan(&s.readReady) // made under s.mu: see readyChan
			}
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
		s.waitRead(ready, false)
	}
}

// waitRead waits for ready, the read deadline or the session's end; only
// for ready if the Read cut its lent buffer's read short, which ends at
// once.
func (s *Stream) waitRead(ready chan struct{}, interrupted bool) {
	if interrupted {
		<-ready
		return
	}
	select {
	case <-ready:
	case <-s.readDeadline.wait():
	case <-s.sess.done:
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
	s.consumedLocked(n, out)
	return n
}

// consumedLocked counts n bytes the application read, returning credit.
func (s *Stream) consumedLocked(n int, out *eventBuf) {
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
		ev := s.eventInto(out, EventConsumed, now)
		ev.Value = uint64(n)
	}
	s.windowChangedLocked(oldWindow, oldCounts, now, out)
}

// grantedLocked notes a grant the receiver just made: a WINDOW_UPDATE is
// due, and the peer's stall (if this side's reader held it) is over.
func (s *Stream) grantedLocked(now time.Time, out *eventBuf) {
	s.pendUpdate = true
	if o := s.observing(); o.updateDueAt.IsZero() {
		o.updateDueAt = now
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
		s.eventInto(out, EventWindowResized, now)
	}
	if after.Refusals != before.Refusals {
		ev := s.eventInto(out, EventBudgetRefused, now)
		ev.Value = after.Refused
	}
}

// discardLocked throws away unread data, returning its memory. A stall
// the unread data held ends here; nobody will read (its event is not
// reported: the stream's end is).
func (s *Stream) discardLocked() {
	if s.obs.unread() {
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
