package window_test

import (
	"fmt"
	"time"

	"github.com/bpmux/bp/window"
)

// Two streams share a tight session budget: the least urgent one keeps its
// floor but stops growing once the session uses an eighth of the budget,
// while the most urgent one grows on into the rest. Once the budget is
// full, the background stream's refusals are no longer for priority.
func ExampleReceiver_SetUrgency() {
	now := time.Unix(1000, 0)
	budget := window.NewBudget(512 << 10)
	cfg := window.Config{Initial: 64 << 10, Max: 1 << 20}

	urgent, _ := window.NewReceiver(cfg, budget, now)
	urgent.SetUrgency(window.MostUrgent)
	background, _ := window.NewReceiver(cfg, budget, now)
	background.SetUrgency(window.LeastUrgent)

	// Both peers send a window's worth, and both readers take it at once,
	// three times: the windows limit throughput, so they would grow.
	for i := 0; i < 3; i++ {
		now = now.Add(time.Millisecond)
		for _, r := range []*window.Receiver{urgent, background} {
			r.SetRTT(10 * time.Millisecond)
			_ = r.OnData(r.Limit() - r.Received())
			r.OnConsumed(r.Buffered(), now)
		}
	}
	fmt.Println("urgent window", urgent.Window(), "refusals", urgent.Counts().Refusals)
	c := background.Counts()
	fmt.Println("background window", background.Window(), "refusals", c.Refusals, "of which for priority", c.PriorityRefusals)
	fmt.Println("budget used", budget.Used(), "of", budget.Total(), "background share", budget.Share(window.LeastUrgent))
	// Output:
	// urgent window 458752 refusals 1
	// background window 65536 refusals 3 of which for priority 2
	// budget used 524288 of 524288 background share 65536
}
