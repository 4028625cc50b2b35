// Package metrics exports the flow-control counters of bp/1 sessions and
// listeners as Prometheus metrics.
//
// A Collector is a prometheus.Collector over a set of sessions: register
// it on a registry of your choosing (it never touches the global one) and
// Track every session you create or accept:
//
//	reg := prometheus.NewRegistry()
//	c := metrics.NewCollector(nil)
//	reg.MustRegister(c)
//	c.TrackListener(ln)
//	for {
//		sess, err := ln.Accept(ctx)
//		...
//		c.Track(sess)
//	}
//
// Metrics are named in base units (bytes, seconds) under the namespace
// bp_, counters end in _total, and no metric has a per-stream or
// per-session label, so their number is bounded whatever the traffic:
// every series sums the tracked sessions (labels are only a block reason,
// a threshold level and an error code name). A session that ended is
// released, and its totals are kept, so that counters never go backwards;
// gauges (sessions, streams, budget) count the sessions still open.
//
// The core packages (mux, bp and those below) do not depend on Prometheus:
// only this package does.
package metrics

import (
	"strings"
	"sync"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace is the prefix of every metric's name.
const Namespace = "bp"

// Options configure a Collector. The zero value is ready to use.
type Options struct {
	// ConstLabels are added to every metric of the collector, to tell
	// apart several collectors on one registry (a relay's two hops:
	// {"hop": "downstream"} and {"hop": "upstream"}). Keep their values
	// few: each is a series of every metric.
	ConstLabels prometheus.Labels
}

// Collector is a prometheus.Collector of the sessions and listeners it
// tracks. Its methods are safe for concurrent use.
//
// It keeps no goroutine per session: a session's end is noticed at the
// next Collect, or at a later Track, whichever comes first; its final
// counters are then folded into retained totals and the session is
// released.
type Collector struct {
	d descs

	mu        sync.Mutex
	sessions  map[*mux.Session]struct{} // tracked and not yet seen ended
	listeners []*bp.Listener
	tracked   uint64           // sessions ever tracked
	retired   mux.SessionStats // the counters of the sessions that ended
	closes    map[closeKey]uint64
	abuse     map[string]uint64 // abuse closes this side sent, by code
	// Track sweeps ended sessions when it holds sweepAt of them: twice
	// what was left at the last sweep, at least sweepMin.
	sweepAt, sweepMin int
}

// closeKey labels the closes of sessions.
type closeKey struct {
	code string
	by   string // "local" or "peer"
}

// minSweep is the number of tracked sessions below which Track never
// sweeps ended ones.
const minSweep = 64

// NewCollector returns a collector tracking nothing yet. opts may be nil
// for the defaults.
func NewCollector(opts *Options) *Collector {
	var o Options
	if opts != nil {
		o = *opts
	}
	return &Collector{
		d:        newDescs(o.ConstLabels),
		sessions: make(map[*mux.Session]struct{}),
		closes:   make(map[closeKey]uint64),
		abuse:    make(map[string]uint64),
		sweepAt:  minSweep,
		sweepMin: minSweep,
	}
}

// Track adds sess to the sessions the collector reports. It is dropped
// once sess.Done() is closed, its totals kept. Tracking a session twice
// counts it once.
func (c *Collector) Track(sess *mux.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.sessions[sess]; ok {
		return
	}
	c.sessions[sess] = struct{}{}
	c.tracked++
	if len(c.sessions) >= c.sweepAt {
		// Without scrapes, ended sessions would pile up: sweep them, at
		// most once per doubling of what is tracked (amortized O(1)).
		c.sweepLocked()
		c.sweepAt = max(2*len(c.sessions), c.sweepMin)
	}
}

// TrackListener adds l's counts (ListenerStats) to what the collector
// reports. A listener stays tracked for the collector's life (a closed
// one reports its final counts); track each one once.
func (c *Collector) TrackListener(l *bp.Listener) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listeners = append(c.listeners, l)
}

// sweepLocked folds the sessions that ended into the retained totals and
// releases them.
func (c *Collector) sweepLocked() {
	for sess := range c.sessions {
		select {
		case <-sess.Done():
		default:
			continue
		}
		st := sess.Stats()
		addCounters(&c.retired, &st)
		if st.Closed {
			by := "local"
			if st.CloseRemote {
				by = "peer"
			}
			name := codeName(st.CloseCode)
			c.closes[closeKey{name, by}]++
			if !st.CloseRemote && mux.IsAbuseCode(st.CloseCode) {
				c.abuse[name]++
			}
		}
		delete(c.sessions, sess)
	}
}

// codeName is the label of an error code: its name, or "unknown" for a
// code bp/1 does not define (a peer may send any 62-bit number, which must
// not become a series each).
func codeName(code uint64) string {
	name := framing.ErrorCode(code).String()
	if strings.HasPrefix(name, "ERROR(") {
		return "unknown"
	}
	return name
}

// addCounters adds the counters of src (not its gauges: Streams,
// AcceptQueue, BudgetUsed, BudgetTotal, Overhead, RTT) to dst.
func addCounters(dst, src *mux.SessionStats) {
	dst.StreamsOpened += src.StreamsOpened
	dst.StreamsAccepted += src.StreamsAccepted
	dst.StreamsRefused += src.StreamsRefused
	dst.BytesSent += src.BytesSent
	dst.BytesReceived += src.BytesReceived
	dst.BytesConsumed += src.BytesConsumed
	dst.UpdatesSent += src.UpdatesSent
	dst.UpdatesReceived += src.UpdatesReceived
	dst.Stalls += src.Stalls
	dst.PingsSent += src.PingsSent
	dst.PingsReceived += src.PingsReceived
	dst.SmallFramesPaced += src.SmallFramesPaced
	dst.WindowGrowths += src.WindowGrowths
	dst.WindowShrinks += src.WindowShrinks
	dst.BudgetRefusals += src.BudgetRefusals
	for _, r := range mux.BlockReasons() {
		dst.Blocked[r].Count += src.Blocked[r].Count
		dst.Blocked[r].Time += src.Blocked[r].Time
	}
	dst.SignalLatency.Merge(&src.SignalLatency)
	dst.UpdateDelay.Merge(&src.UpdateDelay)
	dst.RTTSamples.Merge(&src.RTTSamples)
	dst.ThresholdWarnings += src.ThresholdWarnings
	dst.ThresholdCriticals += src.ThresholdCriticals
	dst.StreamsRateRefused += src.StreamsRateRefused
	dst.OpensFailedFast += src.OpensFailedFast
	dst.PriorityRefusals += src.PriorityRefusals
	c, sc := &dst.Compression, &src.Compression
	c.WireBytesSent += sc.WireBytesSent
	c.WireBytesReceived += sc.WireBytesReceived
	c.FramesCompressed += sc.FramesCompressed
	c.FramesPlain += sc.FramesPlain
	c.FramesDecompressed += sc.FramesDecompressed
}

// addGauges adds the gauges of src to dst.
func addGauges(dst, src *mux.SessionStats) {
	dst.Streams += src.Streams
	dst.AcceptQueue += src.AcceptQueue
	dst.BudgetUsed += src.BudgetUsed
	dst.BudgetTotal += src.BudgetTotal
	dst.Overhead += src.Overhead
	dst.Compression.CodecMemory += src.Compression.CodecMemory
}

// snapshot is what one Collect reports.
type snapshot struct {
	sum       mux.SessionStats // counters of all sessions, gauges of the open ones
	open      int
	tripped   int // open sessions whose breaker is open or half-open
	tracked   uint64
	listeners bp.ListenerStats // summed
	closes    map[closeKey]uint64
	abuse     map[string]uint64
}

// snapshot sweeps the sessions that ended and sums what is left.
func (c *Collector) snapshot() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked()
	s := snapshot{sum: c.retired, open: len(c.sessions), tracked: c.tracked,
		closes: make(map[closeKey]uint64, len(c.closes)), abuse: make(map[string]uint64, len(c.abuse))}
	for sess := range c.sessions {
		st := sess.Stats()
		addCounters(&s.sum, &st)
		addGauges(&s.sum, &st)
		if st.Breaker != "" && st.Breaker != "closed" {
			s.tripped++
		}
	}
	for _, l := range c.listeners {
		ls := l.Stats()
		s.listeners.Sessions += ls.Sessions
		s.listeners.Handshaking += ls.Handshaking
		s.listeners.Refused += ls.Refused
		s.listeners.RefusedRate += ls.RefusedRate
	}
	for k, n := range c.closes {
		s.closes[k] = n
	}
	for k, n := range c.abuse {
		s.abuse[k] = n
	}
	return s
}

// Describe sends the descriptors of every metric the collector reports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all() {
		ch <- d
	}
}

// Collect sends the current values. It first releases the sessions that
// ended, keeping their totals.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	for _, m := range c.d.metrics(&s) {
		ch <- m
	}
}

var _ prometheus.Collector = (*Collector)(nil)
