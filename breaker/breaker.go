// Package breaker is a circuit breaker: it stops calling a peer that keeps
// failing (for bp/1, a peer that refuses streams or leaves them stalled),
// so that callers fail fast instead of queueing, and it lets a few trial
// calls through after a cool-down to learn whether the peer recovered.
//
//	         failures reach the threshold, or Trip
//	Closed ────────────────────────────────────────▶ Open
//	  ▲                                             │  ▲
//	  │ SuccessesToClose trial successes   CoolDown │  │ a trial fails, or Trip
//	  │                                             ▼  │
//	  └──────────────────────────────────────────  HalfOpen
//
// It is pure logic: no goroutines and no timers. Time comes from an
// injectable clock, and the move from Open to HalfOpen happens when the
// breaker is next used after the cool-down, dated to the moment the
// cool-down ended. A Breaker is safe for concurrent use.
//
// The caller asks [Breaker.Allow] before each call and reports its outcome
// with [Breaker.Success] or [Breaker.Failure]. Reports are not tied to the
// call they came from: in HalfOpen, any success counts toward closing and
// any failure reopens, and reports while Open are counted but change
// nothing.
package breaker

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// State is the state of a breaker.
type State uint8

// The states of a breaker.
const (
	// Closed: calls are allowed; failures are counted.
	Closed State = iota
	// Open: calls are refused until the cool-down ends.
	Open
	// HalfOpen: a limited number of trial calls are allowed; their
	// outcome closes or reopens the breaker.
	HalfOpen
)

// String returns "closed", "open" or "half-open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ErrOpen is matched (errors.Is) by every refusal of [Breaker.Allow].
var ErrOpen = errors.New("breaker: circuit open")

// OpenError is the error of a refused call. It matches [ErrOpen].
type OpenError struct {
	// State is Open, or HalfOpen when all its trial calls are out.
	State State
	// RetryIn is the time until the breaker half-opens; zero in HalfOpen,
	// where a trial slot frees up when a trial reports.
	RetryIn time.Duration
}

// Error describes the refusal.
func (e *OpenError) Error() string {
	if e.State == HalfOpen {
		return "breaker: circuit half-open, trial calls all taken"
	}
	return fmt.Sprintf("breaker: circuit open, half-open in %v", e.RetryIn)
}

// Is makes the error match [ErrOpen].
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// RetryAfter returns RetryIn: a refusal is a retry-after hint, which
// github.com/bpmux/bp/retry honours.
func (e *OpenError) RetryAfter() time.Duration { return e.RetryIn }

// Defaults for the zero fields of a Config.
const (
	DefaultFailureThreshold = 5
	DefaultCoolDown         = 2 * time.Second
	DefaultHalfOpenTrials   = 1
	DefaultSuccessesToClose = 1
)

// Config sets a breaker's policy. Zero fields take the defaults above.
type Config struct {
	// FailureThreshold is how many failures open the breaker: in a row,
	// or, if Window is set, within Window whatever successes came
	// between them.
	FailureThreshold int
	// Window, if positive, counts failures within a sliding window of
	// that length rather than consecutive failures.
	Window time.Duration
	// CoolDown is how long the breaker stays Open before it half-opens.
	// It also bounds how long a half-open breaker waits for trials that
	// never report: after CoolDown in HalfOpen with every trial out and
	// undecided, a new set of trials is let through, so a lost report
	// cannot wedge the breaker.
	CoolDown time.Duration
	// HalfOpenTrials is how many trial calls HalfOpen lets through.
	HalfOpenTrials int
	// SuccessesToClose is how many trial successes close the breaker
	// again; at most HalfOpenTrials.
	SuccessesToClose int
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// OnStateChange, if set, is called after every transition, without
	// the breaker's lock held, so it may call the breaker. Calls are made
	// one at a time, in the order of the transitions; a transition made
	// while another goroutine is running the callback is delivered by that
	// goroutine, after the callback it is running returns. It should not
	// block.
	OnStateChange func(Transition)
}

// Transition is a change of state.
type Transition struct {
	From, To State
	// At is when the transition happened. For Open to HalfOpen, it is
	// when the cool-down ended, even if the breaker noticed later.
	At time.Time
	// Reason says why, for logs and events: "failure threshold",
	// "tripped", "cool-down over", "trial failed", "trial succeeded".
	Reason string
}

// Transitions counts the transitions of a breaker, ever.
type Transitions struct {
	ClosedToOpen     uint64
	OpenToHalfOpen   uint64
	HalfOpenToClosed uint64
	HalfOpenToOpen   uint64
}

// Stats is a snapshot of a breaker.
type Stats struct {
	State State
	// Since is when the breaker entered State (for Open, when it was
	// last tripped, since Trip restarts the cool-down).
	Since time.Time
	// Transitions counts every transition so far.
	Transitions Transitions
	// Allowed and Refused count the answers of Allow.
	Allowed, Refused uint64
	// Successes and Failures count the reports.
	Successes, Failures uint64
	// Failing is the failures counted toward the threshold now: in a row,
	// or within the window.
	Failing int
	// TimeClosed, TimeOpen and TimeHalfOpen are the total time spent in
	// each state, up to the snapshot.
	TimeClosed, TimeOpen, TimeHalfOpen time.Duration
}

// Breaker is a circuit breaker. Create one with New.
type Breaker struct {
	cfg Config

	mu    sync.Mutex
	state State
	since time.Time

	// Closed: consecutive failures, or the times of the latest failures
	// in a ring of FailureThreshold (with Window).
	consecutive int
	fails       []time.Time
	nfails      int // valid entries in fails
	nextFail    int // where the next failure goes

	// HalfOpen: trials let through and successes of the current set.
	trials, successes int
	trialsSince       time.Time

	stats  Stats
	timeIn [3]time.Duration

	pending    []Transition
	delivering bool
}

// New returns a closed breaker. It fails if a field of cfg is negative or
// SuccessesToClose exceeds HalfOpenTrials.
func New(cfg Config) (*Breaker, error) {
	if cfg.FailureThreshold < 0 || cfg.Window < 0 || cfg.CoolDown < 0 ||
		cfg.HalfOpenTrials < 0 || cfg.SuccessesToClose < 0 {
		return nil, fmt.Errorf("breaker: invalid config: negative field in %+v", cfg)
	}
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.CoolDown == 0 {
		cfg.CoolDown = DefaultCoolDown
	}
	if cfg.HalfOpenTrials == 0 {
		cfg.HalfOpenTrials = DefaultHalfOpenTrials
	}
	if cfg.SuccessesToClose == 0 {
		cfg.SuccessesToClose = DefaultSuccessesToClose
	}
	if cfg.SuccessesToClose > cfg.HalfOpenTrials {
		return nil, fmt.Errorf("breaker: invalid config: %d successes to close with %d half-open trials",
			cfg.SuccessesToClose, cfg.HalfOpenTrials)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Breaker{cfg: cfg, state: Closed, since: cfg.Now()}
	if cfg.Window > 0 {
		b.fails = make([]time.Time, cfg.FailureThreshold)
	}
	return b, nil
}

// Allow reports whether a call may go ahead: nil, or an [*OpenError]
// matching [ErrOpen]. A call that is allowed must be reported with
// Success or Failure.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	now := b.advance()
	var err error
	switch b.state {
	case Open:
		err = &OpenError{State: Open, RetryIn: max(b.since.Add(b.cfg.CoolDown).Sub(now), 0)}
	case HalfOpen:
		if b.trials >= b.cfg.HalfOpenTrials && now.Sub(b.trialsSince) >= b.cfg.CoolDown {
			// The trials went unreported for a cool-down: forget them.
			b.trials, b.successes, b.trialsSince = 0, 0, now
		}
		if b.trials < b.cfg.HalfOpenTrials {
			b.trials++
		} else {
			err = &OpenError{State: HalfOpen}
		}
	}
	if err != nil {
		b.stats.Refused++
	} else {
		b.stats.Allowed++
	}
	b.unlockAndNotify()
	return err
}

// Success reports a call that succeeded.
func (b *Breaker) Success() {
	b.mu.Lock()
	now := b.advance()
	b.stats.Successes++
	switch b.state {
	case Closed:
		b.consecutive = 0
	case HalfOpen:
		b.successes++
		if b.successes >= b.cfg.SuccessesToClose {
			b.transition(Closed, now, "trial succeeded")
		}
	}
	b.unlockAndNotify()
}

// Failure reports a call that failed in a way that counts against the
// peer (refused, overloaded, timed out): not the caller's own mistakes.
func (b *Breaker) Failure() {
	b.mu.Lock()
	now := b.advance()
	b.stats.Failures++
	switch b.state {
	case Closed:
		if b.countFailure(now) {
			b.transition(Open, now, "failure threshold")
		}
	case HalfOpen:
		b.transition(Open, now, "trial failed")
	}
	b.unlockAndNotify()
}

// Trip opens the breaker at once, whatever its state, for a condition
// seen outside single calls (for bp/1: many streams stalled beyond a
// threshold for longer than a period). Tripping an open breaker restarts
// its cool-down.
func (b *Breaker) Trip() {
	b.mu.Lock()
	now := b.advance()
	if b.state == Open {
		b.timeIn[Open] += max(now.Sub(b.since), 0)
		b.since = now
	} else {
		b.transition(Open, now, "tripped")
	}
	b.unlockAndNotify()
}

// State returns the current state.
func (b *Breaker) State() State {
	b.mu.Lock()
	b.advance()
	s := b.state
	b.unlockAndNotify()
	return s
}

// Stats returns a snapshot of the breaker's state and counts.
func (b *Breaker) Stats() Stats {
	b.mu.Lock()
	now := b.advance()
	s := b.stats
	s.State, s.Since = b.state, b.since
	s.Failing = b.consecutive
	if b.fails != nil {
		s.Failing = b.recentFailures(now)
	}
	in := b.timeIn
	in[b.state] += max(now.Sub(b.since), 0)
	s.TimeClosed, s.TimeOpen, s.TimeHalfOpen = in[Closed], in[Open], in[HalfOpen]
	b.unlockAndNotify()
	return s
}

// advance reads the clock and half-opens an open breaker whose cool-down
// is over. Called with b.mu held.
func (b *Breaker) advance() time.Time {
	now := b.cfg.Now()
	if b.state == Open {
		if end := b.since.Add(b.cfg.CoolDown); !now.Before(end) {
			b.transition(HalfOpen, end, "cool-down over")
		}
	}
	return now
}

// countFailure records a failure in Closed and reports whether the
// threshold is reached.
func (b *Breaker) countFailure(now time.Time) bool {
	if b.fails == nil {
		b.consecutive++
		return b.consecutive >= b.cfg.FailureThreshold
	}
	b.fails[b.nextFail] = now
	b.nextFail = (b.nextFail + 1) % len(b.fails)
	b.nfails = min(b.nfails+1, len(b.fails))
	return b.recentFailures(now) >= b.cfg.FailureThreshold
}

// recentFailures counts the recorded failures within the window.
func (b *Breaker) recentFailures(now time.Time) int {
	n := 0
	for i := 0; i < b.nfails; i++ {
		if now.Sub(b.fails[i]) <= b.cfg.Window {
			n++
		}
	}
	return n
}

// transition moves to state to at, resets the counts of the new state and
// queues the callback. Called with b.mu held.
func (b *Breaker) transition(to State, at time.Time, reason string) {
	from := b.state
	b.timeIn[from] += max(at.Sub(b.since), 0)
	b.state, b.since = to, at
	switch {
	case from == Closed && to == Open:
		b.stats.Transitions.ClosedToOpen++
	case from == Open && to == HalfOpen:
		b.stats.Transitions.OpenToHalfOpen++
	case from == HalfOpen && to == Closed:
		b.stats.Transitions.HalfOpenToClosed++
	case from == HalfOpen && to == Open:
		b.stats.Transitions.HalfOpenToOpen++
	}
	b.consecutive, b.nfails, b.nextFail = 0, 0, 0
	b.trials, b.successes, b.trialsSince = 0, 0, at
	if b.cfg.OnStateChange != nil {
		b.pending = append(b.pending, Transition{From: from, To: to, At: at, Reason: reason})
	}
}

// unlockAndNotify releases b.mu and delivers the queued transitions, one
// at a time and in order, without the lock held; if another goroutine is
// delivering already, it will deliver these too.
func (b *Breaker) unlockAndNotify() {
	if b.delivering || len(b.pending) == 0 {
		b.mu.Unlock()
		return
	}
	b.delivering = true
	for len(b.pending) > 0 {
		t := b.pending[0]
		b.pending = b.pending[1:]
		b.mu.Unlock()
		b.deliver(t)
		b.mu.Lock()
	}
	b.pending = nil
	b.delivering = false
	b.mu.Unlock()
}

// deliver runs the callback; if it panics, the breaker stops being marked
// as delivering, so later transitions are still delivered.
func (b *Breaker) deliver(t Transition) {
	done := false
	defer func() {
		if !done {
			b.mu.Lock()
			b.delivering = false
			b.mu.Unlock()
		}
	}()
	b.cfg.OnStateChange(t)
	done = true
}
