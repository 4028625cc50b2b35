package mux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bpmux/bp/breaker"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/retry"
)

// This file is the session's answers to a peer that asks too much, and to
// a peer that is saturated: the admission rate of the peer's new streams,
// refused with a retry-after hint (SPEC.md 5.4, 10), and the circuit
// breaker that makes Open fail fast while the peer refuses this side's
// streams or leaves them stalled.

// ErrOverloaded means Open failed fast because the session's circuit
// breaker is open: the peer has been refusing streams, or leaving many
// stalled. The error also matches breaker.ErrOpen, and its RetryAfter
// (errors.As with interface{ RetryAfter() time.Duration }) says when the
// breaker lets a trial through.
var ErrOverloaded = errors.New("mux: the peer is overloaded (circuit breaker open)")

// BreakerConfig turns on a session's circuit breaker (Config.Breaker).
// The breaker counts a stream this side opened as a failure when the
// peer refuses it (REFUSED_STREAM), and as a success when the peer first
// answers on it; it trips when at least Stalled of this side's streams
// have waited for credit longer than StalledFor. While it is open, Open
// fails at once with ErrOverloaded instead of adding to the peer's load;
// after the cool-down it lets trial streams through (half-open) and closes
// again when they succeed.
type BreakerConfig struct {
	// Breaker sets the thresholds and the cool-down (package breaker's
	// defaults for zero fields: 5 failures in a row, 2 s). Its Now
	// defaults to the session's clock; its OnStateChange is called too.
	Breaker breaker.Config
	// Stalled and StalledFor trip the breaker when that many streams have
	// been stalled for credit at least that long. Zero Stalled: never.
	Stalled    int
	StalledFor time.Duration
}

// Defaults of the admission rate of the peer's new streams.
const (
	// DefaultStreamRate is the default Config.StreamRate.
	DefaultStreamRate = 2000
	// DefaultStreamBurst is the least default Config.StreamBurst.
	DefaultStreamBurst = 1000
)

// admission is the token bucket of the peer's new streams.
type admission struct {
	mu     sync.Mutex
	bucket tokenBucket
}

// admit takes a token for a new peer stream at now. When none is left it
// returns false and how long until one is: the hint the refusal carries.
func (a *admission) admit(now time.Time) (bool, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	wait := a.bucket.reserve(now)
	if wait <= 0 {
		return true, 0
	}
	a.bucket.tokens++ // a refused stream takes no token
	return false, wait
}

// maxRetryAfter is the longest retry-after hint taken from a peer.
const maxRetryAfter = time.Hour

// retryAfterMillis rounds a hint up to whole milliseconds, at least 1.
func retryAfterMillis(d time.Duration) uint64 {
	return uint64(max((d+time.Millisecond-1)/time.Millisecond, 1))
}

// initAdmission sets up the admission rate and the breaker.
func (sess *Session) initAdmission() error {
	rate, burst := sess.cfg.StreamRate, sess.cfg.StreamBurst
	if rate < 0 {
		rate = 0 // unlimited
	}
	sess.admission.bucket = newTokenBucket(rate, burst)
	if sess.cfg.Breaker == nil {
		return nil
	}
	bc := sess.cfg.Breaker.Breaker
	if bc.Now == nil {
		bc.Now = sess.cfg.Now
	}
	user := bc.OnStateChange
	bc.OnStateChange = func(t breaker.Transition) {
		sess.emitSession(EventBreaker, func(ev *Event) { ev.Value, ev.Limit = uint64(t.To), uint64(t.From) })
		if user != nil {
			user(t)
		}
	}
	b, err := breaker.New(bc)
	if err != nil {
		return fmt.Errorf("mux: Breaker: %w", err)
	}
	sess.breaker = b
	return nil
}

// allowOpen asks the breaker, if any, to let an Open through.
func (sess *Session) allowOpen() error {
	if sess.breaker == nil {
		return nil
	}
	if err := sess.breaker.Allow(); err != nil {
		sess.obs.overloaded.Add(1)
		return fmt.Errorf("%w: %w", ErrOverloaded, err)
	}
	return nil
}

// BreakerStats returns the circuit breaker's state and counts; ok is false
// when the session has none (Config.Breaker is nil).
func (sess *Session) BreakerStats() (st breaker.Stats, ok bool) {
	if sess.breaker == nil {
		return breaker.Stats{}, false
	}
	return sess.breaker.Stats(), true
}

// answeredLocked reports to the breaker that the peer answered on a
// stream this side opened: it was admitted. Once per stream.
func (s *Stream) answeredLocked() {
	if s.answered || s.sess.isPeerID(s.id) {
		return
	}
	s.answered = true
	if s.sess.breaker != nil {
		s.sess.breaker.Success()
	}
}

// refusedByPeerLocked records the peer's refusal of a stream this side
// opened: its retry-after hint, and a failure for the breaker.
func (s *Stream) refusedByPeerLocked(f *framing.Frame) {
	if f.ErrorCode != framing.RefusedStream || s.sess.isPeerID(s.id) {
		return
	}
	// A hint is advice: one past an hour (or past what a Duration holds)
	// is taken as an hour.
	s.peerRetryAfter = time.Duration(min(f.RetryAfter, uint64(maxRetryAfter/time.Millisecond))) * time.Millisecond
	if !s.answered {
		s.answered = true
		if s.sess.breaker != nil {
			s.sess.breaker.Failure()
		}
	}
}

// peerStopError is the error of a write the peer's STOP_SENDING ended,
// with the retry-after hint of its refusal if it refused the stream.
func (s *Stream) peerStopError() *StreamError {
	return &StreamError{StreamID: s.id, Code: s.peerStop, Remote: true, After: s.peerRetryAfter}
}

// checkStalls trips the breaker when enough of this side's streams have
// been stalled for credit for long enough.
func (sess *Session) checkStalls(now time.Time, streams []*Stream) {
	bc := sess.cfg.Breaker
	if sess.breaker == nil || bc.Stalled <= 0 {
		return
	}
	n := 0
	for _, s := range streams {
		s.mu.Lock()
		if s.obs.stalled() && now.Sub(s.obs.stallStart) >= bc.StalledFor {
			n++
		}
		s.mu.Unlock()
	}
	if n >= bc.Stalled && sess.breaker.State() != breaker.Open {
		sess.breaker.Trip()
	}
}

// Refused reports whether an error means the peer did not take on the
// work: it refused the stream (REFUSED_STREAM, often with a retry-after
// hint), or the circuit breaker failed Open fast (ErrOverloaded). The
// work may be tried again on a new stream; Session.Try does that.
func Refused(err error) bool {
	return errors.Is(err, ErrStreamRefused) || errors.Is(err, ErrOverloaded)
}

// Try opens a stream with opts and runs op on it, and when the peer turns
// the work away (Refused: the stream was refused, or the breaker failed
// the Open fast) tries again on a new stream, as policy says: exponential
// backoff with full jitter, waiting at least the retry-after hint the
// refusal carries, bounded by ctx and the policy's attempts. Any other
// error of op, or of Open, is returned at once. The policy's own
// Retryable, if set, can only narrow Refused. The stream is closed after
// each attempt; op must be idempotent, since a refused stream's data was
// not processed, but the data of a stream reset later may have been. A
// nil policy makes one attempt.
//
// A peer learns that a stream is refused only from its first frames, so
// op sees the refusal as the error of a Write or a Read: return it.
func (sess *Session) Try(ctx context.Context, policy *retry.Policy, opts StreamOptions, op func(context.Context, *Stream) error) error {
	attempt := func(ctx context.Context) error {
		s, err := sess.OpenStream(ctx, opts)
		if err != nil {
			return err
		}
		defer s.Close()
		return op(ctx, s)
	}
	if policy == nil {
		return attempt(ctx)
	}
	p := *policy
	user := p.Retryable
	p.Retryable = func(err error) bool { return Refused(err) && (user == nil || user(err)) }
	return p.Do(ctx, attempt)
}
