package metrics_test

import (
	"context"
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/metrics"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// pair is a real bp/1 session pair over QUIC on 127.0.0.1.
type pair struct {
	ln             *bp.Listener
	client, server *mux.Session
}

// listener listens on 127.0.0.1 and returns a client configuration that
// pins its certificate.
func listener(t *testing.T) (*bp.Listener, *tls.Config) {
	t.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), nil)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	return ln, pin
}

// dial connects a client to ln and accepts its session.
func dial(t *testing.T, ln *bp.Listener, pin *tls.Config) pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := bp.Dial(ctx, ln.Addr().String(), pin, nil)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { server.Close() })
	return pair{ln: ln, client: client, server: server}
}

// transfer sends n bytes from the client to the server on a new stream
// and waits until the server's application has read them all.
func (p pair) transfer(t *testing.T, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := p.client.Open(ctx)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, io.LimitReader(zeros{}, n))
		if err == nil {
			err = w.CloseWrite()
		}
		done <- err
	}()
	r, err := p.server.Accept(ctx)
	require.NoError(t, err)
	got, err := io.Copy(io.Discard, r)
	require.NoError(t, err)
	require.Equal(t, n, got)
	require.NoError(t, <-done)
	require.NoError(t, w.WaitConsumed(ctx))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// families gathers reg by name.
func families(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// sample returns the metric of family name whose labels include labels
// (name, value pairs), failing the test if there is none or its type is
// not typ.
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	require.True(t, ok, "no metric %s", name)
	require.Equal(t, typ, mf.GetType(), "type of %s", name)
	require.NotEmpty(t, mf.GetHelp(), "help of %s", name)
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s with labels %q", name, labels)
	return nil
}

// value is the value of a counter or gauge.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) float64 {
	t.Helper()
	m := sample(t, mfs, name, typ, labels...)
	if typ == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

const (
	counter = dto.MetricType_COUNTER
	gauge   = dto.MetricType_GAUGE
)

// checkCounters compares every counter of mfs with st, the sum of the
// stats of the sessions behind it.
func checkCounters(t *testing.T, mfs map[string]*dto.MetricFamily, st mux.SessionStats) {
	t.Helper()
	for _, tc := range []struct {
		name string
		want uint64
	}{
		{"bp_streams_opened_total", st.StreamsOpened},
		{"bp_streams_accepted_total", st.StreamsAccepted},
		{"bp_streams_refused_total", st.StreamsRefused},
		{"bp_sent_bytes_total", st.BytesSent},
		{"bp_received_bytes_total", st.BytesReceived},
		{"bp_consumed_bytes_total", st.BytesConsumed},
		{"bp_window_updates_sent_total", st.UpdatesSent},
		{"bp_window_updates_received_total", st.UpdatesReceived},
		{"bp_window_growths_total", st.WindowGrowths},
		{"bp_window_shrinks_total", st.WindowShrinks},
		{"bp_budget_refusals_total", st.BudgetRefusals},
		{"bp_pings_sent_total", st.PingsSent},
		{"bp_pings_received_total", st.PingsReceived},
		{"bp_small_frames_paced_total", st.SmallFramesPaced},
	} {
		assert.Equal(t, float64(tc.want), value(t, mfs, tc.name, counter), tc.name)
	}
	for _, r := range mux.BlockReasons() {
		b := st.Blocked.Of(r)
		assert.Equal(t, float64(b.Count), value(t, mfs, "bp_stalls_total", counter, "reason", r.String()), "stalls %v", r)
		assert.InDelta(t, b.Time.Seconds(), value(t, mfs, "bp_blocked_seconds_total", counter, "reason", r.String()), 1e-9, "blocked %v", r)
	}
	assert.Equal(t, float64(st.ThresholdWarnings), value(t, mfs, "bp_threshold_crossings_total", counter, "level", "warning"))
	assert.Equal(t, float64(st.ThresholdCriticals), value(t, mfs, "bp_threshold_crossings_total", counter, "level", "critical"))
	for name, h := range map[string]mux.Histogram{
		"bp_rtt_seconds":                 st.RTTSamples,
		"bp_signal_latency_seconds":      st.SignalLatency,
		"bp_window_update_delay_seconds": st.UpdateDelay,
	} {
		ph := sample(t, mfs, name, dto.MetricType_HISTOGRAM).GetHistogram()
		assert.Equal(t, h.Count, ph.GetSampleCount(), name)
		assert.InDelta(t, h.Sum.Seconds(), ph.GetSampleSum(), 1e-9, name)
		require.Len(t, ph.GetBucket(), mux.HistogramBuckets, name)
		var cum uint64
		for i, b := range ph.GetBucket() {
			cum += h.Buckets[i]
			assert.Equal(t, cum, b.GetCumulativeCount(), "%s bucket %d", name, i)
			assert.InDelta(t, mux.HistogramBounds()[i].Seconds(), b.GetUpperBound(), 1e-12, "%s bound %d", name, i)
		}
	}
}

// sum adds the counters of b to a (as the collector does).
func sum(a, b mux.SessionStats) mux.SessionStats {
	a.StreamsOpened += b.StreamsOpened
	a.StreamsAccepted += b.StreamsAccepted
	a.StreamsRefused += b.StreamsRefused
	a.BytesSent += b.BytesSent
	a.BytesReceived += b.BytesReceived
	a.BytesConsumed += b.BytesConsumed
	a.UpdatesSent += b.UpdatesSent
	a.UpdatesReceived += b.UpdatesReceived
	a.WindowGrowths += b.WindowGrowths
	a.WindowShrinks += b.WindowShrinks
	a.BudgetRefusals += b.BudgetRefusals
	a.PingsSent += b.PingsSent
	a.PingsReceived += b.PingsReceived
	a.SmallFramesPaced += b.SmallFramesPaced
	a.ThresholdWarnings += b.ThresholdWarnings
	a.ThresholdCriticals += b.ThresholdCriticals
	for _, r := range mux.BlockReasons() {
		a.Blocked[r].Count += b.Blocked[r].Count
		a.Blocked[r].Time += b.Blocked[r].Time
	}
	a.RTTSamples.Merge(&b.RTTSamples)
	a.SignalLatency.Merge(&b.SignalLatency)
	a.UpdateDelay.Merge(&b.UpdateDelay)
	return a
}

// TestCollectorMatchesStats moves data over a real session pair, each
// side tracked by its own collector on its own registry, and checks every
// metric against the sessions' own Stats: while open (the transfer's
// counters, which no longer change, and the gauges) and once both ended
// (every counter, from the final Stats).
func TestCollectorMatchesStats(t *testing.T) {
	ln, pin := listener(t)
	p := dial(t, ln, pin)
	cc, sc := metrics.NewCollector(nil), metrics.NewCollector(nil)
	creg, sreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	creg.MustRegister(cc)
	sreg.MustRegister(sc)
	cc.Track(p.client)
	sc.Track(p.server)
	sc.TrackListener(ln)

	const n = 3 << 20
	p.transfer(t, n)

	c, s := families(t, creg), families(t, sreg)
	assert.Equal(t, float64(n), value(t, c, "bp_sent_bytes_total", counter))
	assert.Equal(t, float64(n), value(t, s, "bp_received_bytes_total", counter))
	assert.Equal(t, float64(p.server.Stats().BytesConsumed), value(t, s, "bp_consumed_bytes_total", counter))
	assert.Equal(t, float64(1), value(t, c, "bp_streams_opened_total", counter))
	assert.Equal(t, float64(1), value(t, s, "bp_streams_accepted_total", counter))
	assert.Equal(t, float64(p.server.Stats().UpdatesSent), value(t, s, "bp_window_updates_sent_total", counter))
	assert.Positive(t, value(t, s, "bp_window_updates_sent_total", counter), "credit was granted")
	for _, tc := range []struct {
		mfs  map[string]*dto.MetricFamily
		sess *mux.Session
	}{{c, p.client}, {s, p.server}} {
		st := tc.sess.Stats()
		assert.Equal(t, float64(1), value(t, tc.mfs, "bp_sessions_open", gauge))
		assert.Equal(t, float64(1), value(t, tc.mfs, "bp_sessions_total", counter))
		assert.Equal(t, float64(st.BudgetTotal), value(t, tc.mfs, "bp_budget_limit_bytes", gauge))
		assert.Positive(t, value(t, tc.mfs, "bp_budget_limit_bytes", gauge))
		assert.LessOrEqual(t, value(t, tc.mfs, "bp_budget_used_bytes", gauge), value(t, tc.mfs, "bp_budget_limit_bytes", gauge))
		assert.Equal(t, float64(st.Overhead), value(t, tc.mfs, "bp_budget_overhead_bytes", gauge))
		assert.GreaterOrEqual(t, value(t, tc.mfs, "bp_budget_overhead_bytes", gauge), float64(mux.SessionOverhead))
	}
	assert.Equal(t, float64(1), value(t, s, "bp_listener_sessions_open", gauge))
	assert.Equal(t, float64(0), value(t, s, "bp_listener_handshakes", gauge))
	assert.Equal(t, float64(0), value(t, s, "bp_listener_refused_total", counter))
	_, ok := c["bp_listener_sessions_open"]
	assert.True(t, ok, "listener metrics are always there (zero without a listener)")

	// The server closes the session for a protocol error of the client's.
	require.NoError(t, p.server.CloseWithError(framing.ProtocolError, "test"))
	for _, sess := range []*mux.Session{p.client, p.server} {
		select {
		case <-sess.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
	}
	c, s = families(t, creg), families(t, sreg)
	cst, sst := p.client.Stats(), p.server.Stats()
	checkCounters(t, c, cst)
	checkCounters(t, s, sst)
	for _, mfs := range []map[string]*dto.MetricFamily{c, s} {
		assert.Equal(t, float64(0), value(t, mfs, "bp_sessions_open", gauge))
		assert.Equal(t, float64(1), value(t, mfs, "bp_sessions_total", counter))
		assert.Equal(t, float64(0), value(t, mfs, "bp_streams_open", gauge))
		assert.Equal(t, float64(0), value(t, mfs, "bp_budget_limit_bytes", gauge))
	}
	if !sst.Closed || !cst.Closed {
		t.Log("mux does not report SessionStats.Closed yet: the close metrics are not checked")
		return
	}
	assert.Equal(t, float64(1), value(t, s, "bp_session_closes_total", counter, "code", "PROTOCOL_ERROR", "by", "local"))
	assert.Equal(t, float64(1), value(t, s, "bp_abuse_closes_total", counter, "code", "PROTOCOL_ERROR"))
	assert.Equal(t, float64(1), value(t, c, "bp_session_closes_total", counter, "code", "PROTOCOL_ERROR", "by", "peer"))
	_, ok = c["bp_abuse_closes_total"]
	assert.False(t, ok, "the client sent no abuse close")
}

// TestEndedSessionsKeepCountersMonotonic tracks sessions one after
// another on one collector, ending each, and checks after every step that
// no counter went backwards and that the counters are the sums of every
// session's final Stats.
func TestEndedSessionsKeepCountersMonotonic(t *testing.T) {
	ln, pin := listener(t)
	col := metrics.NewCollector(&metrics.Options{ConstLabels: prometheus.Labels{"side": "server"}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	col.TrackListener(ln)

	prev := map[string]float64{}
	check := func(step string) map[string]*dto.MetricFamily {
		mfs := families(t, reg)
		for name, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := name + m.String()
				var v float64
				switch mf.GetType() {
				case counter:
					v = m.GetCounter().GetValue()
				case dto.MetricType_HISTOGRAM:
					v = float64(m.GetHistogram().GetSampleCount())
				default:
					continue
				}
				assert.GreaterOrEqual(t, v, prev[key], "%s: %s went backwards", step, key)
				prev[key] = v
			}
		}
		for _, lp := range sample(t, mfs, "bp_sessions_total", counter).GetLabel() {
			assert.Equal(t, "side", lp.GetName())
			assert.Equal(t, "server", lp.GetValue())
		}
		return mfs
	}
	const rounds = 4
	var ended mux.SessionStats
	for i := range rounds {
		p := dial(t, ln, pin)
		col.Track(p.server)
		col.Track(p.server) // twice counts once
		check("tracked")
		p.transfer(t, int64(i+1)<<20)
		check("moved data")
		p.client.Close()
		select {
		case <-p.server.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
		ended = sum(ended, p.server.Stats())
		mfs := check("ended")
		assert.Equal(t, float64(0), value(t, mfs, "bp_sessions_open", gauge))
		assert.Equal(t, float64(i+1), value(t, mfs, "bp_sessions_total", counter))
		checkCounters(t, mfs, ended)
	}
	mfs := check("done")
	assert.Equal(t, float64(1+2+3+4)*(1<<20), value(t, mfs, "bp_received_bytes_total", counter))
}

// TestLint: the metrics follow Prometheus's naming rules (promlint).
func TestLint(t *testing.T) {
	ln, pin := listener(t)
	p := dial(t, ln, pin)
	col := metrics.NewCollector(nil)
	col.Track(p.client)
	col.Track(p.server)
	col.TrackListener(ln)
	p.transfer(t, 1<<20)
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	assert.Empty(t, problems)
	assert.Greater(t, testutil.CollectAndCount(col), 30)
}

// TestRegisterTwice: two collectors on one registry, told apart by their
// constant labels, register; two without are refused.
func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(metrics.NewCollector(&metrics.Options{ConstLabels: prometheus.Labels{"hop": "downstream"}})))
	require.NoError(t, reg.Register(metrics.NewCollector(&metrics.Options{ConstLabels: prometheus.Labels{"hop": "upstream"}})))
	mfs := families(t, reg)
	assert.Len(t, mfs["bp_sessions_total"].GetMetric(), 2)

	reg = prometheus.NewRegistry()
	require.NoError(t, reg.Register(metrics.NewCollector(nil)))
	assert.Error(t, reg.Register(metrics.NewCollector(nil)))
}
