package mux

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/bpmux/bp/breaker"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/retry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// request opens a stream, sends msg and reads the echo: the error of a
// refused stream carries the peer's hint.
func request(ctx context.Context, sess *Session, msg string) error {
	s, err := sess.Open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := io.WriteString(s, msg); err != nil {
		return err
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return errors.New("wrong echo")
	}
	return nil
}

// TestStreamRateRefusesWithHint: streams over the server's admission rate
// are refused with REFUSED_STREAM and a retry-after hint the opener's
// error carries; a retry that honours it lands after it, and is admitted.
func TestStreamRateRefusesWithHint(t *testing.T) {
	const rate = 2 // a token every 500 ms
	p := newPair(t, nil, &Config{StreamRate: rate, StreamBurst: 1})
	echoServer(p.server)
	ctx := ctxT(t)
	require.NoError(t, request(ctx, p.client, "first"), "the burst admits one")

	err := request(ctx, p.client, "second")
	require.Error(t, err)
	refusedAt := time.Now()
	var se *StreamError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, framing.RefusedStream, se.Code)
	assert.ErrorIs(t, err, ErrStreamRefused)
	var hinted interface{ RetryAfter() time.Duration }
	require.ErrorAs(t, err, &hinted)
	hint := hinted.RetryAfter()
	assert.Greater(t, hint, time.Duration(0))
	assert.LessOrEqual(t, hint, time.Second/rate+time.Millisecond, "at most one token's time")
	t.Logf("refused with a hint of %v: %v", hint, err)

	// A retry policy honours the hint: its first retry waits at least it.
	var retries []retry.Retry
	policy := &retry.Policy{Base: time.Millisecond, Cap: 50 * time.Millisecond, MaxAttempts: 10,
		Retryable: func(err error) bool { return errors.Is(err, ErrStreamRefused) },
		OnRetry:   func(r retry.Retry) { retries = append(retries, r) }}
	var landed time.Time
	err = policy.Do(ctx, func(ctx context.Context) error {
		err := request(ctx, p.client, "retried")
		if err == nil {
			landed = time.Now()
		}
		return err
	})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, landed.Sub(refusedAt), hint-10*time.Millisecond, "the retry lands after the hint")
	for _, r := range retries {
		assert.GreaterOrEqual(t, r.Delay, r.Hint, "every wait honours its hint")
	}
	// Session.Try does the same, given the policy.
	require.Error(t, request(ctx, p.client, "refused again"))
	tries := 0
	err = p.client.Try(ctx, policy, StreamOptions{}, func(ctx context.Context, s *Stream) error {
		tries++
		if _, err := io.WriteString(s, "tried"); err != nil {
			return err
		}
		s.CloseWrite()
		got, err := io.ReadAll(s)
		if err == nil && string(got) != "tried" {
			err = errors.New("wrong echo")
		}
		return err
	})
	require.NoError(t, err)
	assert.Greater(t, tries, 1, "the first try was refused")
	notRefused := errors.New("not a refusal")
	tries = 0
	err = p.client.Try(ctx, policy, StreamOptions{}, func(context.Context, *Stream) error { tries++; return notRefused })
	assert.ErrorIs(t, err, notRefused)
	assert.Equal(t, 1, tries, "only refusals are tried again")

	st := p.server.Stats()
	assert.Positive(t, st.StreamsRateRefused)
	assert.GreaterOrEqual(t, st.StreamsRefused, st.StreamsRateRefused)
}

// TestStreamRateOff: a negative StreamRate admits any number of streams
// at once.
func TestStreamRateOff(t *testing.T) {
	p := newPair(t, nil, &Config{StreamRate: -1, StreamBurst: 1})
	echoServer(p.server)
	for i := range 50 {
		require.NoError(t, request(ctxT(t), p.client, "x"), "stream %d", i)
	}
	assert.Zero(t, p.server.Stats().StreamsRateRefused)
}

// TestBreakerOpensFailsFastHalfOpensCloses: refusals open the client's
// breaker, Open then fails fast with ErrOverloaded and a hint, and after
// the cool-down a trial stream the peer admits closes it again.
func TestBreakerOpensFailsFastHalfOpensCloses(t *testing.T) {
	var clientLog eventLog
	const coolDown = 300 * time.Millisecond
	client := &Config{OnEvent: clientLog.hook, Breaker: &BreakerConfig{
		Breaker: breaker.Config{FailureThreshold: 3, CoolDown: coolDown},
	}}
	p := newPair(t, client, &Config{StreamRate: 2, StreamBurst: 1}) // a token every 500 ms
	echoServer(p.server)
	ctx := ctxT(t)
	require.NoError(t, request(ctx, p.client, "admitted"))
	for i := range 3 {
		err := request(ctx, p.client, "refused")
		require.ErrorIs(t, err, ErrStreamRefused, "request %d", i)
	}
	waitFor(t, "the breaker to open", func() bool { return p.client.Stats().Breaker == "open" })

	_, err := p.client.Open(ctx)
	require.ErrorIs(t, err, ErrOverloaded)
	require.ErrorIs(t, err, breaker.ErrOpen)
	var hinted interface{ RetryAfter() time.Duration }
	require.ErrorAs(t, err, &hinted)
	assert.Greater(t, hinted.RetryAfter(), time.Duration(0))
	assert.LessOrEqual(t, hinted.RetryAfter(), coolDown)
	assert.Equal(t, uint64(1), p.client.Stats().OpensFailedFast)

	// After the cool-down, and once the server has a token again, a trial
	// goes through and closes the breaker.
	time.Sleep(600 * time.Millisecond)
	require.NoError(t, request(ctx, p.client, "trial"))
	waitFor(t, "the breaker to close", func() bool { return p.client.Stats().Breaker == "closed" })
	st, ok := p.client.BreakerStats()
	require.True(t, ok)
	assert.Equal(t, breaker.Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToClosed: 1}, st.Transitions)
	var states []string
	for _, ev := range clientLog.of(EventBreaker, 0) {
		states = append(states, breaker.State(ev.Limit).String()+"->"+breaker.State(ev.Value).String())
	}
	assert.Equal(t, []string{"closed->open", "open->half-open", "half-open->closed"}, states)
}

// TestBreakerTripsOnStalls: enough of this side's streams stalled for
// credit long enough trip the breaker.
func TestBreakerTripsOnStalls(t *testing.T) {
	const window = DefaultInitialWindow
	fixed := &Config{InitialWindow: window, MaxWindow: window}
	client := *fixed
	client.Breaker = &BreakerConfig{Stalled: 2, StalledFor: 200 * time.Millisecond, Breaker: breaker.Config{CoolDown: time.Minute}}
	p := newPair(t, &client, fixed)
	for range 2 { // the server accepts but never reads
		c, _ := p.openPair(t)
		go c.Write(make([]byte, 4*window))
	}
	waitFor(t, "the breaker to trip", func() bool { return p.client.Stats().Breaker == "open" })
	_, err := p.client.Open(ctxT(t))
	require.ErrorIs(t, err, ErrOverloaded)
}

// TestPriorityUnderBudgetPressure: with a budget that cannot hold both
// windows, the least urgent stream stops growing first while the most
// urgent one keeps growing.
//
// The least urgent stream starts alone, so that it asks to grow while the
// budget still has room beyond its share: a refusal for its priority. Had
// both started together, the urgent one could take the whole budget before
// the other asked, and its refusals would be for the budget alone.
func TestPriorityUnderBudgetPressure(t *testing.T) {
	const budget = 2 << 20
	p := newPair(t, nil, &Config{InitialWindow: DefaultInitialWindow, MaxWindow: budget, SessionBudget: budget})
	cLow, sLow := p.openPair(t)
	cHigh, sHigh := p.openPair(t)
	sLow.SetPriority(Priority{Urgency: 7})
	sHigh.SetPriority(Priority{Urgency: 0})
	assert.Equal(t, Priority{Urgency: 7}, sLow.Priority())
	readAll := func(s *Stream) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, s)
			done <- err
		}()
		return done
	}
	doneLow, readLow := writeInBackground(cLow, 64<<20), readAll(sLow)
	waitFor(t, "the low stream's growth to be refused for its priority", func() bool {
		return p.server.Stats().PriorityRefusals > 0
	})
	doneHigh, readHigh := writeInBackground(cHigh, 64<<20), readAll(sHigh)
	for _, ch := range []<-chan error{doneLow, doneHigh, readLow, readHigh} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-time.After(2 * time.Minute):
			t.Fatal("the transfers did not finish")
		}
	}
	low, high := sLow.Stats(), sHigh.Stats()
	st := p.server.Stats()
	t.Logf("windows: low %d, high %d; budget refusals %d, for priority %d", low.RecvWindow, high.RecvWindow, st.BudgetRefusals, st.PriorityRefusals)
	// Urgency 7 grows only while the session uses at most 1/8 of the
	// budget; urgency 0 into all of it.
	assert.LessOrEqual(t, low.RecvWindow, uint64(budget/8))
	assert.Greater(t, high.RecvWindow, 2*low.RecvWindow, "the urgent stream kept growing")
	assert.LessOrEqual(t, st.BudgetUsed, st.BudgetTotal)
}
