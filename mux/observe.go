package mux

import (
	"fmt"
	"time"
)

// This file holds the types that make backpressure observable: why a
// stream was blocked and for how long, how quickly the backpressure signal
// travelled, and where a stream stands against its thresholds.

// BlockReason says why a stream could not move data.
//
// The first three are the sending side's: the writer had data and waited.
// ReasonUnread is the receiving side's view of the same stall: the peer's
// credit was used up by data this application had not read.
type BlockReason uint8

// The reasons a stream is blocked.
const (
	// ReasonPeerWindow: the writer used up the credit the peer granted,
	// and the peer had not granted more (its application had not read).
	ReasonPeerWindow BlockReason = iota + 1
	// ReasonSessionBudget: the writer used up its credit, and the
	// WINDOW_UPDATE that ended the stall said the peer's session budget
	// had refused to grow the stream's window (the flag BUDGET_LIMITED,
	// SPEC.md 5.2) while its reader kept up: more memory at the receiver
	// would have let the writer keep sending.
	ReasonSessionBudget
	// ReasonTransport: a write on the stream's lane took at least
	// TransportStallThreshold, because the transport would not take more
	// (QUIC's own flow control or congestion control held it).
	ReasonTransport
	// ReasonUnread (receiving side): all the credit this side granted had
	// arrived and waited unread; the peer could send nothing until the
	// application read.
	ReasonUnread
)

// NumBlockReasons is one more than the largest BlockReason, for arrays
// indexed by reason.
const NumBlockReasons = int(ReasonUnread) + 1

// TransportStallThreshold is how long a write on a lane must take to count
// as a transport stall (ReasonTransport). A shorter write merely copied
// data into the transport's buffers.
const TransportStallThreshold = time.Millisecond

var reasonNames = [...]string{
	ReasonPeerWindow:    "peer_window",
	ReasonSessionBudget: "session_budget",
	ReasonTransport:     "transport",
	ReasonUnread:        "unread",
}

// String returns the reason's name as traces, qlog and metrics spell it.
func (r BlockReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// BlockReasons lists every reason, in order.
func BlockReasons() []BlockReason {
	return []BlockReason{ReasonPeerWindow, ReasonSessionBudget, ReasonTransport, ReasonUnread}
}

// Stall counts the stalls of one reason and the time they lasted.
type Stall struct {
	Count uint64
	Time  time.Duration
}

// Blocked is stall counts and time by reason, indexed by BlockReason
// (index 0 is unused). A stall still going on counts with the time it has
// lasted so far.
type Blocked [NumBlockReasons]Stall

// Of returns the stalls of reason r.
func (b Blocked) Of(r BlockReason) Stall {
	if int(r) >= len(b) {
		return Stall{}
	}
	return b[r]
}

// Total returns the sum of the sending side's reasons (all but
// ReasonUnread).
func (b Blocked) Total() Stall {
	var t Stall
	for _, r := range []BlockReason{ReasonPeerWindow, ReasonSessionBudget, ReasonTransport} {
		t.Count += b[r].Count
		t.Time += b[r].Time
	}
	return t
}

func (b *Blocked) add(r BlockReason, d time.Duration) {
	b[r].Count++
	b[r].Time += d
}

// HistogramBuckets is the number of finite buckets of a Histogram.
const HistogramBuckets = 20

// histogramBase is the upper bound of a Histogram's first bucket; each
// next bound doubles it, so the last finite one is about 52 s.
const histogramBase = 100 * time.Microsecond

// HistogramBounds returns the upper bounds (inclusive) of a Histogram's
// finite buckets: 100 µs, 200 µs, 400 µs, ... doubling up to about 52 s.
// Longer observations fall in the overflow bucket.
func HistogramBounds() [HistogramBuckets]time.Duration {
	var b [HistogramBuckets]time.Duration
	for i := range b {
		b[i] = histogramBase << i
	}
	return b
}

// Histogram is a distribution of durations in fixed, exponential buckets
// (see HistogramBounds). Its zero value is empty and ready to use; it is
// a value, copied in every snapshot, and costs no allocation.
type Histogram struct {
	Count uint64
	Sum   time.Duration
	Max   time.Duration
	// Buckets[i] counts the observations <= HistogramBounds()[i] and
	// above the bound before it (not cumulative); Buckets[HistogramBuckets]
	// counts those above the last bound.
	Buckets [HistogramBuckets + 1]uint64
}

// Observe adds one observation.
func (h *Histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.Count++
	h.Sum += d
	h.Max = max(h.Max, d)
	i := 0
	for bound := histogramBase; i < HistogramBuckets && d > bound; bound <<= 1 {
		i++
	}
	h.Buckets[i]++
}

// Mean returns the average observation, or 0 for an empty histogram.
func (h *Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / time.Duration(h.Count)
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	h.Count += o.Count
	h.Sum += o.Sum
	h.Max = max(h.Max, o.Max)
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
}

// Level is where a stream stands against a threshold.
type Level uint8

// The levels, in order of gravity.
const (
	LevelNormal Level = iota
	LevelWarning
	LevelCritical
)

var levelNames = [...]string{LevelNormal: "normal", LevelWarning: "warning", LevelCritical: "critical"}

// String returns the level's name.
func (l Level) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("level(%d)", l)
}

// Metric names what a threshold watches.
type Metric uint8

// The metrics that have thresholds.
const (
	// MetricLag is the consumer lag of the sending side: bytes sent and
	// not yet reported consumed by the peer's application.
	MetricLag Metric = iota + 1
	// MetricUnread is the receiving side's unread bytes: received and not
	// yet read by this application.
	MetricUnread
	// MetricStall is how long the current stall (any reason) has lasted.
	MetricStall
)

// NumMetrics is one more than the largest Metric, for arrays indexed by
// metric.
const NumMetrics = int(MetricStall) + 1

var metricNames = [...]string{MetricLag: "consumer_lag", MetricUnread: "unread", MetricStall: "stall"}

// String returns the metric's name.
func (m Metric) String() string {
	if int(m) < len(metricNames) && metricNames[m] != "" {
		return metricNames[m]
	}
	return fmt.Sprintf("metric(%d)", m)
}

// Thresholds sets the warning and critical levels of a stream's consumer
// lag, unread bytes and stall duration (the seeds' queue-depth
// monitoring). A zero level is off. A stream enters a level when its value
// reaches the level, and leaves it when the value falls below three
// quarters of it, so that a value hovering at a level does not flap; each
// crossing, up or down, is an EventThreshold. Lag and unread bytes are
// checked as they change; a stall's duration at each housekeeping tick
// (about every 100 ms) and when it ends.
type Thresholds struct {
	LagWarning, LagCritical       uint64
	UnreadWarning, UnreadCritical uint64
	StallWarning, StallCritical   time.Duration
}

func (t Thresholds) enabled() bool { return t != Thresholds{} }

func (t Thresholds) validate() error {
	bad := func(w, c uint64) bool { return w != 0 && c != 0 && c < w }
	switch {
	case bad(t.LagWarning, t.LagCritical):
		return fmt.Errorf("mux: Thresholds.LagCritical %d is below LagWarning %d", t.LagCritical, t.LagWarning)
	case bad(t.UnreadWarning, t.UnreadCritical):
		return fmt.Errorf("mux: Thresholds.UnreadCritical %d is below UnreadWarning %d", t.UnreadCritical, t.UnreadWarning)
	case t.StallWarning < 0 || t.StallCritical < 0:
		return fmt.Errorf("mux: negative stall threshold")
	case bad(uint64(t.StallWarning), uint64(t.StallCritical)):
		return fmt.Errorf("mux: Thresholds.StallCritical %v is below StallWarning %v", t.StallCritical, t.StallWarning)
	}
	return nil
}

func (t Thresholds) levels(m Metric) (warning, critical uint64) {
	switch m {
	case MetricLag:
		return t.LagWarning, t.LagCritical
	case MetricUnread:
		return t.UnreadWarning, t.UnreadCritical
	case MetricStall:
		return uint64(t.StallWarning), uint64(t.StallCritical)
	}
	return 0, 0
}

// levelFor is the pure rule of Thresholds: the level a value puts a metric
// at, given the level it was at.
func (t Thresholds) levelFor(m Metric, cur Level, v uint64) Level {
	warning, critical := t.levels(m)
	reached := func(level uint64) bool { return level != 0 && v >= level }
	stays := func(level uint64) bool { return level != 0 && v >= level-level/4 }
	switch {
	case reached(critical) || cur == LevelCritical && stays(critical):
		return LevelCritical
	case reached(warning) || cur >= LevelWarning && stays(warning):
		return LevelWarning
	}
	return LevelNormal
}
