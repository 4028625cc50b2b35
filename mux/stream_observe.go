package mux

import (
	"sync"
	"time"
)

// This file is a stream's side of observability: its stalls by reason,
// the signal latency, and its levels against the session's thresholds.
// Everything here runs under s.mu and only collects events into an
// eventBuf, which the caller emits once it holds no lock.

// eventBuf collects a few events under a lock, to emit after it. It is
// two words on the caller's stack: the events go into an array from a
// pool, taken by the first event, so that a stream with no observer
// touches no array and the lane reader's frames hold no Events (its
// stack stays at 2 KiB; see laneReader). It never allocates in steady
// state.
type eventBuf struct {
	evs *[4]Event
	n   int
}

// eventArrays holds the arrays of emitted eventBufs for the next ones.
var eventArrays = sync.Pool{New: func() any { return new([4]Event) }}

// next returns a zeroed place for one more event. Past the fourth, which
// no caller reaches, it is a throwaway.
func (b *eventBuf) next() *Event {
	if b.evs == nil {
		b.evs = eventArrays.Get().(*[4]Event)
	}
	if b.n == len(b.evs) {
		return new(Event)
	}
	ev := &b.evs[b.n]
	b.n++
	*ev = Event{}
	return ev
}

// emit hands the collected events to the session and empties b. The
// caller holds no lock.
func (b *eventBuf) emit(sess *Session) {
	if b.evs != nil {
		b.flush(sess)
	}
}

// flush is emit's work, out of line so that emit's callers stay small.
//
//go:noinline
func (b *eventBuf) flush(sess *Session) {
	for i := range b.n {
		sess.emit(b.evs[i])
	}
	eventArrays.Put(b.evs)
	b.evs, b.n = nil, 0
}

// eventInto adds the stream's event of kind k at now to out and returns
// it, for the caller to fill in. It is out of line so that its callers'
// frames (the lane reader's among them) hold no Event of their own.
//
//go:noinline
func (s *Stream) eventInto(out *eventBuf, k EventKind, now time.Time) *Event {
	ev := out.next()
	s.setEventLocked(ev, k, now)
	return ev
}

// startCreditStallLocked begins a stall for credit, if none is under way.
// Its reason is the session budget when the peer's latest WINDOW_UPDATE
// said its budget limited the window, else the peer's window; the update
// that ends the stall settles it (see creditLocked), so the reason of its
// EventBlocked is provisional and its EventUnblocked's final.
func (s *Stream) startCreditStallLocked(now time.Time, out *eventBuf) {
	if !s.stallStart.IsZero() {
		return
	}
	s.stallStart, s.creditArrived = now, time.Time{}
	s.stallReason = ReasonPeerWindow
	if s.peerBudgetLimited {
		s.stallReason = ReasonSessionBudget
	}
	s.sess.stats.stalls.Add(1)
	if s.sess.hooked {
		ev := s.eventInto(out, EventBlocked, now)
		ev.Reason = s.stallReason
	}
}

// creditLocked settles the reason of the stall under way, if any, when a
// WINDOW_UPDATE brings credit: the session budget if the update says the
// budget limited the window, else the peer's window (its reader was
// slow or stopped, which the peer's own update then says by leaving the
// flag off).
func (s *Stream) creditLocked(now time.Time, budgetLimited bool) {
	if s.stallStart.IsZero() || !s.creditArrived.IsZero() {
		return
	}
	s.creditArrived = now // the writer ends the stall when it resumes
	s.stallReason = ReasonPeerWindow
	if budgetLimited {
		s.stallReason = ReasonSessionBudget
	}
}

// endCreditStallLocked ends the stall for credit under way, if any. The
// writer resumed when resumed is true (it took credit), and the stall's
// signal latency is then observed; otherwise the Write gave up (deadline,
// error, close).
func (s *Stream) endCreditStallLocked(now time.Time, resumed bool, out *eventBuf) {
	if s.stallStart.IsZero() {
		return
	}
	d := now.Sub(s.stallStart)
	var signal time.Duration
	if resumed && !s.creditArrived.IsZero() {
		signal = max(now.Sub(s.creditArrived)+s.sess.rtt()/2, 1)
		s.stats.histograms().signal.Observe(signal)
	}
	s.stallEndedLocked(s.stallReason, d, signal, now, out)
	s.stallStart, s.creditArrived = time.Time{}, time.Time{}
	s.checkLevelLocked(MetricStall, 0, now, out)
}

// stallEndedLocked records a stall of reason r that lasted d, in the
// stream's and the session's stats and as an EventUnblocked.
func (s *Stream) stallEndedLocked(r BlockReason, d, signal time.Duration, now time.Time, out *eventBuf) {
	s.stats.Blocked.add(r, d)
	s.sess.stallEnded(r, d, signal)
	if s.sess.hooked {
		ev := s.eventInto(out, EventUnblocked, now)
		ev.Reason, ev.Duration, ev.Signal = r, d, signal
	}
}

// endTransportStallLocked records a lane write that began at start and
// has just returned: a transport stall if it took long enough.
func (s *Stream) endTransportStallLocked(start, now time.Time, out *eventBuf) {
	s.laneWriteStart, s.transportShown = time.Time{}, false
	d := now.Sub(start)
	if d < TransportStallThreshold {
		return
	}
	s.stallEndedLocked(ReasonTransport, d, 0, now, out)
	s.checkLevelLocked(MetricStall, 0, now, out)
}

// startUnreadStallLocked begins the receiving side's stall: the peer said
// it is blocked at limit, which is all the credit this side granted, and
// what it sent waits unread.
func (s *Stream) startUnreadStallLocked(limit uint64, now time.Time, out *eventBuf) {
	if !s.unreadStart.IsZero() || s.recv == nil || limit != s.recv.Limit() || s.buf.len() == 0 {
		return
	}
	s.unreadStart = now
	if s.sess.hooked {
		ev := s.eventInto(out, EventBlocked, now)
		ev.Reason = ReasonUnread
	}
}

// endUnreadStallLocked ends the receiving side's stall, if one is under
// way: this side granted more credit, or stopped reading.
func (s *Stream) endUnreadStallLocked(now time.Time, out *eventBuf) {
	if s.unreadStart.IsZero() {
		return
	}
	d := now.Sub(s.unreadStart)
	s.unreadStart = time.Time{}
	s.stallEndedLocked(ReasonUnread, d, 0, now, out)
}

// stallingForLocked returns how long the stream's writer has been stalled, for
// any reason, at now: 0 if it is not.
func (s *Stream) stallingForLocked(now time.Time) time.Duration {
	var d time.Duration
	if !s.stallStart.IsZero() {
		d = now.Sub(s.stallStart)
	}
	if !s.laneWriteStart.IsZero() {
		d = max(d, now.Sub(s.laneWriteStart))
	}
	return d
}

// checkLevelLocked moves metric m to the level value v puts it at, and
// records the crossing.
func (s *Stream) checkLevelLocked(m Metric, v uint64, now time.Time, out *eventBuf) {
	if !s.sess.thresholds {
		return
	}
	cur := s.levels[m]
	next := s.sess.cfg.Thresholds.levelFor(m, cur, v)
	if next == cur {
		return
	}
	s.levels[m] = next
	if next > cur {
		if next == LevelCritical {
			s.sess.obs.criticals.Add(1)
		} else {
			s.sess.obs.warnings.Add(1)
		}
	}
	if s.sess.hooked {
		ev := s.eventInto(out, EventThreshold, now)
		ev.Metric, ev.Level, ev.Value = m, next, v
	}
}

// emitLifecycle emits a stream's opening, reset or retirement. The
// caller holds no lock.
func (s *Stream) emitLifecycle(kind EventKind, code uint64, remote bool) {
	if !s.sess.hooked {
		return
	}
	s.mu.Lock()
	ev := s.eventLocked(kind, s.sess.cfg.Now())
	s.mu.Unlock()
	ev.Code, ev.Remote = code, remote
	s.sess.emit(ev)
}

// lagLocked is the consumer lag: sent and not yet reported consumed.
func (s *Stream) lagLocked() uint64 { return s.send.Sent() - s.peerConsumed }

// observeTickLocked is the stream's part of housekeeping: the stall-time
// threshold while a stall lasts, and the live EventBlocked of a long
// transport stall.
func (s *Stream) observeTickLocked(now time.Time, out *eventBuf) {
	if !s.laneWriteStart.IsZero() && !s.transportShown && now.Sub(s.laneWriteStart) >= TransportStallThreshold {
		s.transportShown = true
		if s.sess.hooked {
			ev := s.eventInto(out, EventBlocked, now)
			ev.Reason = ReasonTransport
		}
	}
	if d := s.stallingForLocked(now); d > 0 {
		s.checkLevelLocked(MetricStall, uint64(d), now, out)
	}
}

// fillObservedLocked completes a stats snapshot: stalls under way count
// with the time they have lasted, and the credit reasons make up Stalls
// and TimeStalled.
func (s *Stream) fillObservedLocked(st *StreamStats, now time.Time) {
	if !s.stallStart.IsZero() {
		st.Blocked.add(s.stallReason, now.Sub(s.stallStart))
	}
	if !s.unreadStart.IsZero() {
		st.Blocked.add(ReasonUnread, now.Sub(s.unreadStart))
	}
	if !s.laneWriteStart.IsZero() {
		if d := now.Sub(s.laneWriteStart); d >= TransportStallThreshold {
			st.Blocked.add(ReasonTransport, d)
		}
	}
	pw, sb := st.Blocked[ReasonPeerWindow], st.Blocked[ReasonSessionBudget]
	st.Stalls, st.TimeStalled = pw.Count+sb.Count, pw.Time+sb.Time
	st.Levels = s.levels
	for _, l := range s.levels {
		st.Level = max(st.Level, l)
	}
}
