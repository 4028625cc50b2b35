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

// TestViewLevel: a stream at a threshold's level is marked WARN or CRIT
// after the time, with the metrics at that level when there is room, in
// a line that still fits the terminal; a stream at no level is not
// marked.
func TestViewLevel(t *testing.T) {
	base := mux.StreamStats{BytesSent: 10 << 20, SendLimit: 10<<20 + 64<<10, PeerConsumed: 10<<20 - 192<<10,
		ConsumerLag: 256 << 10, Stalls: 42, TimeStalled: 3 * time.Second}
	at := func(lag, stall mux.Level) mux.StreamStats {
		st := base
		st.Levels[mux.MetricLag], st.Levels[mux.MetricStall] = lag, stall
		st.Level = max(lag, stall)
		return st
	}
	for _, tc := range []struct {
		name       string
		st         mux.StreamStats
		wide, at80 string // what the line shows at 200 and at 80 columns (where the metrics may not fit)
	}{
		{"normal", base, "", ""},
		{"lag warning", at(mux.LevelWarning, mux.LevelNormal), "  WARN lag  send ", "1.0s  WARN "},
		{"lag critical", at(mux.LevelCritical, mux.LevelNormal), "  CRIT lag  send ", "1.0s  CRIT "},
		{"both critical", at(mux.LevelCritical, mux.LevelCritical), "  CRIT lag stall  send ", "1.0s  CRIT "},
		{"stall critical, lag warning", at(mux.LevelWarning, mux.LevelCritical), "  CRIT stall  send ", "1.0s  CRIT "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &view{}
			for _, c := range []struct {
				width int
				want  string
			}{{200, tc.wide}, {80, tc.at80}} {
				line := v.line(tc.st, mux.StreamStats{}, 1, time.Second, c.width)
				assert.Less(t, utf8.RuneCountInString(line), c.width, "%q", line)
				assert.Contains(t, line, "send ", "%q", line)
				if c.want == "" {
					assert.NotContains(t, line, "WARN", "%q", line)
					assert.NotContains(t, line, "CRIT", "%q", line)
					continue
				}
				assert.Contains(t, line, c.want, "%d columns: %q", c.width, line)
			}
		})
	}
}

// TestLevelTag: the short mark when there is no room for the metrics.
func TestLevelTag(t *testing.T) {
	var st mux.StreamStats
	assert.Equal(t, "", levelTag(st, true))
	st.Level, st.Levels[mux.MetricUnread] = mux.LevelWarning, mux.LevelWarning
	assert.Equal(t, "WARN unread  ", levelTag(st, true))
	assert.Equal(t, "WARN  ", levelTag(st, false))
}
