package mux

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/window"
)

// This file is the session's side of observability: the totals its
// streams report into, the event hooks (Config.OnEvent and the qlog
// trace), and the log.

// sessionObs holds a session's observations that are more than a counter.
type sessionObs struct {
	ended atomic.Bool // the session's last event went out

	mu          sync.Mutex // guards the fields below; held only to add
	blocked     Blocked
	signal      Histogram
	updateDelay Histogram
	rtt         Histogram

	consumed, growths, shrinks, refusals atomic.Uint64
	warnings, criticals                  atomic.Uint64
	overloaded                           atomic.Uint64 // Opens the breaker failed fast
	rateRefused                          atomic.Uint64 // peer streams over the admission rate
	priorityRefusals                     atomic.Uint64 // growth refused for a stream's urgency
}

// startObserving sets up the session's hooks once its config is final.
func (sess *Session) startObserving() {
	if !sess.cfg.DisableQlog {
		if qc, ok := sess.conn.(transport.QlogConn); ok {
			sess.qlog = newQlogRecorder(qc.QlogTrace())
		}
	}
	sess.hooked = sess.cfg.OnEvent != nil || sess.qlog != nil
	sess.thresholds = sess.cfg.Thresholds.enabled()
	if l := sess.cfg.Logger; l != nil {
		l.LogAttrs(context.Background(), slog.LevelInfo, "bp: session opened", sess.logAttrs()...)
	}
}

func (sess *Session) logAttrs(more ...slog.Attr) []slog.Attr {
	role := "server"
	if sess.client {
		role = "client"
	}
	return append([]slog.Attr{
		slog.String("role", role),
		slog.String("local", sess.conn.LocalAddr().String()),
		slog.String("remote", sess.conn.RemoteAddr().String()),
	}, more...)
}

// emit hands ev to Config.OnEvent and to the qlog trace. Callers hold no
// lock.
func (sess *Session) emit(ev Event) {
	if sess.obs.ended.Load() { // EventSessionClosed was the last
		return
	}
	if sess.cfg.OnEvent != nil {
		sess.cfg.OnEvent(ev)
	}
	if sess.qlog != nil {
		sess.qlog.record(ev)
	}
}

// emitSession emits a session-level event (Stream 0).
func (sess *Session) emitSession(kind EventKind, f func(*Event)) {
	if !sess.hooked {
		return
	}
	ev := Event{Time: sess.cfg.Now(), Kind: kind}
	if f != nil {
		f(&ev)
	}
	sess.emit(ev)
}

// observeClose records, logs and traces the end of the session; it runs
// once, from shutdown, and closes the session's part of the qlog trace.
func (sess *Session) observeClose(e *SessionError) {
	sess.emitSession(EventSessionClosed, func(ev *Event) { ev.Code, ev.Remote = uint64(e.Code), e.Remote })
	sess.obs.ended.Store(true)
	if l := sess.cfg.Logger; l != nil {
		level := slog.LevelInfo
		msg := "bp: session closed"
		switch {
		case !e.Remote && IsAbuseCode(uint64(e.Code)):
			level, msg = slog.LevelWarn, "bp: session closed: the peer broke a limit"
		case e.Code != framing.NoError:
			level = slog.LevelWarn
		}
		attrs := sess.logAttrs(slog.String("code", e.Code.String()), slog.Bool("by_peer", e.Remote))
		if e.Err != nil {
			attrs = append(attrs, slog.String("reason", e.Err.Error()))
		}
		l.LogAttrs(context.Background(), level, msg, attrs...)
	}
	if sess.qlog != nil {
		sess.qlog.close()
	}
}

// observeGoAway records a GOAWAY sent or received; done is its DONE flag
// (the sender has no stream left).
func (sess *Session) observeGoAway(remote bool, last uint64, code framing.ErrorCode, done bool) {
	sess.emitSession(EventGoAway, func(ev *Event) { ev.Remote, ev.Limit, ev.Code = remote, last, uint64(code) })
	if l := sess.cfg.Logger; l != nil {
		l.LogAttrs(context.Background(), slog.LevelInfo, "bp: GOAWAY", sess.logAttrs(
			slog.Bool("by_peer", remote), slog.Uint64("last_stream_id", last), slog.String("code", code.String()), slog.Bool("done", done))...)
	}
}

// observeRTT records an RTT sample from a PING.
func (sess *Session) observeRTT(rtt time.Duration) {
	sess.obs.mu.Lock()
	sess.obs.rtt.Observe(rtt)
	sess.obs.mu.Unlock()
	sess.emitSession(EventRTT, func(ev *Event) { ev.Duration = rtt })
}

// stallEnded adds a stall that ended to the session's totals.
func (sess *Session) stallEnded(r BlockReason, d time.Duration, signal time.Duration) {
	sess.obs.mu.Lock()
	sess.obs.blocked.add(r, d)
	if signal > 0 {
		sess.obs.signal.Observe(signal)
	}
	sess.obs.mu.Unlock()
}

func (sess *Session) updateDelayed(d time.Duration) {
	sess.obs.mu.Lock()
	sess.obs.updateDelay.Observe(d)
	sess.obs.mu.Unlock()
}

// windowCounted adds a stream's window-sizing counts since before.
func (sess *Session) windowCounted(before, after window.Counts) {
	if d := after.Growths - before.Growths; d > 0 {
		sess.obs.growths.Add(d)
	}
	if d := after.Shrinks - before.Shrinks; d > 0 {
		sess.obs.shrinks.Add(d)
	}
	if d := after.Refusals - before.Refusals; d > 0 {
		sess.obs.refusals.Add(d)
	}
	if d := after.PriorityRefusals - before.PriorityRefusals; d > 0 {
		sess.obs.priorityRefusals.Add(d)
	}
}

// fillObserved adds the observations to a stats snapshot.
func (sess *Session) fillObserved(st *SessionStats) {
	sess.obs.mu.Lock()
	st.Blocked = sess.obs.blocked
	st.SignalLatency = sess.obs.signal
	st.UpdateDelay = sess.obs.updateDelay
	st.RTTSamples = sess.obs.rtt
	sess.obs.mu.Unlock()
	st.BytesConsumed = sess.obs.consumed.Load()
	st.WindowGrowths = sess.obs.growths.Load()
	st.WindowShrinks = sess.obs.shrinks.Load()
	st.BudgetRefusals = sess.obs.refusals.Load()
	st.ThresholdWarnings = sess.obs.warnings.Load()
	st.ThresholdCriticals = sess.obs.criticals.Load()
	st.PriorityRefusals = sess.obs.priorityRefusals.Load()
	st.OpensFailedFast = sess.obs.overloaded.Load()
	if sess.breaker != nil {
		st.Breaker = sess.breaker.State().String()
	}
	if sess.isClosed() {
		st.Closed = true
		if e, ok := sess.closeErr.(*SessionError); ok {
			st.CloseCode, st.CloseRemote = uint64(e.Code), e.Remote
		}
	}
}
