package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp/mux"
)

// metricsLine is the line a command prints once its metrics server
// listens.
const metricsLine = `^bpcat: metrics on (http://127\.0\.0\.1:\d+/metrics)$`

// scrape gets url and parses it as Prometheus's text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// metricValue returns the value of the counter or gauge name whose labels
// include labels (name, value pairs), and whether there is one; the
// family, if present, must be of type typ.
func metricValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) (float64, bool) {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	require.Equal(t, typ, mf.GetType(), "type of %s", name)
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
		if typ == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

// scrapeUntil scrapes url until cond holds of the metrics, at most 200
// times 50 ms apart, and returns the last scrape.
func scrapeUntil(t *testing.T, url, what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	var mfs map[string]*dto.MetricFamily
	for range 200 {
		if mfs = scrape(t, url); cond(mfs) {
			return mfs
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: never seen at %s", what, url)
	return nil
}

const (
	counterType = dto.MetricType_COUNTER
	gaugeType   = dto.MetricType_GAUGE
)

// TestMetricsEndpoint runs a listener (-k) and a connect, both with
// --metrics 127.0.0.1:0, pipes a known number of bytes, and checks what
// each serves on /metrics: names, types and values, while the session is
// open and, at the listener, once it ended. The connect also writes its
// qlog into a directory it creates.
func TestMetricsEndpoint(t *testing.T) {
	l := start(t, "listen", nil, io.Discard, "listen", "-k", "--metrics", "127.0.0.1:0", "127.0.0.1:0")
	lurl := l.waitLine(metricsLine)[1]
	fp := l.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr := l.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	l.stdin.Close() // the listener sends nothing
	qlogDir := filepath.Join(t.TempDir(), "qlog", "new")
	c := start(t, "connect", nil, nil, "connect", "--metrics", "127.0.0.1:0", "--qlog", qlogDir, "--pin", fp, addr)
	curl := c.waitLine(metricsLine)[1]
	go io.Copy(io.Discard, c.stdout)

	const total = 3 << 20
	_, err := io.Copy(c.stdin, io.LimitReader(zeroReader{}, total))
	require.NoError(t, err)

	// The connecting side, mid-session: everything it sent was read.
	mfs := scrapeUntil(t, curl, "all sent", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := metricValue(t, mfs, "bp_sent_bytes_total", counterType)
		return v == total
	})
	for _, tc := range []struct {
		name string
		typ  dto.MetricType
		want float64
	}{
		{"bp_sessions_open", gaugeType, 1},
		{"bp_sessions_total", counterType, 1},
		{"bp_streams_open", gaugeType, 1},
		{"bp_streams_opened_total", counterType, 1},
		{"bp_streams_accepted_total", counterType, 0},
		{"bp_received_bytes_total", counterType, 0},
	} {
		v, ok := metricValue(t, mfs, tc.name, tc.typ)
		assert.True(t, ok, "no %s", tc.name)
		assert.Equal(t, tc.want, v, tc.name)
	}
	for _, r := range mux.BlockReasons() {
		_, ok := metricValue(t, mfs, "bp_blocked_seconds_total", counterType, "reason", r.String())
		assert.True(t, ok, "no bp_blocked_seconds_total{reason=%q}", r)
		_, ok = metricValue(t, mfs, "bp_stalls_total", counterType, "reason", r.String())
		assert.True(t, ok, "no bp_stalls_total{reason=%q}", r)
	}
	budget, _ := metricValue(t, mfs, "bp_budget_limit_bytes", gaugeType)
	assert.Positive(t, budget)
	for _, name := range []string{"bp_rtt_seconds", "bp_signal_latency_seconds", "bp_window_update_delay_seconds"} {
		if assert.Contains(t, mfs, name) {
			assert.Equal(t, dto.MetricType_HISTOGRAM, mfs[name].GetType(), name)
			b := mfs[name].GetMetric()[0].GetHistogram().GetBucket()
			if assert.Len(t, b, mux.HistogramBuckets+1, name) { // the text format has +Inf
				assert.Equal(t, mux.HistogramBounds()[0].Seconds(), b[0].GetUpperBound(), name)
				assert.True(t, math.IsInf(b[mux.HistogramBuckets].GetUpperBound(), 1), name)
			}
		}
	}
	assert.Contains(t, mfs, "process_resident_memory_bytes", "the process's own metrics")

	// The listener, mid-session.
	// Consumption is counted after the bytes are read, so wait for both.
	mfs = scrapeUntil(t, lurl, "all received and read", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := metricValue(t, mfs, "bp_received_bytes_total", counterType)
		c, _ := metricValue(t, mfs, "bp_consumed_bytes_total", counterType)
		return v == total && c == total
	})
	for _, tc := range []struct {
		name string
		typ  dto.MetricType
		want float64
	}{
		{"bp_sessions_open", gaugeType, 1},
		{"bp_listener_sessions_open", gaugeType, 1},
		{"bp_streams_accepted_total", counterType, 1},
		{"bp_consumed_bytes_total", counterType, total},
	} {
		v, ok := metricValue(t, mfs, tc.name, tc.typ)
		assert.True(t, ok, "no %s", tc.name)
		assert.Equal(t, tc.want, v, tc.name)
	}
	updates, _ := metricValue(t, mfs, "bp_window_updates_sent_total", counterType)
	assert.Positive(t, updates, "credit was granted as the data was read")

	// The end: connect exits, the listener's session ends, its counters
	// stay.
	require.NoError(t, c.stdin.Close())
	require.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
	mfs = scrapeUntil(t, lurl, "the session ended", func(mfs map[string]*dto.MetricFamily) bool {
		v, ok := metricValue(t, mfs, "bp_sessions_open", gaugeType)
		return ok && v == 0
	})
	for _, tc := range []struct {
		name   string
		typ    dto.MetricType
		want   float64
		labels []string
	}{
		{"bp_sessions_total", counterType, 1, nil},
		{"bp_received_bytes_total", counterType, total, nil},
		{"bp_streams_open", gaugeType, 0, nil},
		{"bp_session_closes_total", counterType, 1, []string{"code", "NO_ERROR"}},
	} {
		v, ok := metricValue(t, mfs, tc.name, tc.typ, tc.labels...)
		assert.True(t, ok, "no %s%q", tc.name, tc.labels)
		assert.Equal(t, tc.want, v, "%s%q", tc.name, tc.labels)
	}
	_, ok := mfs["bp_abuse_closes_total"]
	assert.False(t, ok, "no abuse close")
	l.cmd.Process.Signal(syscall.SIGINT)
	assert.Equal(t, exitSIGINT, l.wait(20*time.Second), "listen exit code")

	entries, err := os.ReadDir(qlogDir)
	require.NoError(t, err, "--qlog creates its directory")
	assert.NotEmpty(t, entries, "a qlog file per connection")
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestObserveFlagErrors: a malformed --metrics address or contradicting
// thresholds are usage errors (2), before anything is started; a busy
// address is a failure (1) that says so.
func TestObserveFlagErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"listen", "--metrics", "nope", "127.0.0.1:0"}, exitUsage, `--metrics "nope": want HOST:PORT`},
		{[]string{"connect", "--metrics", "127.0.0.1:99999", "127.0.0.1:1"}, exitUsage, "--metrics"},
		{[]string{"bench", "-l", "127.0.0.1:0", "--metrics", "host:port"}, exitUsage, "--metrics"},
		{[]string{"demo", "--metrics", "::1"}, exitUsage, "--metrics"},
		{[]string{"relay", "--metrics", "x", "127.0.0.1:0", "127.0.0.1:1"}, exitUsage, "--metrics"},
		{[]string{"listen", "--warn-lag", "2MiB", "--crit-lag", "1MiB", "127.0.0.1:0"}, exitUsage, "--crit-lag 1.00 MiB is below --warn-lag 2.00 MiB"},
		{[]string{"connect", "--warn-stall", "2s", "--crit-stall", "1s", "127.0.0.1:1"}, exitUsage, "--crit-stall 1s is below --warn-stall 2s"},
		{[]string{"listen", "--warn-lag", "lots", "127.0.0.1:0"}, exitUsage, "--warn-lag"},
		{[]string{"listen", "--metrics", busy.Addr().String(), "127.0.0.1:0"}, exitError, "the address is in use"},
		{[]string{"bench", "-l", "127.0.0.1:0", "--metrics", busy.Addr().String()}, exitError, "the address is in use"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, stdinSize: -1}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			assert.Equal(t, tc.code, run(ctx, e, tc.args), "stderr: %s", stderr.String())
			assert.Contains(t, stderr.String(), tc.msg)
			assert.NotContains(t, stderr.String(), "listening on", "nothing started")
		})
	}
}

// TestObserveHelp: the commands that run sessions list the observation
// flags, and say that QLOGDIR works too.
func TestObserveHelp(t *testing.T) {
	for _, args := range [][]string{{"listen", "-h"}, {"connect", "-h"}, {"relay", "-h"}, {"bench", "-h"}, {"bench", "-l", ":0", "-h"}, {"demo", "-h"}} {
		var stdout bytes.Buffer
		run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: io.Discard}, args)
		for _, flag := range []string{"--metrics ADDR", "--qlog DIR", "--warn-lag SIZE", "--crit-lag SIZE", "--warn-stall DURATION", "--crit-stall DURATION", "--warn-unread SIZE", "QLOGDIR"} {
			assert.Contains(t, stdout.String(), flag, "%v", args)
		}
	}
}

// TestRelayMetrics: a relay with --metrics labels its two hops, and
// counts a transfer through it on both.
func TestRelayMetrics(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, io.Discard)
	l.stdin.Close()
	r := start(t, "relay", nil, nil, "relay", "--metrics", "127.0.0.1:0", "--pin", fp, "127.0.0.1:0", addr)
	url := r.waitLine(metricsLine)[1]
	rfp := r.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	raddr := r.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	const total = 1 << 20
	c := start(t, "connect", io.LimitReader(zeroReader{}, total), nil, "connect", "--pin", rfp, raddr)
	go io.Copy(io.Discard, c.stdout)
	require.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
	require.Equal(t, 0, l.wait(30*time.Second), "listen exit code")

	mfs := scrapeUntil(t, url, "both hops ended", func(mfs map[string]*dto.MetricFamily) bool {
		down, _ := metricValue(t, mfs, "bp_sessions_open", gaugeType, "hop", "downstream")
		up, ok := metricValue(t, mfs, "bp_sessions_open", gaugeType, "hop", "upstream")
		return ok && down == 0 && up == 0
	})
	for _, tc := range []struct {
		name, hop string
		typ       dto.MetricType
		want      float64
	}{
		{"bp_sessions_total", "downstream", counterType, 1},
		{"bp_sessions_total", "upstream", counterType, 1},
		{"bp_received_bytes_total", "downstream", counterType, total},
		{"bp_sent_bytes_total", "upstream", counterType, total},
		{"bp_streams_accepted_total", "downstream", counterType, 1},
		{"bp_streams_opened_total", "upstream", counterType, 1},
		{"bp_listener_sessions_open", "downstream", gaugeType, 0},
	} {
		v, ok := metricValue(t, mfs, tc.name, tc.typ, "hop", tc.hop)
		assert.True(t, ok, "no %s{hop=%q}", tc.name, tc.hop)
		assert.Equal(t, tc.want, v, "%s{hop=%q}", tc.name, tc.hop)
	}
	r.cmd.Process.Signal(syscall.SIGINT)
	assert.Equal(t, exitSIGINT, r.wait(20*time.Second), "relay exit code")
}
