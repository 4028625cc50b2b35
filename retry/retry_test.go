package retry

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errRefused = errors.New("refused")

// t0 is the fake clock's start. No test reads the system clock.
var t0 = time.Unix(1_000_000, 0)

// fakeClock advances only when slept on, and records the sleeps.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.sleeps = append(c.sleeps, d)
	if dl, ok := ctx.Deadline(); ok && c.now.Add(d).After(dl) {
		c.now = dl
		return context.DeadlineExceeded
	}
	c.now = c.now.Add(d)
	return ctx.Err()
}

// deadlineCtx has a deadline on the fake clock that never fires by itself:
// the policy must keep to it on its own.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func withFakeDeadline(d time.Time) context.Context {
	return deadlineCtx{context.Background(), d}
}

func seeded(seed uint64) rand.Source { return rand.NewPCG(seed, 0x7265747279) }

func TestBackoff(t *testing.T) {
	tests := []struct {
		base, cap time.Duration
		attempt   int
		want      time.Duration
	}{
		{0, 0, 0, DefaultBase},
		{0, 0, 1, 2 * DefaultBase},
		{0, 0, 20, DefaultCap},
		{time.Second, time.Minute, 0, time.Second},
		{time.Second, time.Minute, 3, 8 * time.Second},
		{time.Second, time.Minute, 5, 32 * time.Second},
		{time.Second, time.Minute, 6, time.Minute},
		{time.Second, time.Minute, 61, time.Minute},
		{time.Second, time.Minute, 62, time.Minute},
		{time.Second, time.Minute, 1000, time.Minute}, // no overflow
		{time.Nanosecond, 1 << 62, 61, 1 << 61},
		{time.Nanosecond, 1 << 62, 62, 1 << 62},
		{time.Minute, time.Second, 0, time.Second}, // base past cap
		{time.Second, time.Minute, -1, time.Second},
	}
	for _, tc := range tests {
		p := &Policy{Base: tc.base, Cap: tc.cap}
		assert.Equal(t, tc.want, p.Backoff(tc.attempt), "base %v cap %v attempt %d", tc.base, tc.cap, tc.attempt)
	}
}

// TestDelayBounds: with no hint, the wait is full jitter over
// [0, Backoff(attempt)), and does span it.
func TestDelayBounds(t *testing.T) {
	p := &Policy{Base: 10 * time.Millisecond, Cap: time.Second, Rand: seeded(1)}
	for attempt := 0; attempt < 10; attempt++ {
		bound := p.Backoff(attempt)
		lo, hi := bound, time.Duration(0)
		for i := 0; i < 1000; i++ {
			d := p.Delay(attempt, errRefused)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.Less(t, d, bound, "attempt %d", attempt)
			lo, hi = min(lo, d), max(hi, d)
		}
		assert.Less(t, lo, bound/20, "attempt %d: full jitter reaches near 0", attempt)
		assert.Greater(t, hi, bound-bound/20, "attempt %d: and near the bound", attempt)
	}
}

type hintErr time.Duration

func (h hintErr) Error() string             { return "busy" }
func (h hintErr) RetryAfter() time.Duration { return time.Duration(h) }

func TestDelayWithHint(t *testing.T) {
	tests := []struct {
		name    string
		p       Policy
		attempt int
		err     error
		lo, hi  time.Duration // the wait is in [lo, hi)
	}{
		{"no hint", Policy{Base: time.Second, Cap: time.Minute}, 2, errRefused, 0, 4 * time.Second},
		{"half the hint spreads", Policy{Base: 100 * time.Millisecond, Cap: time.Minute}, 0,
			WithRetryAfter(errRefused, 2*time.Second), 2 * time.Second, 3 * time.Second},
		{"the backoff spreads when wider", Policy{Base: time.Second, Cap: time.Minute}, 3,
			WithRetryAfter(errRefused, 2*time.Second), 2 * time.Second, 10 * time.Second},
		{"spread capped", Policy{Base: 100 * time.Millisecond, Cap: 300 * time.Millisecond}, 0,
			WithRetryAfter(errRefused, 2*time.Second), 2 * time.Second, 2300 * time.Millisecond},
		{"a hint past the cap is still honoured", Policy{Base: time.Millisecond, Cap: time.Second}, 0,
			WithRetryAfter(errRefused, time.Minute), time.Minute, time.Minute + time.Second},
		{"spread of a quarter", Policy{Base: time.Millisecond, Cap: time.Minute, HintSpread: 0.25}, 0,
			WithRetryAfter(errRefused, 4*time.Second), 4 * time.Second, 5 * time.Second},
		{"no spread: the backoff only", Policy{Base: time.Millisecond, Cap: time.Minute, HintSpread: -1}, 0,
			WithRetryAfter(errRefused, 4*time.Second), 4 * time.Second, 4*time.Second + time.Millisecond},
		{"hint found deep in the chain", Policy{Base: time.Millisecond, Cap: time.Minute}, 0,
			errors.Join(errRefused, wrap(hintErr(time.Second))), time.Second, 1500 * time.Millisecond},
		{"a zero hint is no hint", Policy{Base: time.Millisecond, Cap: time.Minute}, 0,
			hintErr(0), 0, time.Millisecond},
		{"a negative hint is no hint", Policy{Base: time.Millisecond, Cap: time.Minute}, 0,
			hintErr(-time.Second), 0, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Rand = seeded(2)
			lo, hi := tc.hi, tc.lo
			for i := 0; i < 2000; i++ {
				d := p.Delay(tc.attempt, tc.err)
				require.GreaterOrEqual(t, d, tc.lo)
				require.Less(t, d, tc.hi)
				lo, hi = min(lo, d), max(hi, d)
			}
			span := tc.hi - tc.lo
			assert.Less(t, lo, tc.lo+span/20, "spans down to the floor")
			assert.Greater(t, hi, tc.hi-span/20, "spans up to the top")
		})
	}
}

// TestDelayAbsurdHint: a hint near the largest duration, with a spread
// that would overflow, saturates instead of wrapping to a short wait.
func TestDelayAbsurdHint(t *testing.T) {
	hint := time.Duration(math.MaxInt64 - int64(time.Second))
	p := &Policy{Base: time.Millisecond, Cap: time.Minute, HintSpread: 4, Rand: seeded(7)}
	saturated := 0
	for i := 0; i < 100; i++ {
		d := p.Delay(0, hintErr(hint))
		require.GreaterOrEqual(t, d, hint)
		if d == math.MaxInt64 {
			saturated++
		}
	}
	assert.Positive(t, saturated)
}

func wrap(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func TestRetryAfter(t *testing.T) {
	d, ok := RetryAfter(WithRetryAfter(errRefused, time.Second))
	assert.True(t, ok)
	assert.Equal(t, time.Second, d)
	_, ok = RetryAfter(errRefused)
	assert.False(t, ok)
	_, ok = RetryAfter(nil)
	assert.False(t, ok)
	err := WithRetryAfter(errRefused, 1500*time.Millisecond)
	assert.ErrorIs(t, err, errRefused)
	assert.Equal(t, "refused (retry after 1.5s)", err.Error())
}

// script returns an op that fails with errs in turn, then succeeds, and
// records the fake time of each call.
func script(c *fakeClock, calls *[]time.Time, errs ...error) func(context.Context) error {
	return func(context.Context) error {
		*calls = append(*calls, c.Now())
		if i := len(*calls) - 1; i < len(errs) {
			return errs[i]
		}
		return nil
	}
}

func TestDo(t *testing.T) {
	errFatal := errors.New("fatal")
	onlyRefused := func(err error) bool { return errors.Is(err, errRefused) }
	tests := []struct {
		name      string
		p         Policy
		errs      []error // the op fails with these in turn, then succeeds
		wantCalls int
		wantIs    []error // the returned error matches each; none: nil
		wantNot   []error
		sleeps    int
	}{
		{"success at once", Policy{}, nil, 1, nil, nil, 0},
		{"success on the third", Policy{}, []error{errRefused, errRefused}, 3, nil, nil, 2},
		{"exhausted", Policy{MaxAttempts: 3}, []error{errRefused, errRefused, errRefused, errRefused}, 3,
			[]error{ErrExhausted, errRefused}, []error{context.DeadlineExceeded}, 2},
		{"default max attempts", Policy{}, repeat(errRefused, 10), DefaultMaxAttempts,
			[]error{ErrExhausted, errRefused}, nil, DefaultMaxAttempts - 1},
		{"one attempt", Policy{MaxAttempts: 1}, []error{errRefused}, 1,
			[]error{ErrExhausted, errRefused}, nil, 0},
		{"unlimited attempts", Policy{MaxAttempts: -1}, repeat(errRefused, 50), 51, nil, nil, 50},
		{"non-retryable returned at once", Policy{Retryable: onlyRefused}, []error{errRefused, errFatal}, 2,
			[]error{errFatal}, []error{ErrExhausted, errRefused}, 1},
		{"context errors not retried by default", Policy{}, []error{wrap(context.Canceled)}, 1,
			[]error{context.Canceled}, []error{ErrExhausted}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			p := tc.p
			p.Clock, p.Rand = c, seeded(3)
			var calls []time.Time
			err := p.Do(context.Background(), script(c, &calls, tc.errs...))
			assert.Len(t, calls, tc.wantCalls)
			assert.Len(t, c.sleeps, tc.sleeps)
			if tc.wantIs == nil {
				assert.NoError(t, err)
			}
			for _, target := range tc.wantIs {
				assert.ErrorIs(t, err, target)
			}
			for _, target := range tc.wantNot {
				assert.NotErrorIs(t, err, target)
			}
			for i, d := range c.sleeps {
				assert.Less(t, d, p.Backoff(i), "sleep %d within its backoff", i)
			}
		})
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func TestDoNonRetryableReturnedAsIs(t *testing.T) {
	errFatal := errors.New("fatal")
	c := newFakeClock()
	p := &Policy{Clock: c, Retryable: func(err error) bool { return false }}
	var calls []time.Time
	err := p.Do(context.Background(), script(c, &calls, errFatal))
	assert.Same(t, errFatal, err, "unwrapped")
	assert.Len(t, calls, 1)
	assert.Empty(t, c.sleeps)
}

// TestDoHintHonoured: the retry after a refusal with a hint comes no
// sooner than the hint, and within the spread after it.
func TestDoHintHonoured(t *testing.T) {
	tests := []struct {
		hint   time.Duration
		lo, hi time.Duration // the second call, after the first
	}{
		{time.Second, time.Second, 1500 * time.Millisecond},
		{100 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}, // base wider than half
		{10 * time.Second, 10 * time.Second, 15 * time.Second},
	}
	for _, tc := range tests {
		for seed := uint64(0); seed < 50; seed++ {
			c := newFakeClock()
			p := &Policy{Base: 100 * time.Millisecond, Cap: time.Minute, Clock: c, Rand: seeded(seed)}
			var calls []time.Time
			var retries []Retry
			p.OnRetry = func(r Retry) { retries = append(retries, r) }
			err := p.Do(context.Background(), script(c, &calls, WithRetryAfter(errRefused, tc.hint)))
			require.NoError(t, err)
			require.Len(t, calls, 2)
			gap := calls[1].Sub(calls[0])
			require.GreaterOrEqual(t, gap, tc.lo, "hint %v seed %d", tc.hint, seed)
			require.Less(t, gap, tc.hi, "hint %v seed %d", tc.hint, seed)
			require.Len(t, retries, 1)
			assert.Equal(t, 1, retries[0].Attempt)
			assert.Equal(t, tc.hint, retries[0].Hint)
			assert.Equal(t, gap, retries[0].Delay)
			assert.ErrorIs(t, retries[0].Err, errRefused)
		}
	}
}

// TestDoDeadline: Do never sleeps past the context's deadline; it gives up
// when the next wait would end after it, at once, with the last error.
func TestDoDeadline(t *testing.T) {
	check := func(t *testing.T, err error, c *fakeClock, deadline time.Time) {
		t.Helper()
		require.ErrorIs(t, err, ErrDeadline)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, errRefused, "the last error is wrapped")
		require.NotErrorIs(t, err, ErrExhausted)
		require.False(t, c.Now().After(deadline), "never slept past the deadline")
	}

	t.Run("a hint past the deadline: no wait at all", func(t *testing.T) {
		c := newFakeClock()
		p := &Policy{Clock: c, Rand: seeded(5)}
		var calls []time.Time
		deadline := t0.Add(3 * time.Second)
		err := p.Do(withFakeDeadline(deadline), script(c, &calls, WithRetryAfter(errRefused, 5*time.Second)))
		check(t, err, c, deadline)
		assert.Len(t, calls, 1)
		assert.Empty(t, c.sleeps)
		assert.Equal(t, t0, c.Now(), "gave up at once")
	})

	t.Run("backoff runs into the deadline", func(t *testing.T) {
		// Waits are drawn from [0, 1 s); Do goes on while each fits.
		for seed := uint64(0); seed < 20; seed++ {
			c := newFakeClock()
			p := &Policy{Base: time.Second, Cap: time.Second, MaxAttempts: -1, Clock: c, Rand: seeded(seed)}
			var calls []time.Time
			deadline := t0.Add(5 * time.Second)
			err := p.Do(withFakeDeadline(deadline), script(c, &calls, repeat(errRefused, 1000)...))
			check(t, err, c, deadline)
			assert.GreaterOrEqual(t, len(calls), 5, "seed %d: five waits under 1 s fit in 5 s", seed)
			assert.Less(t, deadline.Sub(c.Now()), time.Second, "seed %d: gave up only when a wait under 1 s did not fit", seed)
		}
	})

	t.Run("a hint within the deadline, its spread past it", func(t *testing.T) {
		// Waits are in [2 s, 4 s) with a 3 s deadline: some retries fit,
		// the others give up without waiting.
		fit, gaveUp := 0, 0
		for seed := uint64(0); seed < 40; seed++ {
			c := newFakeClock()
			p := &Policy{Base: time.Millisecond, HintSpread: 1, Clock: c, Rand: seeded(seed)}
			var calls []time.Time
			deadline := t0.Add(3 * time.Second)
			err := p.Do(withFakeDeadline(deadline), script(c, &calls, WithRetryAfter(errRefused, 2*time.Second)))
			if err == nil {
				fit++
				require.Len(t, calls, 2)
				require.False(t, calls[1].After(deadline))
				continue
			}
			gaveUp++
			check(t, err, c, deadline)
			require.Len(t, calls, 1)
			require.Equal(t, t0, c.Now())
		}
		assert.Positive(t, fit)
		assert.Positive(t, gaveUp)
	})
}

func TestDoContextEndsDuringWait(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	errShutdown := errors.New("shutting down")
	c := &cancelClock{fakeClock: newFakeClock(), cancel: func() { cancel(errShutdown) }}
	p := &Policy{Clock: c}
	var calls []time.Time
	err := p.Do(ctx, script(c.fakeClock, &calls, errRefused, errRefused))
	require.ErrorIs(t, err, errShutdown, "the context's cause")
	require.ErrorIs(t, err, errRefused, "and the last error")
	assert.Len(t, calls, 1)
}

// cancelClock cancels the context on the first sleep.
type cancelClock struct {
	*fakeClock
	cancel func()
}

func (c *cancelClock) Sleep(ctx context.Context, d time.Duration) error {
	c.cancel()
	return c.fakeClock.Sleep(ctx, d)
}

func TestDoContextDoneBeforeFirstAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := &Policy{Clock: newFakeClock()}
	called := false
	err := p.Do(ctx, func(context.Context) error { called = true; return nil })
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, called)
}

func TestDoContextEndsInOp(t *testing.T) {
	// The op sees the context end and fails with a retryable error: Do
	// stops with the context's error and the op's.
	ctx, cancel := context.WithCancel(context.Background())
	c := newFakeClock()
	p := &Policy{Clock: c}
	calls := 0
	err := p.Do(ctx, func(context.Context) error { calls++; cancel(); return errRefused })
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, errRefused)
	assert.Equal(t, 1, calls)
	assert.Empty(t, c.sleeps)
}

func TestNilPolicyTriesOnce(t *testing.T) {
	var p *Policy
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error { calls++; return errRefused })
	assert.Same(t, errRefused, err)
	assert.Equal(t, 1, calls)
}

func TestDoValue(t *testing.T) {
	c := newFakeClock()
	p := &Policy{Clock: c, Rand: seeded(4)}
	n := 0
	v, err := DoValue(context.Background(), p, func(context.Context) (string, error) {
		n++
		if n < 3 {
			return "partial", errRefused
		}
		return "conn", nil
	})
	require.NoError(t, err)
	assert.Equal(t, "conn", v)
	assert.Len(t, c.sleeps, 2)

	v, err = DoValue(context.Background(), &Policy{Clock: c, MaxAttempts: 2},
		func(context.Context) (string, error) { return "partial", errRefused })
	require.ErrorIs(t, err, ErrExhausted)
	assert.Empty(t, v, "the zero value with an error")
}

// TestNoLockStep: 100 clients refused at the same instant with the same
// 1 s hint retry no sooner than the hint, and spread out: not in
// lock-step. Each client has its own policy and source, as separate
// processes would; the same holds for one policy shared by all.
func TestNoLockStep(t *testing.T) {
	const (
		clients = 100
		hint    = time.Second
		bucket  = 10 * time.Millisecond
	)
	shared := &Policy{Base: 100 * time.Millisecond, Cap: 10 * time.Second, Rand: seeded(99)}
	for _, mode := range []string{"a policy each", "one shared policy"} {
		t.Run(mode, func(t *testing.T) {
			buckets := map[int64]int{}
			var first, last time.Duration = time.Hour, 0
			for i := 0; i < clients; i++ {
				c := newFakeClock()
				p := &Policy{Base: 100 * time.Millisecond, Cap: 10 * time.Second, Rand: seeded(uint64(i)), Clock: c}
				if mode != "a policy each" {
					shared.Clock = c
					p = shared
				}
				var calls []time.Time
				// The server refuses everyone's first open at t0.
				require.NoError(t, p.Do(context.Background(), script(c, &calls, WithRetryAfter(errRefused, hint))))
				require.Len(t, calls, 2)
				at := calls[1].Sub(t0)
				require.GreaterOrEqual(t, at, hint, "client %d retried before the hint", i)
				buckets[int64(at/bucket)]++
				first, last = min(first, at), max(last, at)
			}
			most := 0
			for _, n := range buckets {
				most = max(most, n)
			}
			t.Logf("%d clients: retries from %v to %v, in %d buckets of %v, at most %d in one",
				clients, first, last, len(buckets), bucket, most)
			// Spread uniformly over [1 s, 1.5 s): 50 buckets, 2 a bucket on
			// average. In lock-step all 100 would share one bucket.
			assert.GreaterOrEqual(t, len(buckets), 35, "distinct 10 ms buckets")
			assert.LessOrEqual(t, most, 7, "most retries in one 10 ms bucket")
			assert.Greater(t, last-first, 400*time.Millisecond, "spread over most of half the hint")
		})
	}
}

// TestLockStepWithoutSpread is the control for TestNoLockStep: with the
// hint's spread turned off and a negligible backoff, the same 100 clients
// do return in lock-step, all in one 10 ms bucket.
func TestLockStepWithoutSpread(t *testing.T) {
	buckets := map[int64]int{}
	for i := 0; i < 100; i++ {
		c := newFakeClock()
		p := &Policy{Base: time.Nanosecond, HintSpread: -1, Rand: seeded(uint64(i)), Clock: c}
		var calls []time.Time
		require.NoError(t, p.Do(context.Background(), script(c, &calls, WithRetryAfter(errRefused, time.Second))))
		buckets[int64(calls[1].Sub(t0)/(10*time.Millisecond))]++
	}
	assert.Equal(t, map[int64]int{100: 100}, buckets)
}

// TestConcurrentUse: one policy, with its default source and clock, used
// by many goroutines at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	p := &Policy{Base: time.Microsecond, Cap: 10 * time.Microsecond, MaxAttempts: 4}
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			errs[i] = p.Do(context.Background(), func(context.Context) error {
				n++
				if n < 3 {
					return errRefused
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		assert.NoError(t, err)
	}

	// A seeded source shared by goroutines, made safe by Locked.
	p.Rand = Locked(seeded(6))
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Do(context.Background(), func(context.Context) error { return errRefused })
		}()
	}
	wg.Wait()
	for _, err := range errs {
		assert.ErrorIs(t, err, ErrExhausted)
	}
}
