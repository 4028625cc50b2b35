package metrics

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// gaugeFields are the fields of mux.SessionStats that are not summed
// into the retained totals: gauges, and what describes one session only.
var gaugeFields = map[string]bool{
	"Streams": true, "AcceptQueue": true, "BudgetUsed": true, "BudgetTotal": true, "Overhead": true, "RTT": true,
	"Closed": true, "CloseCode": true, "CloseRemote": true, "Breaker": true,
}

// fill sets every number in v (a pointer) to 1, recursively.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Uint64, reflect.Uint8, reflect.Uint32:
		v.SetUint(1)
	case reflect.Int, reflect.Int64:
		v.SetInt(1)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i))
		}
	}
}

// TestAddCountersCoversEveryField: every field of mux.SessionStats is
// either a gauge (summed over open sessions only, or not summed) or a
// counter folded into the totals, so a field added to mux later is not
// silently lost when sessions end.
func TestAddCountersCoversEveryField(t *testing.T) {
	var src mux.SessionStats
	fill(reflect.ValueOf(&src).Elem())
	src.Blocked[0] = mux.Stall{} // index 0 is unused
	var counters, gauges mux.SessionStats
	addCounters(&counters, &src)
	addGauges(&gauges, &src)
	typ := reflect.TypeOf(src)
	cv, gv, sv := reflect.ValueOf(counters), reflect.ValueOf(gauges), reflect.ValueOf(src)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if name == "Compression" { // counters, but for the codecs' memory, a gauge
			want := src.Compression
			want.Codec, want.CodecMemory = 0, 0
			assert.Equal(t, want, counters.Compression, "compression counters")
			assert.Equal(t, mux.CompressionStats{CodecMemory: src.Compression.CodecMemory}, gauges.Compression, "compression gauges")
			continue
		}
		if gaugeFields[name] {
			assert.True(t, cv.Field(i).IsZero(), "%s is a gauge but was summed as a counter", name)
			continue
		}
		assert.Equal(t, sv.Field(i).Interface(), cv.Field(i).Interface(), "counter %s is not folded into the totals", name)
		assert.True(t, gv.Field(i).IsZero(), "counter %s summed as a gauge", name)
	}
	for _, name := range []string{"Streams", "AcceptQueue", "BudgetUsed", "BudgetTotal", "Overhead"} {
		assert.Equal(t, sv.FieldByName(name).Interface(), gv.FieldByName(name).Interface(), "gauge %s", name)
	}
}

// TestHistogram: mux's per-bucket counts become Prometheus's cumulative
// ones, in seconds, with the overflow bucket in the count only.
func TestHistogram(t *testing.T) {
	bounds := mux.HistogramBounds()
	for _, tc := range []struct {
		name string
		obs  []time.Duration
		// want is the cumulative count at each bound index checked.
		want map[int]uint64
	}{
		{"empty", nil, map[int]uint64{0: 0, mux.HistogramBuckets - 1: 0}},
		{"first bucket", []time.Duration{0, 50 * time.Microsecond, 100 * time.Microsecond}, map[int]uint64{0: 3, 1: 3, mux.HistogramBuckets - 1: 3}},
		{"spread", []time.Duration{150 * time.Microsecond, time.Millisecond, time.Second}, map[int]uint64{0: 0, 1: 1, 3: 1, 4: 2, 13: 2, 14: 3}},
		{"overflow", []time.Duration{time.Millisecond, 2 * time.Minute}, map[int]uint64{mux.HistogramBuckets - 1: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h mux.Histogram
			var sum time.Duration
			for _, d := range tc.obs {
				h.Observe(d)
				sum += d
			}
			desc := prometheus.NewDesc("bp_test_seconds", "test", nil, nil)
			var m dto.Metric
			require.NoError(t, histogram(desc, &h).Write(&m))
			ph := m.GetHistogram()
			assert.Equal(t, uint64(len(tc.obs)), ph.GetSampleCount())
			assert.InDelta(t, sum.Seconds(), ph.GetSampleSum(), 1e-9)
			require.Len(t, ph.GetBucket(), mux.HistogramBuckets)
			for i, b := range ph.GetBucket() {
				assert.InDelta(t, bounds[i].Seconds(), b.GetUpperBound(), 1e-12)
				if i > 0 {
					assert.GreaterOrEqual(t, b.GetCumulativeCount(), ph.GetBucket()[i-1].GetCumulativeCount())
				}
				if want, ok := tc.want[i]; ok {
					assert.Equal(t, want, b.GetCumulativeCount(), "bucket %d (<= %v)", i, bounds[i])
				}
			}
		})
	}
}

// TestCodeName: a code bp/1 does not define is "unknown", so that a peer
// cannot make a series per code.
func TestCodeName(t *testing.T) {
	for code, want := range map[uint64]string{0: "NO_ERROR", 1: "PROTOCOL_ERROR", 9: "ENHANCE_YOUR_CALM", 0xa: "KEEPALIVE_TIMEOUT", 0xb: "unknown", 1 << 61: "unknown"} {
		assert.Equal(t, want, codeName(code), "code %#x", code)
	}
}

// TestEndedSessionsReleased: sessions that ended are released by a
// Collect, and, without any Collect, by the sweep a later Track makes,
// so memory stays bounded by the open sessions.
func TestEndedSessionsReleased(t *testing.T) {
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), nil)
	require.NoError(t, err)
	defer ln.Close()
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newEnded := func() *mux.Session {
		sess, err := bp.Dial(ctx, ln.Addr().String(), pin, nil)
		require.NoError(t, err)
		srv, err := ln.Accept(ctx)
		require.NoError(t, err)
		defer srv.Close()
		sess.Close()
		select {
		case <-sess.Done():
		case <-ctx.Done():
			t.Fatal("session did not end")
		}
		return sess
	}
	tracked := func(c *Collector) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.sessions)
	}

	c := NewCollector(nil)
	c.Track(newEnded())
	c.Track(newEnded())
	assert.Equal(t, 2, tracked(c), "below the sweep bound, Track keeps ended sessions until a Collect")
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	_, err = reg.Gather()
	require.NoError(t, err)
	assert.Equal(t, 0, tracked(c), "a Collect releases ended sessions")

	// Without scrapes: Track sweeps once what it holds doubles.
	c = NewCollector(nil)
	c.sweepAt, c.sweepMin = 2, 2
	const n = 6
	for range n {
		c.Track(newEnded())
		assert.LessOrEqual(t, tracked(c), 2)
	}
	c.mu.Lock()
	assert.Equal(t, uint64(n), c.tracked)
	c.mu.Unlock()
}
