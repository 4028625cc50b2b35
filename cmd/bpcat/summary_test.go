package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/bpmux/bp/mux"
)

// TestSummaryLine: the summary says what moved, how long the writer
// waited for credit, and, when they happened, how much of that was the
// peer's budget and how long the transport itself held writes.
func TestSummaryLine(t *testing.T) {
	blocked := func(pw, budget, tr time.Duration, trCount uint64) mux.Blocked {
		var b mux.Blocked
		b[mux.ReasonPeerWindow] = mux.Stall{Count: 3, Time: pw}
		if budget > 0 {
			b[mux.ReasonSessionBudget] = mux.Stall{Count: 2, Time: budget}
		}
		b[mux.ReasonTransport] = mux.Stall{Count: trCount, Time: tr}
		return b
	}
	cases := []struct {
		name string
		st   mux.StreamStats
		want string
	}{
		{"received only", mux.StreamStats{BytesReceived: 2 << 20, BytesConsumed: 2 << 20},
			"received 2.00 MiB (1.0 MiB/s) in 2.00s"},
		{"sent, the peer's window", mux.StreamStats{BytesSent: 2 << 20, Stalls: 3, TimeStalled: time.Second, PeakConsumerLag: 128 << 10,
			Blocked: blocked(time.Second, 0, 0, 0)},
			"sent 2.00 MiB (1.0 MiB/s) in 2.00s; writer stalled 3 times for 1.00s; at most 128.0 KiB in flight"},
		{"sent, the budget and the transport too", mux.StreamStats{BytesSent: 2 << 20, Stalls: 5, TimeStalled: 1500 * time.Millisecond, PeakConsumerLag: 64 << 10,
			Blocked: blocked(time.Second, 500*time.Millisecond, 30*time.Millisecond, 4)},
			"sent 2.00 MiB (1.0 MiB/s) in 2.00s; writer stalled 5 times for 1.50s (peer window 1.00s, peer's budget 0.50s); the transport held writes 4 times for 0.03s; at most 64.0 KiB in flight"},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, summaryLine(c.st, 2*time.Second), c.name)
	}
}
