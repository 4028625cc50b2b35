package retry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bpmux/bp/retry"
)

// errRefused stands for a transport's refusal (REFUSED_STREAM), which
// carries the server's retry-after hint in a RetryAfter method.
var errRefused = errors.New("stream refused")

// A server refuses the first two opens and asks for 2 ms each time. The
// policy waits at least the hint, plus jitter, and the third open works.
func ExamplePolicy_Do() {
	p := &retry.Policy{
		Base:        time.Millisecond,
		Cap:         50 * time.Millisecond,
		MaxAttempts: 4,
		Retryable:   func(err error) bool { return errors.Is(err, errRefused) },
		OnRetry: func(r retry.Retry) {
			fmt.Printf("attempt %d: %v; waiting at least %v\n", r.Attempt, r.Err, r.Hint)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	attempts := 0
	err := p.Do(ctx, func(ctx context.Context) error {
		attempts++
		if attempts < 3 {
			return retry.WithRetryAfter(errRefused, 2*time.Millisecond)
		}
		return nil // opened
	})
	fmt.Println("opened after", attempts, "attempts, err:", err)

	// An error that is not retryable comes back at once, as it is.
	errFatal := errors.New("protocol error")
	err = p.Do(ctx, func(context.Context) error { return errFatal })
	fmt.Println(err == errFatal)
	// Output:
	// attempt 1: stream refused (retry after 2ms); waiting at least 2ms
	// attempt 2: stream refused (retry after 2ms); waiting at least 2ms
	// opened after 3 attempts, err: <nil>
	// true
}

// DoValue returns the value of the attempt that succeeded.
func ExampleDoValue() {
	p := &retry.Policy{Base: time.Millisecond, Cap: 5 * time.Millisecond}
	n := 0
	conn, err := retry.DoValue(context.Background(), p, func(context.Context) (string, error) {
		if n++; n < 2 {
			return "", errors.New("dial: connection refused")
		}
		return "session 1", nil
	})
	fmt.Println(conn, err)
	// Output: session 1 <nil>
}
