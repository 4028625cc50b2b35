package metrics

import (
	"sort"

	"github.com/bpmux/bp/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// scalar is a metric without labels of its own, read from a snapshot.
type scalar struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*snapshot) float64
}

// descs are the descriptors of a collector's metrics.
type descs struct {
	scalars []scalar
	// Labelled by reason.
	stalls, blockedSeconds *prometheus.Desc
	// Labelled by level.
	thresholds *prometheus.Desc
	// Labelled by code (and by, for closes).
	closes, abuse *prometheus.Desc
	// Histograms in seconds.
	rtt, signal, updateDelay *prometheus.Desc
}

func newDescs(constLabels prometheus.Labels) descs {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, constLabels)
	}
	gauge := func(name, help string, v func(*snapshot) float64) scalar {
		return scalar{desc(name, help), prometheus.GaugeValue, v}
	}
	counter := func(name, help string, v func(*snapshot) float64) scalar {
		return scalar{desc(name, help), prometheus.CounterValue, v}
	}
	sum := func(f func(*mux.SessionStats) uint64) func(*snapshot) float64 {
		return func(s *snapshot) float64 { return float64(f(&s.sum)) }
	}
	return descs{
		scalars: []scalar{
			gauge("sessions_open", "Tracked sessions that have not ended.",
				func(s *snapshot) float64 { return float64(s.open) }),
			counter("sessions_total", "Sessions tracked, ever.",
				func(s *snapshot) float64 { return float64(s.tracked) }),
			gauge("streams_open", "Streams open now in the open sessions.",
				sum(func(st *mux.SessionStats) uint64 { return uint64(st.Streams) })),
			counter("streams_opened_total", "Streams opened by this side.",
				sum(func(st *mux.SessionStats) uint64 { return st.StreamsOpened })),
			counter("streams_accepted_total", "Streams opened by the peer and admitted.",
				sum(func(st *mux.SessionStats) uint64 { return st.StreamsAccepted })),
			counter("streams_refused_total", "Streams opened by the peer and refused (over the stream limit or the session budget).",
				sum(func(st *mux.SessionStats) uint64 { return st.StreamsRefused })),
			gauge("accept_queue_streams", "Streams opened by the peer that wait for the application's Accept.",
				sum(func(st *mux.SessionStats) uint64 { return uint64(st.AcceptQueue) })),
			counter("sent_bytes_total", "DATA payload bytes sent.",
				sum(func(st *mux.SessionStats) uint64 { return st.BytesSent })),
			counter("received_bytes_total", "DATA payload bytes received.",
				sum(func(st *mux.SessionStats) uint64 { return st.BytesReceived })),
			counter("consumed_bytes_total", "Bytes received and read by this side's application (what frees credit for the peer).",
				sum(func(st *mux.SessionStats) uint64 { return st.BytesConsumed })),
			gauge("budget_used_bytes", "Bytes of the session budgets in use in the open sessions: the streams' receive windows, the compression codecs and the fixed memory of the sessions and their streams.",
				sum(func(st *mux.SessionStats) uint64 { return st.BudgetUsed })),
			gauge("budget_overhead_bytes", "The part of budget_used_bytes held for the fixed memory of the open sessions and their streams (mux.SessionOverhead, mux.StreamOverhead).",
				sum(func(st *mux.SessionStats) uint64 { return st.Overhead })),
			gauge("budget_limit_bytes", "The session budgets (the most the streams' receive windows, the codecs and the fixed memory may hold), summed over the open sessions.",
				sum(func(st *mux.SessionStats) uint64 { return st.BudgetTotal })),
			counter("window_updates_sent_total", "WINDOW_UPDATE frames sent: credit granted to the peer as this side's application read.",
				sum(func(st *mux.SessionStats) uint64 { return st.UpdatesSent })),
			counter("window_updates_received_total", "WINDOW_UPDATE frames received: credit the peer granted.",
				sum(func(st *mux.SessionStats) uint64 { return st.UpdatesReceived })),
			counter("window_growths_total", "Auto-tuning steps that grew a receive window.",
				sum(func(st *mux.SessionStats) uint64 { return st.WindowGrowths })),
			counter("window_shrinks_total", "Auto-tuning steps that shrank a receive window.",
				sum(func(st *mux.SessionStats) uint64 { return st.WindowShrinks })),
			counter("budget_refusals_total", "Times a session budget refused a stream's window growth or a new stream.",
				sum(func(st *mux.SessionStats) uint64 { return st.BudgetRefusals })),
			counter("streams_rate_refused_total", "Streams opened by the peer and refused over the session's admission rate, with a retry-after hint (also in bp_streams_refused_total).",
				sum(func(st *mux.SessionStats) uint64 { return st.StreamsRateRefused })),
			counter("priority_refusals_total", "Window growth a session budget refused because of the stream's priority (kept for more urgent streams; also in bp_budget_refusals_total).",
				sum(func(st *mux.SessionStats) uint64 { return st.PriorityRefusals })),
			counter("opens_failed_fast_total", "Opens a session's circuit breaker failed fast (ErrOverloaded) because the peer was saturated.",
				sum(func(st *mux.SessionStats) uint64 { return st.OpensFailedFast })),
			gauge("breakers_not_closed", "Open sessions whose circuit breaker is open or half-open.",
				func(s *snapshot) float64 { return float64(s.tripped) }),
			counter("wire_sent_bytes_total", "DATA payload bytes sent as they were on the wire, compressed or not (sent_bytes_total counts the application's bytes).",
				sum(func(st *mux.SessionStats) uint64 { return st.Compression.WireBytesSent })),
			counter("wire_received_bytes_total", "DATA payload bytes received as they were on the wire, compressed or not.",
				sum(func(st *mux.SessionStats) uint64 { return st.Compression.WireBytesReceived })),
			counter("frames_compressed_total", "DATA frames sent compressed.",
				sum(func(st *mux.SessionStats) uint64 { return st.Compression.FramesCompressed })),
			counter("frames_decompressed_total", "Compressed DATA frames received.",
				sum(func(st *mux.SessionStats) uint64 { return st.Compression.FramesDecompressed })),
			gauge("codec_memory_bytes", "Memory the open sessions' compression codecs hold, charged to their budgets.",
				sum(func(st *mux.SessionStats) uint64 { return st.Compression.CodecMemory })),
			counter("pings_sent_total", "PING frames sent (RTT probes and keepalives).",
				sum(func(st *mux.SessionStats) uint64 { return st.PingsSent })),
			counter("pings_received_total", "PING frames received.",
				sum(func(st *mux.SessionStats) uint64 { return st.PingsReceived })),
			counter("small_frames_paced_total", "Small DATA frames of the peer that waited for the session's small-frame rate.",
				sum(func(st *mux.SessionStats) uint64 { return st.SmallFramesPaced })),
			gauge("listener_sessions_open", "Accepted sessions of the tracked listeners that have not ended.",
				func(s *snapshot) float64 { return float64(s.listeners.Sessions) }),
			gauge("listener_handshakes", "Connections of the tracked listeners not yet accepted: in the QUIC handshake or waiting for Accept.",
				func(s *snapshot) float64 { return float64(s.listeners.Handshaking) }),
			counter("listener_refused_total", "Connection attempts the tracked listeners refused, over their caps or after Close (in QUIC Initial packets).",
				func(s *snapshot) float64 { return float64(s.listeners.Refused) }),
			counter("listener_rate_refused_total", "Connection attempts the tracked listeners refused over their session rate (ListenConfig.SessionRate).",
				func(s *snapshot) float64 { return float64(s.listeners.RefusedRate) }),
		},
		stalls: desc("stalls_total", "Stalls that ended, by reason: a writer with data and no credit (peer_window: the peer's application had not read; "+
			"session_budget: the peer's budget refused more window), a write the transport held (transport), "+
			"or credit used up by data this side's application had not read (unread).", "reason"),
		blockedSeconds: desc("blocked_seconds_total", "Time spent in the stalls of bp_stalls_total, by reason.", "reason"),
		thresholds:     desc("threshold_crossings_total", "Streams crossing into a threshold level (warning, critical) of consumer lag, unread bytes or stall time.", "level"),
		closes:         desc("session_closes_total", "Sessions that ended, by bp/1 error code (unknown: one bp/1 does not define) and by the side that closed (local, peer).", "code", "by"),
		abuse:          desc("abuse_closes_total", "Sessions this side closed because the peer misbehaved (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, STREAM_LIMIT_ERROR, SETTINGS_ERROR, ENHANCE_YOUR_CALM), by code.", "code"),
		rtt:            desc("rtt_seconds", "Round-trip time samples from PING answers."),
		signal:         desc("signal_latency_seconds", "Latency of the backpressure signal: from the peer's read that freed credit to the stalled writer resuming."),
		updateDelay:    desc("window_update_delay_seconds", "From a read that made a WINDOW_UPDATE due to the update being written to the transport."),
	}
}

// all returns every descriptor.
func (d *descs) all() []*prometheus.Desc {
	out := make([]*prometheus.Desc, 0, len(d.scalars)+8)
	for _, s := range d.scalars {
		out = append(out, s.desc)
	}
	return append(out, d.stalls, d.blockedSeconds, d.thresholds, d.closes, d.abuse, d.rtt, d.signal, d.updateDelay)
}

// metrics returns the metrics of a snapshot.
func (d *descs) metrics(s *snapshot) []prometheus.Metric {
	out := make([]prometheus.Metric, 0, len(d.scalars)+2*mux.NumBlockReasons+16)
	for _, sc := range d.scalars {
		out = append(out, prometheus.MustNewConstMetric(sc.desc, sc.typ, sc.value(s)))
	}
	for _, r := range mux.BlockReasons() {
		b := s.sum.Blocked.Of(r)
		out = append(out,
			prometheus.MustNewConstMetric(d.stalls, prometheus.CounterValue, float64(b.Count), r.String()),
			prometheus.MustNewConstMetric(d.blockedSeconds, prometheus.CounterValue, b.Time.Seconds(), r.String()))
	}
	out = append(out,
		prometheus.MustNewConstMetric(d.thresholds, prometheus.CounterValue, float64(s.sum.ThresholdWarnings), mux.LevelWarning.String()),
		prometheus.MustNewConstMetric(d.thresholds, prometheus.CounterValue, float64(s.sum.ThresholdCriticals), mux.LevelCritical.String()))
	keys := make([]closeKey, 0, len(s.closes))
	for k := range s.closes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].code < keys[j].code || keys[i].code == keys[j].code && keys[i].by < keys[j].by
	})
	for _, k := range keys {
		out = append(out, prometheus.MustNewConstMetric(d.closes, prometheus.CounterValue, float64(s.closes[k]), k.code, k.by))
	}
	codes := make([]string, 0, len(s.abuse))
	for code := range s.abuse {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		out = append(out, prometheus.MustNewConstMetric(d.abuse, prometheus.CounterValue, float64(s.abuse[code]), code))
	}
	return append(out,
		histogram(d.rtt, &s.sum.RTTSamples),
		histogram(d.signal, &s.sum.SignalLatency),
		histogram(d.updateDelay, &s.sum.UpdateDelay))
}

// histogram turns h into a Prometheus histogram in seconds. mux's buckets
// count the observations between two bounds, Prometheus's every one up
// to its bound; mux's overflow bucket is Prometheus's implicit +Inf one
// (the count).
func histogram(desc *prometheus.Desc, h *mux.Histogram) prometheus.Metric {
	bounds := mux.HistogramBounds()
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		cum += h.Buckets[i]
		buckets[b.Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), buckets)
}
