// Package retry is an opt-in retry policy for operations such as opening a
// stream or dialling a session: exponential backoff with full jitter, which
// honours a server's retry-after hint and is bounded by the context and by
// a number of attempts.
//
// The wait after the n-th failed attempt (n counted from 0) is drawn
// uniformly from
//
//	[0, min(Cap, Base·2^n))                                  with no hint,
//	[h, h + min(Cap, max(Base·2^n, HintSpread·h)))           with a hint h,
//
// where a hint is a positive duration returned by the RetryAfter method of
// an error in the attempt's error chain (found with errors.As, see
// [RetryAfter]). A hint is a floor, "not before": the wait is never shorter
// than it. The jitter added on top spreads the clients that a server
// refused at the same instant with the same hint, so that they do not all
// return in lock-step when the hint expires; it spans at least the backoff
// the attempt would have had anyway, and by default half the hint, so the
// retries of a crowd are spread over a time proportional to the delay the
// server asked for.
//
// A Policy never sleeps past its context's deadline: when the next wait
// would end after it, Do gives up at once, with an error that wraps both
// the last attempt's error and context.DeadlineExceeded.
//
// The clock and the random source are injectable, so tests are
// deterministic; there is no global state: by default each call of Do
// draws from a math/rand/v2 source of its own, seeded at random.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults for the zero fields of a Policy.
const (
	DefaultBase        = 100 * time.Millisecond
	DefaultCap         = 10 * time.Second
	DefaultMaxAttempts = 5
	DefaultHintSpread  = 0.5
)

// Errors that Do returns when it gives up. Each wraps the last attempt's
// error too, so errors.Is and errors.As see both.
var (
	// ErrExhausted means every allowed attempt failed.
	ErrExhausted = errors.New("retry: attempts exhausted")
	// ErrDeadline means the next attempt could only start after the
	// context's deadline, so Do gave up without waiting. It wraps
	// context.DeadlineExceeded.
	ErrDeadline = fmt.Errorf("retry: next attempt would start past the deadline: %w", context.DeadlineExceeded)
)

// Clock is the time source of a Policy.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits for d, or until ctx is done, when it returns ctx's
	// error (or cause).
	Sleep(ctx context.Context, d time.Duration) error
}

// Retry describes a retry about to happen, for [Policy.OnRetry].
type Retry struct {
	// Attempt is the number of the attempt that failed, from 1.
	Attempt int
	// Err is the error it failed with.
	Err error
	// Hint is the retry-after hint the error carried, or zero.
	Hint time.Duration
	// Delay is how long the policy waits before the next attempt.
	Delay time.Duration
}

// Policy decides whether, and when, a failed operation is tried again.
// The zero value (or a Policy with only some fields set) uses the
// defaults above. A nil *Policy makes a single attempt.
//
// A Policy is plain configuration: it may be copied, and used by many
// goroutines at once as long as its fields do not change (and its Rand,
// if set, is safe for concurrent use).
type Policy struct {
	// Base is the backoff bound of the first retry; it doubles with each
	// retry. Zero means DefaultBase.
	Base time.Duration
	// Cap bounds the backoff, and the jitter added to a hint. Zero means
	// DefaultCap.
	Cap time.Duration
	// MaxAttempts is the most times the operation is called, the first
	// included. Zero means DefaultMaxAttempts; a negative value means no
	// limit but the context's.
	MaxAttempts int
	// HintSpread is the least jitter added to a retry-after hint, as a
	// fraction of the hint (see the package documentation). Zero means
	// DefaultHintSpread; a negative value means none beyond the backoff.
	HintSpread float64
	// Retryable reports whether an error is worth another attempt. Nil
	// means every error is, except those matching context.Canceled or
	// context.DeadlineExceeded. Do returns an error Retryable refuses
	// as it is, at once.
	Retryable func(error) bool
	// OnRetry, if set, is called before each wait, for logs, events and
	// counters. It must not block.
	OnRetry func(Retry)
	// Clock is the time source. Nil means the system clock.
	Clock Clock
	// Rand is the random source of the jitter, for deterministic tests.
	// Nil means a new source for each call of Do (or Delay), seeded at
	// random. A policy used by several goroutines at once needs a source
	// that is safe for concurrent use, such as one made by [Locked].
	Rand rand.Source
}

// Do calls op until it succeeds, returns an error that is not retryable,
// runs out of attempts, or would have to wait past ctx's deadline; op gets
// ctx. On success it returns nil. A non-retryable error is returned as op
// returned it. Otherwise the error wraps the last attempt's error with
// [ErrExhausted], [ErrDeadline] or, when ctx ends during a wait, ctx's
// error (its cause, if it has one).
func (p *Policy) Do(ctx context.Context, op func(context.Context) error) error {
	_, err := DoValue(ctx, p, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, op(ctx)
	})
	return err
}

// DoValue is [Policy.Do] for an operation that returns a value: it
// returns the value of the successful attempt, or T's zero value with the
// error.
func DoValue[T any](ctx context.Context, p *Policy, op func(context.Context) (T, error)) (T, error) {
	var zero T
	if p == nil {
		return op(ctx)
	}
	clock, rng := p.clock(), p.rng()
	var last error
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return zero, stopped(context.Cause(ctx), attempt, last)
		}
		v, err := op(ctx)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil && last != nil {
			// ctx ended during this attempt: say what the earlier ones met too.
			return zero, stopped(context.Cause(ctx), attempt+1, errors.Join(err, last))
		}
		last = err
		if !p.retryable(err) {
			return zero, err
		}
		if limit := p.maxAttempts(); limit > 0 && attempt+1 >= limit {
			return zero, fmt.Errorf("%w after %d attempts: %w", ErrExhausted, attempt+1, err)
		}
		if ctx.Err() != nil {
			return zero, stopped(context.Cause(ctx), attempt+1, last)
		}
		hint, _ := RetryAfter(err)
		d := p.delay(attempt, hint, rng)
		if deadline, ok := ctx.Deadline(); ok {
			if left := deadline.Sub(clock.Now()); d > left {
				return zero, fmt.Errorf("%w (after %d attempts, wait %v, %v left): %w",
					ErrDeadline, attempt+1, d, left.Round(time.Microsecond), err)
			}
		}
		if p.OnRetry != nil {
			p.OnRetry(Retry{Attempt: attempt + 1, Err: err, Hint: hint, Delay: d})
		}
		if err := clock.Sleep(ctx, d); err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return zero, stopped(err, attempt+1, last)
		}
	}
}

// stopped is the error of a Do that the context stopped.
func stopped(cause error, attempts int, last error) error {
	if last == nil {
		return fmt.Errorf("retry: before the first attempt: %w", cause)
	}
	return fmt.Errorf("retry: %w after %d attempts: %w", cause, attempts, last)
}

// Delay returns a wait drawn for the retry after the failed attempt
// numbered attempt (0 for the first call) that failed with err, by the
// rules in the package documentation. Do uses it; it is exported for
// callers that schedule retries themselves.
func (p *Policy) Delay(attempt int, err error) time.Duration {
	hint, _ := RetryAfter(err)
	return p.delay(max(attempt, 0), hint, p.rng())
}

func (p *Policy) delay(attempt int, hint time.Duration, rng *rand.Rand) time.Duration {
	width := p.Backoff(attempt)
	if hint > 0 {
		if s := p.hintSpread(); s > 0 {
			spread := time.Duration(math.MaxInt64)
			if f := s * float64(hint); f < math.MaxInt64 {
				spread = time.Duration(f)
			}
			width = min(max(width, spread), p.cap())
		}
	}
	if width <= 0 {
		return hint
	}
	j := time.Duration(rng.Int64N(int64(width)))
	if hint > math.MaxInt64-j { // an absurd hint: saturate, never wrap
		return math.MaxInt64
	}
	return hint + j
}

// Backoff returns the bound of the full-jitter backoff of the retry after
// attempt (from 0): min(Cap, Base·2^attempt). The wait, with no hint, is
// drawn from [0, Backoff(attempt)).
func (p *Policy) Backoff(attempt int) time.Duration {
	base, ceiling := p.base(), p.cap()
	attempt = max(attempt, 0)
	if base >= ceiling || attempt >= 62 || base > ceiling>>attempt {
		return ceiling
	}
	return base << attempt
}

func (p *Policy) rng() *rand.Rand {
	if p.Rand != nil {
		return rand.New(p.Rand)
	}
	return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
}

func (p *Policy) base() time.Duration {
	if p.Base > 0 {
		return p.Base
	}
	return DefaultBase
}

func (p *Policy) cap() time.Duration {
	if p.Cap > 0 {
		return p.Cap
	}
	return DefaultCap
}

func (p *Policy) maxAttempts() int {
	if p.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return p.MaxAttempts
}

func (p *Policy) hintSpread() float64 {
	if p.HintSpread == 0 {
		return DefaultHintSpread
	}
	return p.HintSpread
}

func (p *Policy) retryable(err error) bool {
	if p.Retryable != nil {
		return p.Retryable(err)
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func (p *Policy) clock() Clock {
	if p.Clock != nil {
		return p.Clock
	}
	return systemClock{}
}

// RetryAfter returns the retry-after hint that err carries: the result of
// the RetryAfter method of the first error in its chain that has one
// (errors.As), if it is positive.
func RetryAfter(err error) (time.Duration, bool) {
	var h interface{ RetryAfter() time.Duration }
	if errors.As(err, &h) {
		if d := h.RetryAfter(); d > 0 {
			return d, true
		}
	}
	return 0, false
}

// WithRetryAfter returns err with a retry-after hint of d: an error that
// wraps err and whose RetryAfter method returns d. It serves servers and
// tests; a transport's own refusal error carries its hint itself.
func WithRetryAfter(err error, d time.Duration) error {
	return &hinted{err: err, after: d}
}

type hinted struct {
	err   error
	after time.Duration
}

func (h *hinted) Error() string             { return fmt.Sprintf("%v (retry after %v)", h.err, h.after) }
func (h *hinted) Unwrap() error             { return h.err }
func (h *hinted) RetryAfter() time.Duration { return h.after }

// Locked returns src made safe for concurrent use, for the Rand of a
// policy that several goroutines share.
func Locked(src rand.Source) rand.Source { return &lockedSource{src: src} }

type lockedSource struct {
	mu  sync.Mutex
	src rand.Source
}

func (l *lockedSource) Uint64() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src.Uint64()
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
