package breaker_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/bpmux/bp/breaker"
)

// A peer refuses three opens in a row: the breaker opens and the next
// open fails fast, telling when to try again. After the cool-down one trial
// open goes through; it works, and the breaker closes.
func ExampleBreaker() {
	now := time.Unix(1000, 0)
	b, err := breaker.New(breaker.Config{
		FailureThreshold: 3,
		CoolDown:         5 * time.Second,
		Now:              func() time.Time { return now },
		OnStateChange: func(t breaker.Transition) {
			fmt.Printf("%v -> %v: %s\n", t.From, t.To, t.Reason)
		},
	})
	if err != nil {
		panic(err)
	}
	open := func(peerOK bool) {
		if err := b.Allow(); err != nil {
			var oe *breaker.OpenError
			errors.As(err, &oe)
			fmt.Println("fail fast:", errors.Is(err, breaker.ErrOpen), "retry in", oe.RetryIn)
			return
		}
		if peerOK {
			b.Success()
		} else {
			b.Failure() // e.g. REFUSED_STREAM
		}
	}

	for i := 0; i < 3; i++ {
		open(false)
	}
	now = now.Add(2 * time.Second)
	open(true)
	now = now.Add(3 * time.Second)
	open(true)
	fmt.Println("state:", b.State())

	s := b.Stats()
	fmt.Println("refused:", s.Refused, "open for:", s.TimeOpen, "transitions:", s.Transitions)
	// Output:
	// closed -> open: failure threshold
	// fail fast: true retry in 3s
	// open -> half-open: cool-down over
	// half-open -> closed: trial succeeded
	// state: closed
	// refused: 1 open for: 5s transitions: {1 1 1 0}
}
