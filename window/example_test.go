package window_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/bpmux/bp/window"
)

// A receiver grants credit, the peer's Sender spends it, and the
// application's reads return it in WINDOW_UPDATEs once a quarter of the
// window is free. Time is passed in, so the example is deterministic.
func ExampleReceiver() {
	now := time.Unix(1000, 0)
	budget := window.NewBudget(1 << 20) // the session's receive memory
	cfg := window.Config{Initial: 64 << 10, Max: 256 << 10, IdleAfter: time.Second}

	recv, err := window.NewReceiver(cfg, budget, now)
	if err != nil {
		panic(err)
	}
	recv.SetRTT(10 * time.Millisecond)
	send := window.NewSender(cfg.Initial) // the peer learns Initial from SETTINGS

	// The peer sends all its credit, then has to stop.
	n := send.Available()
	_ = send.OnSent(n)
	_ = recv.OnData(n)
	limit, blocked := send.Blocked()
	fmt.Println("sent", send.Sent(), "available", send.Available(), "blocked at", limit, blocked)

	// Sending past the credit is a flow-control violation.
	err = recv.OnData(1)
	fmt.Println("one more byte:", errors.Is(err, window.ErrFlowControl))

	// Reading less than a quarter of the window is not worth an update.
	_, ok := recv.OnConsumed(10<<10, now.Add(time.Millisecond))
	fmt.Println("after reading 10 KiB: update", ok)

	// The peer's BLOCKED at the current limit gets what can be granted.
	if l, ok := recv.OnBlocked(limit, now.Add(time.Millisecond)); ok {
		send.OnUpdate(l)
	}
	fmt.Println("after BLOCKED: limit", recv.Limit(), "window", recv.Window())

	// The application reads the rest quickly: the window was the
	// bottleneck, so it grows.
	if l, ok := recv.OnConsumed(recv.Buffered(), now.Add(2*time.Millisecond)); ok {
		send.OnUpdate(l)
	}
	fmt.Println("after reading all: limit", recv.Limit(), "window", recv.Window(), "available", send.Available())
	fmt.Println("budget used", budget.Used(), "of", budget.Total())

	recv.Close()
	fmt.Println("after close: budget used", budget.Used())
	// Output:
	// sent 65536 available 0 blocked at 65536 true
	// one more byte: true
	// after reading 10 KiB: update false
	// after BLOCKED: limit 75776 window 65536
	// after reading all: limit 196608 window 131072 available 131072
	// budget used 131072 of 1048576
	// after close: budget used 0
}
