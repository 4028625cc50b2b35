package mux

// This file is the session's timers and abuse limits: keepalive and
// dead-peer detection, the SETTINGS and idle timeouts, the useless-frame
// budget and the pacing of small DATA frames.

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/bpmux/bp/framing"
)

// useless counts a frame that did no work, and closes the session with
// ENHANCE_YOUR_CALM when the peer sends too many of them.
func (sess *Session) useless() error {
	if sess.uselessCount.Add(1) > int64(sess.cfg.MaxUselessFramesPerSecond) {
		return sess.tooManyUseless()
	}
	return nil
}

// tooManyUseless closes the session for its useless frames; out of line,
// so that useless stays small where the lane reader inlines it.
//
//go:noinline
func (sess *Session) tooManyUseless() error {
	return sess.protocolErr(framing.EnhanceYourCalm, fmt.Errorf("more than %d useless frames in a second", sess.cfg.MaxUselessFramesPerSecond))
}

// markHeard records that something arrived from the peer, at the coarse
// clock's resolution, writing the shared word only when it changes.
func (sess *Session) markHeard() {
	if now := sess.clock.Load(); sess.heard.Load() != now {
		sess.heard.Store(now)
	}
}

// uselessIfIdle counts a stream the peer ended without either side
// sending any data on it as churn: a stream that did no useful work
// (SPEC.md section 10), whether it ended by RESET or at the QUIC level.
func (sess *Session) uselessIfIdle(s *Stream) error {
	if s.didWork() {
		return nil
	}
	return sess.useless()
}

// paceSmallFrame holds the lane reader that is about to process a small
// DATA frame until the session's small-frame rate allows it, so that a
// peer dribbling tiny frames within its credit costs no more than
// MaxSmallFramesPerSecond frames of work a second (SPEC.md section 10).
// Waiting stops reading the lane, so QUIC's flow control holds the peer.
func (sess *Session) paceSmallFrame() error {
	if wait := sess.smallFrameWait(); wait > 0 {
		return sess.paceWait(wait)
	}
	return nil
}

// smallFrameWait reserves the session's small-frame rate for one frame
// and returns how long to wait before processing it (paceWait), zero for
// not at all.
func (sess *Session) smallFrameWait() time.Duration {
	sess.smallMu.Lock()
	wait := sess.small.reserve(time.Now())
	sess.smallMu.Unlock()
	return wait
}

// paceWait is paceSmallFrame's wait, out of line so that the lane reader
// that does not wait has no timer in its frames (see laneReader).
//
//go:noinline
func (sess *Session) paceWait(wait time.Duration) error {
	sess.stats.paced.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-sess.done:
		return sess.err()
	}
}

// tickPeriod is how often housekeeping runs: once a second, or more often
// when a timeout is short enough that a second would blur it.
func tickPeriod(c Config) time.Duration {
	p := time.Second
	for _, d := range []time.Duration{c.DeadPeerTimeout / 10, c.SettingsTimeout / 10, c.IdleTimeout / 10} {
		if d > 0 && d < p {
			p = d
		}
	}
	return max(p, 10*time.Millisecond)
}

// housekeeping runs the session's timers: the useless-frame budget, idle
// window shrink, keepalive and dead-peer detection, and the SETTINGS and
// idle-session timeouts.
func (sess *Session) housekeeping() {
	period := tickPeriod(sess.cfg)
	t := time.NewTicker(period)
	defer t.Stop()
	var lastPing, lastReset time.Time
	var seq uint64
	var streams []*Stream
	if sess.cfg.KeepAliveInterval > 0 && sess.conn.RTT() == 0 {
		// A transport that measures no RTT of its own (golang.org/x/net/quic
		// exposes none) gets one from a PING at once: window auto-tuning
		// needs it, and a tick can be a second away.
		now := sess.cfg.Now()
		seq++
		sess.mu.Lock()
		binary.BigEndian.PutUint64(sess.pingData[:], seq)
		sess.pendPing, sess.pingWaiting, sess.pingSentAt = true, true, now
		sess.mu.Unlock()
		lastPing = now
		signal(sess.ctlSignal)
	}
	for {
		select {
		case <-t.C:
		case <-sess.done:
			return
		}
		now := sess.cfg.Now()
		sess.clock.Store(now.UnixNano())
		if now.Sub(lastReset) >= time.Second {
			sess.uselessCount.Store(0)
			lastReset = now
		}
		if !sess.settingsRecvd.Load() && now.Sub(sess.started) > sess.cfg.SettingsTimeout {
			sess.protocolError(framing.SettingsError, fmt.Errorf("no SETTINGS from the peer within %v", sess.cfg.SettingsTimeout))
			return
		}
		sess.mu.Lock()
		streams = streams[:0] // reused from tick to tick
		for _, s := range sess.streams {
			streams = append(streams, s)
		}
		// The peer has what is left of the dead-peer timeout after one
		// keepalive interval to answer a PING.
		answerWithin := sess.cfg.DeadPeerTimeout - sess.cfg.KeepAliveInterval
		// Both must hold: the PING went unanswered, and nothing at all
		// arrived meanwhile (a peer whose data still arrives is alive).
		heardAgo := now.Sub(time.Unix(0, sess.heard.Load()))
		timedOut := sess.pingWaiting && now.Sub(sess.pingSentAt) > answerWithin && heardAgo > answerWithin
		sendPing := sess.cfg.KeepAliveInterval > 0 && !sess.pingWaiting && now.Sub(lastPing) >= sess.cfg.KeepAliveInterval
		if sendPing {
			seq++
			binary.BigEndian.PutUint64(sess.pingData[:], seq)
			sess.pendPing, sess.pingWaiting, sess.pingSentAt = true, true, now
			lastPing = now
		}
		idle := sess.cfg.IdleTimeout > 0 && len(sess.streams) == 0 && !sess.goAwaySent && now.Sub(sess.idleSince) >= sess.cfg.IdleTimeout
		sess.mu.Unlock()
		if timedOut && sess.cfg.KeepAliveInterval > 0 {
			sess.protocolError(framing.KeepaliveTimeout, fmt.Errorf("%w: the peer stopped answering: no PING answer in %v, nothing heard for %v",
				ErrPeerUnreachable, answerWithin.Round(time.Millisecond), heardAgo.Round(time.Millisecond)))
			return
		}
		if sendPing {
			signal(sess.ctlSignal)
		}
		if idle {
			sess.GoAway(framing.NoError)
		}
		sess.checkStalls(now, streams)
		for i, s := range streams {
			s.tick(now, 2*time.Second)
			streams[i] = nil // let retired streams go
		}
	}
}

// tokenBucket is a rate limit with a burst, as pure accounting: reserve
// takes one token and says how long to wait until it is due. Tokens may be
// owed (a negative balance), so concurrent callers queue up in order and
// the total rate holds.
type tokenBucket struct {
	rate   float64 // tokens per second; 0 means unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int, burst int) tokenBucket {
	return tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// reserve takes a token at now and returns how long the caller must wait
// before using it (zero or negative: at once).
func (b *tokenBucket) reserve(now time.Time) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
