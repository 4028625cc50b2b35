package main

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bpmux/bp/mux"
	"github.com/stretchr/testify/assert"
)

// TestViewLineWidth: whatever the counters, a live line is narrower than
// the terminal, and a wider terminal never gets less detail.
func TestViewLineWidth(t *testing.T) {
	big := mux.StreamStats{BytesSent: 999 << 30, SendLimit: 1000 << 30, PeerConsumed: 998 << 30, SendCredit: 1 << 30,
		ConsumerLag: 1 << 30, Stalls: 123456789, TimeStalled: 99999 * time.Second,
		BytesReceived: 999 << 30, BytesConsumed: 999 << 30, RecvWindow: 1 << 30}
	for _, size := range []uint64{0, 2000 << 30} {
		v := &view{viewConfig: viewConfig{size: size}}
		prev := 0
		for _, width := range []int{20, 40, 80, 120, 200, 400} {
			line := v.line(big, mux.StreamStats{}, 1, 9999*time.Second, width)
			n := utf8.RuneCountInString(line)
			assert.Less(t, n, width, "%q", line)
			assert.GreaterOrEqual(t, n, prev, "less detail at %d columns: %q", width, line)
			prev = n
		}
	}
	v := &view{}
	assert.Contains(t, v.line(mux.StreamStats{}, mux.StreamStats{}, 1, time.Second, 80), "waiting for data")
	assert.Equal(t, "  42% ETA 0:14", progress(42, 100, 10*time.Second))
	assert.Equal(t, "1:01:01", formatETA(3661*time.Second))
}
