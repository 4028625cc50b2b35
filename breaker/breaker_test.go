package breaker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1_000_000, 0)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestStateString(t *testing.T) {
	assert.Equal(t, "closed", Closed.String())
	assert.Equal(t, "open", Open.String())
	assert.Equal(t, "half-open", HalfOpen.String())
	assert.Equal(t, "State(7)", State(7).String())
}

func TestNew(t *testing.T) {
	b, err := New(Config{})
	require.NoError(t, err)
	assert.Equal(t, DefaultFailureThreshold, b.cfg.FailureThreshold)
	assert.Equal(t, DefaultCoolDown, b.cfg.CoolDown)
	assert.Equal(t, DefaultHalfOpenTrials, b.cfg.HalfOpenTrials)
	assert.Equal(t, DefaultSuccessesToClose, b.cfg.SuccessesToClose)
	assert.Equal(t, Closed, b.State())

	for _, cfg := range []Config{
		{FailureThreshold: -1},
		{Window: -time.Second},
		{CoolDown: -time.Second},
		{HalfOpenTrials: -1},
		{SuccessesToClose: -1},
		{HalfOpenTrials: 2, SuccessesToClose: 3},
		{SuccessesToClose: 2}, // one trial by default
	} {
		_, err := New(cfg)
		assert.Error(t, err, "%+v", cfg)
	}
	_, err = New(Config{HalfOpenTrials: 3, SuccessesToClose: 3})
	assert.NoError(t, err)
}

// A step of a scenario: an operation, then the state it must leave.
type step struct {
	op    string        // allow, refuse, ok, fail, trip, wait
	d     time.Duration // wait: how long; refuse: the RetryIn wanted
	state State
	// refuse: the state the refusal names
	refusedIn State
}

func allow(s State) step                    { return step{op: "allow", state: s} }
func refuse(s State, in time.Duration) step { return step{op: "refuse", d: in, state: s, refusedIn: s} }
func ok(s State) step                       { return step{op: "ok", state: s} }
func fail(s State) step                     { return step{op: "fail", state: s} }
func trip() step                            { return step{op: "trip", state: Open} }
func wait(d time.Duration, s State) step    { return step{op: "wait", d: d, state: s} }

func TestTransitions(t *testing.T) {
	const cool = 10 * time.Second
	base := Config{FailureThreshold: 3, CoolDown: cool}
	// opened makes a breaker of base open with three failures.
	opened := []step{allow(Closed), fail(Closed), allow(Closed), fail(Closed), allow(Closed), fail(Open)}
	halfOpened := append(append([]step{}, opened...), wait(cool, HalfOpen))
	cat := func(parts ...[]step) []step {
		var out []step
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		want  []string // the transitions the callback saw
		count Transitions
	}{
		{
			name:  "consecutive failures open",
			cfg:   base,
			steps: cat(opened, []step{refuse(Open, cool), refuse(Open, cool)}),
			want:  []string{"closed→open (failure threshold)"},
			count: Transitions{ClosedToOpen: 1},
		},
		{
			name: "a success resets the count",
			cfg:  base,
			steps: []step{
				allow(Closed), fail(Closed), allow(Closed), fail(Closed), allow(Closed), ok(Closed),
				allow(Closed), fail(Closed), allow(Closed), fail(Closed), allow(Closed), fail(Open),
			},
			want:  []string{"closed→open (failure threshold)"},
			count: Transitions{ClosedToOpen: 1},
		},
		{
			name: "failures within a window",
			cfg:  Config{FailureThreshold: 3, Window: 10 * time.Second, CoolDown: cool},
			steps: []step{
				fail(Closed), wait(6*time.Second, Closed), // t=0
				fail(Closed), wait(6*time.Second, Closed), // t=6
				fail(Closed),                            // t=12: t=0 is out of the window
				ok(Closed),                              // successes do not reset a window
				wait(1*time.Second, Closed), fail(Open), // t=13: 6, 12, 13 within 10 s
			},
			want:  []string{"closed→open (failure threshold)"},
			count: Transitions{ClosedToOpen: 1},
		},
		{
			name: "window boundary is inclusive",
			cfg:  Config{FailureThreshold: 2, Window: 10 * time.Second, CoolDown: cool},
			steps: []step{
				fail(Closed), wait(10*time.Second+1, Closed), fail(Closed), // just outside
				wait(10*time.Second, Closed), fail(Open), // exactly 10 s apart
			},
			want:  []string{"closed→open (failure threshold)"},
			count: Transitions{ClosedToOpen: 1},
		},
		{
			name: "cool-down half-opens; a trial success closes",
			cfg:  base,
			steps: cat(opened, []step{
				wait(cool-1, Open), refuse(Open, 1), wait(1, HalfOpen),
				allow(HalfOpen), refuse(HalfOpen, 0), ok(Closed), allow(Closed),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→closed (trial succeeded)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToClosed: 1},
		},
		{
			name: "a trial failure reopens for a whole cool-down",
			cfg:  base,
			steps: cat(halfOpened, []step{
				allow(HalfOpen), fail(Open), refuse(Open, cool),
				wait(cool, HalfOpen), allow(HalfOpen), ok(Closed),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→open (trial failed)", "open→half-open (cool-down over)",
				"half-open→closed (trial succeeded)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 2, HalfOpenToOpen: 1, HalfOpenToClosed: 1},
		},
		{
			name: "several trials, two successes to close",
			cfg:  Config{FailureThreshold: 3, CoolDown: cool, HalfOpenTrials: 3, SuccessesToClose: 2},
			steps: cat(halfOpened, []step{
				allow(HalfOpen), allow(HalfOpen), allow(HalfOpen), refuse(HalfOpen, 0),
				ok(HalfOpen), refuse(HalfOpen, 0), ok(Closed),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→closed (trial succeeded)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToClosed: 1},
		},
		{
			name: "a failing trial after a successful one reopens",
			cfg:  Config{FailureThreshold: 3, CoolDown: cool, HalfOpenTrials: 2, SuccessesToClose: 2},
			steps: cat(halfOpened, []step{
				allow(HalfOpen), allow(HalfOpen), ok(HalfOpen), fail(Open), refuse(Open, cool),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→open (trial failed)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToOpen: 1},
		},
		{
			name: "unreported trials are forgotten after a cool-down",
			cfg:  base,
			steps: cat(halfOpened, []step{
				allow(HalfOpen), wait(cool-1, HalfOpen), refuse(HalfOpen, 0),
				wait(1, HalfOpen), allow(HalfOpen), refuse(HalfOpen, 0), ok(Closed),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→closed (trial succeeded)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToClosed: 1},
		},
		{
			name: "reports while open change nothing",
			cfg:  base,
			steps: cat(opened, []step{
				wait(time.Second, Open), ok(Open), fail(Open), refuse(Open, cool-time.Second),
			}),
			want:  []string{"closed→open (failure threshold)"},
			count: Transitions{ClosedToOpen: 1},
		},
		{
			name: "trip from closed, from half-open, and while open",
			cfg:  base,
			steps: []step{
				allow(Closed), trip(), refuse(Open, cool),
				wait(cool, HalfOpen), trip(), refuse(Open, cool),
				wait(cool/2, Open), trip(), refuse(Open, cool), // restarts the cool-down
				wait(cool/2, Open), wait(cool/2, HalfOpen), allow(HalfOpen), ok(Closed),
			},
			want: []string{
				"closed→open (tripped)", "open→half-open (cool-down over)", "half-open→open (tripped)",
				"open→half-open (cool-down over)", "half-open→closed (trial succeeded)",
			},
			count: Transitions{ClosedToOpen: 1, OpenToHalfOpen: 2, HalfOpenToOpen: 1, HalfOpenToClosed: 1},
		},
		{
			name: "closing resets the failure count",
			cfg:  base,
			steps: cat(halfOpened, []step{
				allow(HalfOpen), ok(Closed),
				allow(Closed), fail(Closed), allow(Closed), fail(Closed), allow(Closed), fail(Open),
			}),
			want: []string{
				"closed→open (failure threshold)", "open→half-open (cool-down over)",
				"half-open→closed (trial succeeded)", "closed→open (failure threshold)",
			},
			count: Transitions{ClosedToOpen: 2, OpenToHalfOpen: 1, HalfOpenToClosed: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var seen []string
			cfg := tc.cfg
			cfg.Now = clock.Now
			cfg.OnStateChange = func(tr Transition) {
				seen = append(seen, fmt.Sprintf("%v→%v (%s)", tr.From, tr.To, tr.Reason))
			}
			b, err := New(cfg)
			require.NoError(t, err)
			for i, s := range tc.steps {
				switch s.op {
				case "allow":
					require.NoError(t, b.Allow(), "step %d", i)
				case "refuse":
					err := b.Allow()
					require.ErrorIs(t, err, ErrOpen, "step %d", i)
					var oe *OpenError
					require.ErrorAs(t, err, &oe)
					assert.Equal(t, s.refusedIn, oe.State, "step %d", i)
					assert.Equal(t, s.d, oe.RetryIn, "step %d", i)
					assert.Equal(t, s.d, oe.RetryAfter(), "step %d", i)
				case "ok":
					b.Success()
				case "fail":
					b.Failure()
				case "trip":
					b.Trip()
				case "wait":
					clock.Add(s.d)
				}
				require.Equal(t, s.state, b.State(), "step %d (%s)", i, s.op)
			}
			assert.Equal(t, tc.want, seen)
			assert.Equal(t, tc.count, b.Stats().Transitions)
		})
	}
}

// TestStats checks every count, and the time in each state, exactly. The
// move to HalfOpen is dated to the end of the cool-down though it is
// noticed later.
func TestStats(t *testing.T) {
	clock := newFakeClock()
	var transitions []Transition
	b, err := New(Config{FailureThreshold: 2, CoolDown: 5 * time.Second, Now: clock.Now,
		OnStateChange: func(tr Transition) { transitions = append(transitions, tr) }})
	require.NoError(t, err)

	clock.Add(3 * time.Second) // closed 3 s
	require.NoError(t, b.Allow())
	b.Failure()
	require.NoError(t, b.Allow())
	b.Failure() // open at t0+3s
	assert.Equal(t, 1, len(transitions))
	assert.Equal(t, 0, b.Stats().Failing, "the count restarts on opening")
	for i := 0; i < 4; i++ {
		require.ErrorIs(t, b.Allow(), ErrOpen)
	}
	clock.Add(8 * time.Second)    // the cool-down ended at t0+8s, noticed at t0+11s
	require.NoError(t, b.Allow()) // trial
	b.Success()                   // closed at t0+11s
	clock.Add(2 * time.Second)    // closed 2 s more
	require.NoError(t, b.Allow()) // 4th allowed
	b.Failure()                   // 1 failing

	s := b.Stats()
	assert.Equal(t, Stats{
		State:        Closed,
		Since:        t0.Add(11 * time.Second),
		Transitions:  Transitions{ClosedToOpen: 1, OpenToHalfOpen: 1, HalfOpenToClosed: 1},
		Allowed:      4,
		Refused:      4,
		Successes:    1,
		Failures:     3,
		Failing:      1,
		TimeClosed:   5 * time.Second,
		TimeOpen:     5 * time.Second,
		TimeHalfOpen: 3 * time.Second,
	}, s)
	require.Len(t, transitions, 3)
	assert.Equal(t, Transition{From: Open, To: HalfOpen, At: t0.Add(8 * time.Second), Reason: "cool-down over"}, transitions[1])
	assert.Equal(t, t0.Add(3*time.Second), transitions[0].At)
	assert.Equal(t, t0.Add(11*time.Second), transitions[2].At)
}

func TestStatsWindowFailing(t *testing.T) {
	clock := newFakeClock()
	b, err := New(Config{FailureThreshold: 5, Window: 10 * time.Second, Now: clock.Now})
	require.NoError(t, err)
	for i := 0; i < 4; i++ {
		b.Failure()
		clock.Add(4 * time.Second)
	}
	// Failures at 0, 4, 8, 12; now 16: 8 and 12 are within 10 s.
	assert.Equal(t, 2, b.Stats().Failing)
	assert.Equal(t, Closed, b.State())
}

// TestCallbackWithoutLock: the callback may call the breaker, even make it
// change state again; every transition is delivered, in order.
func TestCallbackWithoutLock(t *testing.T) {
	clock := newFakeClock()
	var (
		b    *Breaker
		err  error
		seen []string
	)
	b, err = New(Config{FailureThreshold: 1, CoolDown: time.Second, Now: clock.Now,
		OnStateChange: func(tr Transition) {
			seen = append(seen, fmt.Sprintf("%v→%v", tr.From, tr.To))
			_ = b.Stats() // would deadlock if the lock were held
			if tr.To == HalfOpen {
				// A trial, from inside the callback, that fails: the
				// reopening is delivered after this call returns.
				require.NoError(t, b.Allow())
				b.Failure()
				seen = append(seen, "callback returns")
			}
		}})
	require.NoError(t, err)
	b.Failure()
	clock.Add(time.Second)
	assert.Equal(t, HalfOpen, b.State(), "the state as this call found it")
	assert.Equal(t, Open, b.State(), "then reopened by the callback")
	assert.Equal(t, []string{"closed→open", "open→half-open", "callback returns", "half-open→open"}, seen)
}

func TestCallbackPanicDoesNotWedge(t *testing.T) {
	clock := newFakeClock()
	var seen []Transition
	b, err := New(Config{FailureThreshold: 1, CoolDown: time.Second, Now: clock.Now,
		OnStateChange: func(tr Transition) {
			seen = append(seen, tr)
			if len(seen) == 1 {
				panic("callback failed")
			}
		}})
	require.NoError(t, err)
	assert.Panics(t, b.Failure)
	assert.Equal(t, Open, b.State(), "the lock was released")
	clock.Add(time.Second)
	assert.Equal(t, HalfOpen, b.State())
	require.Len(t, seen, 2, "later transitions are still delivered")
	assert.Equal(t, HalfOpen, seen[1].To)
}

// TestConcurrent hammers one breaker from many goroutines (run with
// -race) and checks that the counts add up and that the callback saw one
// consistent chain of transitions.
func TestConcurrent(t *testing.T) {
	clock := newFakeClock()
	var (
		mu    sync.Mutex
		chain []Transition
		inCB  atomic.Int32
		b     *Breaker
		err   error
	)
	b, err = New(Config{FailureThreshold: 3, CoolDown: 10 * time.Millisecond, HalfOpenTrials: 2, SuccessesToClose: 2,
		Now: clock.Now,
		OnStateChange: func(tr Transition) {
			if inCB.Add(1) != 1 {
				t.Error("callbacks overlap")
			}
			mu.Lock()
			chain = append(chain, tr)
			mu.Unlock()
			_ = b.State()
			inCB.Add(-1)
		}})
	require.NoError(t, err)

	const (
		workers = 8
		calls   = 2000
	)
	var allowed, refused atomic.Uint64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				if i%50 == 0 {
					clock.Add(3 * time.Millisecond)
				}
				if err := b.Allow(); err != nil {
					if !errors.Is(err, ErrOpen) {
						t.Errorf("Allow: %v", err)
					}
					refused.Add(1)
					continue
				}
				allowed.Add(1)
				// Phases of a failing peer and a healthy one.
				if (i/100)%2 == 0 {
					b.Failure()
				} else {
					b.Success()
				}
			}
		}()
	}
	wg.Wait()
	s := b.Stats()
	assert.Equal(t, uint64(workers*calls), s.Allowed+s.Refused)
	assert.Equal(t, allowed.Load(), s.Allowed)
	assert.Equal(t, refused.Load(), s.Refused)
	assert.Equal(t, s.Allowed, s.Successes+s.Failures)
	tr := s.Transitions
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, tr.ClosedToOpen+tr.OpenToHalfOpen+tr.HalfOpenToClosed+tr.HalfOpenToOpen, uint64(len(chain)))
	assert.Positive(t, tr.ClosedToOpen, "the scenario opened the breaker")
	assert.Positive(t, tr.HalfOpenToClosed, "and closed it again")
	prev := Closed
	for i, c := range chain {
		assert.Equal(t, prev, c.From, "transition %d follows the previous one", i)
		prev = c.To
	}
	assert.Equal(t, s.State, prev)
}
