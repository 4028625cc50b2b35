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

// streamObs is the observability state of a stream that stalled,
// granted credit or wrote: the stalls under way and the levels against
// the session's thresholds. Streams make it on first need (observing), so
// that an idle stream does not carry it; a nil *streamObs reads as no
// stall under way and every level LevelNormal.
type streamObs struct {
	stallStart     time.Time   // the credit stall under way began
	stallReason    BlockReason // and why
	transportShown bool        // the long lane write's EventBlocked went out
	creditArrived  time.Time   // the credit that ends the stall arrived
	unreadStart    time.Time   // the receiving side's stall (ReasonUnread) began
	laneWriteStart time.Time   // the DATA write under way began
	updateDueAt    time.Time   // the pending WINDOW_UPDATE became due
	levels         [NumMetrics]Level
}

// observing returns the stream's streamObs, making it on first use. The
// caller holds s.mu.
func (s *Stream) observing() *streamObs {
	if s.obs == nil {
		s.obs = new(streamObs)
	}
	return s.obs
}

// stalled reports whether a credit stall is under way.
func (o *streamObs) stalled() bool { return o != nil && !o.stallStart.IsZero() }

// unread reports whether the receiving side's stall is under way.
func (o *streamObs) unread() bool { return o != nil && !o.unreadStart.IsZero() }

// laneWriting reports whether a DATA write is under way.
func (o *streamObs) laneWriting() bool { return o != nil && !o.laneWriteStart.IsZero() }

// level returns metric m's level.
func (o *streamObs) level(m Metric) Level {
	if o == nil {
		return LevelNormal
	}
	return o.levels[m]
}

// startCreditStallLocked begins a stall for credit, if none is under way.
// Its reason is the session budget when the peer's latest WINDOW_UPDATE
// said its budget limited the window, else the peer's window; the update
// that ends the stall settles it (see creditLocked), so the reason of its
// EventBlocked is provisional and its EventUnblocked's final.
func (s *Stream) startCreditStallLocked(now time.Time, out *eventBuf) {
	if s.obs.stalled() {
		return
	}
	o := s.observing()
	o.stallStart, o.creditArrived = now, time.Time{}
	o.stallReason = ReasonPeerWindow
	if s.peerBudgetLimited {
		o.stallReason = ReasonSessionBudget
	}
	s.sess.stats.stalls.Add(1)
	if s.sess.hooked {
		ev := s.eventInto(out, EventBlocked, now)
		ev.Reason = o.stallReason
	}
}

// creditLocked settles the reason of the stall under way, if any, when a
// WINDOW_UPDATE brings credit: the session budget if the update says the
// budget limited the window, else the peer's window (its reader was
// slow or stopped, which the peer's own update then says by leaving the
// flag off).
func (s *Stream) creditLocked(now time.Time, budgetLimited bool) {
	o := s.obs
	if !o.stalled() || !o.creditArrived.IsZero() {
		return
	}
	o.creditArrived = now // the writer ends the stall when it resumes
	o.stallReason = ReasonPeerWindow
	if budgetLimited {
		o.stallReason = ReasonSessionBudget
	}
}

// endCreditStallLocked ends the stall for credit under way, if any. The
// writer resumed when resumed is true (it took credit), and the stall's
// signal latency is then observed; otherwise the Write gave up (deadline,
// error, close).
func (s *Stream) endCreditStallLocked(now time.Time, resumed bool, out *eventBuf) {
	o := s.obs
	if !o.stalled() {
		return
	}
	d := now.Sub(o.stallStart)
	var signal time.Duration
	if resumed && !o.creditArrived.IsZero() {
		signal = max(now.Sub(o.creditArrived)+s.sess.rtt()/2, 1)
		s.stats.histograms().signal.Observe(signal)
	}
	s.stallEndedLocked(o.stallReason, d, signal, now, out)
	o.stallStart, o.creditArrived = time.Time{}, time.Time{}
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
	if o := s.obs; o != nil {
		o.laneWriteStart, o.transportShown = time.Time{}, false
	}
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
	if s.obs.unread() || s.recv == nil || limit != s.recv.Limit() || s.buf.len() == 0 {
		return
	}
	s.observing().unreadStart = now
	if s.sess.hooked {
		ev := s.eventInto(out, EventBlocked, now)
		ev.Reason = ReasonUnread
	}
}

// endUnreadStallLocked ends the receiving side's stall, if one is under
// way: this side granted more credit, or stopped reading.
func (s *Stream) endUnreadStallLocked(now time.Time, out *eventBuf) {
	if !s.obs.unread() {
		return
	}
	d := now.Sub(s.obs.unreadStart)
	s.obs.unreadStart = time.Time{}
	s.stallEndedLocked(ReasonUnread, d, 0, now, out)
}

// stallingForLocked returns how long the stream's writer has been stalled, for
// any reason, at now: 0 if it is not.
func (s *Stream) stallingForLocked(now time.Time) time.Duration {
	var d time.Duration
	if s.obs.stalled() {
		d = now.Sub(s.obs.stallStart)
	}
	if s.obs.laneWriting() {
		d = max(d, now.Sub(s.obs.laneWriteStart))
	}
	return d
}

// checkLevelLocked moves metric m to the level value v puts it at, and
// records the crossing.
func (s *Stream) checkLevelLocked(m Metric, v uint64, now time.Time, out *eventBuf) {
	if !s.sess.thresholds {
		return
	}
	cur := s.obs.level(m)
	next := s.sess.cfg.Thresholds.levelFor(m, cur, v)
	if next == cur {
		return
	}
	s.observing().levels[m] = next
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
	if o := s.obs; o.laneWriting() && !o.transportShown && now.Sub(o.laneWriteStart) >= TransportStallThreshold {
		o.transportShown = true
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
	o := s.obs
	if o.stalled() {
		st.Blocked.add(o.stallReason, now.Sub(o.stallStart))
	}
	if o.unread() {
		st.Blocked.add(ReasonUnread, now.Sub(o.unreadStart))
	}
	if o.laneWriting() {
		if d := now.Sub(o.laneWriteStart); d >= TransportStallThreshold {
			st.Blocked.add(ReasonTransport, d)
		}
	}
	pw, sb := st.Blocked[ReasonPeerWindow], st.Blocked[ReasonSessionBudget]
	st.Stalls, st.TimeStalled = pw.Count+sb.Count, pw.Time+sb.Time
	if o != nil {
		st.Levels = o.levels
	}
	for _, l := range st.Levels {
		st.Level = max(st.Level, l)
	}
}
