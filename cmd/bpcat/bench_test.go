package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchServer starts `bpcat bench -l` and returns it with its fingerprint
// and address.
func benchServer(t *testing.T, args ...string) (srv *proc, fp, addr string) {
	t.Helper()
	srv = start(t, "bench-server", nil, io.Discard, append([]string{"bench", "-l", "127.0.0.1:0"}, args...)...)
	srv.stdin.Close()
	fp = srv.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr = srv.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	return srv, fp, addr
}

// benchJSON runs a measurement with --json and returns its document,
// decoded both as the typed document and as plain maps (to check iperf3's
// key names themselves).
func benchJSON(t *testing.T, fp, addr string, args ...string) (iperfDoc, map[string]any) {
	t.Helper()
	var out bytes.Buffer
	c := start(t, "bench", nil, &out, append(append([]string{"bench", "--json", "--pin", fp}, args...), addr)...)
	c.stdin.Close()
	require.Equal(t, 0, c.wait(60*time.Second), "bench exit code")
	return decodeBenchDoc(t, out.Bytes())
}

// decodeBenchDoc decodes b as exactly one JSON document.
func decodeBenchDoc(t *testing.T, b []byte) (iperfDoc, map[string]any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw map[string]any
	require.NoError(t, dec.Decode(&raw), "stdout: %s", b)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "more than one JSON document on stdout")
	var doc iperfDoc
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc, raw
}

// keys asserts that m (a JSON object at path) has every key.
func keys(t *testing.T, m any, path string, want ...string) map[string]any {
	t.Helper()
	obj, ok := m.(map[string]any)
	require.True(t, ok, "%s is not an object: %v", path, m)
	for _, k := range want {
		assert.Contains(t, obj, k, "%s.%s", path, k)
	}
	return obj
}

// checkIntervals asserts that every interval's sum is the sum of its
// streams, in each direction, and that it has a positive length.
func checkIntervals(t *testing.T, doc iperfDoc, bidir bool) {
	t.Helper()
	require.NotEmpty(t, doc.Intervals)
	for i, iv := range doc.Intervals {
		var fwd, rev uint64
		for _, s := range iv.Streams {
			if !bidir || s.Sender {
				fwd += s.Bytes
			} else {
				rev += s.Bytes
			}
			assert.Equal(t, iv.Sum.Start, s.Start, "interval %d", i)
		}
		assert.Positive(t, iv.Sum.Seconds, "interval %d", i)
		assert.Equal(t, fwd, iv.Sum.Bytes, "interval %d: the sum is not the sum of the streams", i)
		if bidir {
			require.NotNil(t, iv.SumBidirReverse, "interval %d", i)
			assert.Equal(t, rev, iv.SumBidirReverse.Bytes, "interval %d", i)
		}
		if i > 0 {
			assert.InDelta(t, doc.Intervals[i-1].Sum.End, iv.Sum.Start, 1e-9, "interval %d does not follow the last", i)
		}
	}
}

// checkEnd asserts that the end's sums are the sums of its streams.
func checkEnd(t *testing.T, doc iperfDoc, bidir bool) {
	t.Helper()
	var sent, recv, rsent, rrecv uint64
	for _, s := range doc.End.Streams {
		assert.Equal(t, s.Sender.Socket, s.Receiver.Socket)
		if !bidir || s.Sender.Sender {
			sent, recv = sent+s.Sender.Bytes, recv+s.Receiver.Bytes
		} else {
			rsent, rrecv = rsent+s.Sender.Bytes, rrecv+s.Receiver.Bytes
		}
	}
	assert.Equal(t, sent, doc.End.SumSent.Bytes)
	assert.Equal(t, recv, doc.End.SumReceived.Bytes)
	assert.Positive(t, doc.End.SumReceived.Bytes)
	assert.Positive(t, doc.End.SumSent.Seconds)
	assert.Positive(t, doc.End.SumReceived.Seconds)
	// Every byte sent was read: the test ends only once the receiver read it all.
	assert.Equal(t, doc.End.SumSent.Bytes, doc.End.SumReceived.Bytes)
	if bidir {
		require.NotNil(t, doc.End.SumSentBidirReverse)
		require.NotNil(t, doc.End.SumReceivedBidirReverse)
		assert.Equal(t, rsent, doc.End.SumSentBidirReverse.Bytes)
		assert.Equal(t, rrecv, doc.End.SumReceivedBidirReverse.Bytes)
		assert.Positive(t, rrecv)
		assert.Equal(t, rsent, rrecv)
	}
}

// TestBenchJSON: one second, two streams, --json: one document in
// iperf3's shape with iperf3's key names, whose sums add up.
func TestBenchJSON(t *testing.T) {
	srv, fp, addr := benchServer(t)
	doc, raw := benchJSON(t, fp, addr, "-t", "1", "-P", "2", "-i", "0.5")

	keys(t, raw, "", "start", "intervals", "end")
	st := keys(t, raw["start"], "start", "connected", "version", "system_info", "timestamp", "connecting_to", "cookie", "test_start", "bp")
	keys(t, st["test_start"], "start.test_start", "protocol", "num_streams", "blksize", "duration", "reverse", "bidir", "target_bitrate", "interval")
	iv := raw["intervals"].([]any)
	require.NotEmpty(t, iv)
	i0 := keys(t, iv[0], "intervals[0]", "streams", "sum")
	keys(t, i0["streams"].([]any)[0], "intervals[0].streams[0]", "socket", "start", "end", "seconds", "bytes", "bits_per_second", "omitted", "sender", "bp")
	keys(t, i0["sum"], "intervals[0].sum", "start", "end", "seconds", "bytes", "bits_per_second", "omitted", "sender")
	end := keys(t, raw["end"], "end", "streams", "sum_sent", "sum_received", "cpu_utilization_percent", "bp")
	e0 := keys(t, end["streams"].([]any)[0], "end.streams[0]", "sender", "receiver")
	keys(t, e0["sender"], "end.streams[0].sender", "socket", "start", "end", "seconds", "bytes", "bits_per_second", "sender")
	keys(t, end["sum_received"], "end.sum_received", "start", "end", "seconds", "bytes", "bits_per_second", "sender")
	keys(t, end["cpu_utilization_percent"], "end.cpu_utilization_percent",
		"host_total", "host_user", "host_system", "remote_total", "remote_user", "remote_system")
	assert.NotContains(t, end, "sum_sent_bidir_reverse")
	assert.NotContains(t, raw, "error")

	assert.Equal(t, 2, doc.Start.TestStart.NumStreams)
	assert.Len(t, doc.Start.Connected, 2)
	defaults, err := mux.Config{}.WithDefaults()
	require.NoError(t, err)
	assert.Equal(t, defaults.InitialWindow, doc.Start.BP.InitialWindow, "the library's default, no flag given")
	assert.Equal(t, uint64(128<<10), doc.Start.BP.InitialWindow)
	assert.Equal(t, defaults.MaxWindow, doc.Start.BP.MaxWindow)
	assert.Equal(t, defaults.SessionBudget, doc.Start.BP.SessionBudget)
	assert.Len(t, doc.End.Streams, 2)
	assert.GreaterOrEqual(t, len(doc.Intervals), 2)
	checkIntervals(t, doc, false)
	checkEnd(t, doc, false)
	for _, s := range doc.Intervals[0].Streams {
		assert.True(t, s.Sender, "the client sends")
		assert.Positive(t, s.BP.Window)
	}
	assert.True(t, doc.End.SumSent.Sender)
	assert.True(t, doc.End.BP.ServerResults)
	assert.True(t, doc.End.BP.RemoteCPUMeasured)
	assert.Positive(t, doc.End.CPU.HostTotal)
	assert.Positive(t, doc.End.CPU.RemoteTotal)
	assert.InDelta(t, 1, doc.End.BP.JainFairness, 0.5)
	t.Logf("bench --json: sum_received %.0f bit/s, %d intervals, fairness %.3f, CPU %.0f%% here, %.0f%% at the server",
		doc.End.SumReceived.BitsPerSecond, len(doc.Intervals), doc.End.BP.JainFairness, doc.End.CPU.HostTotal, doc.End.CPU.RemoteTotal)
	srv.waitLine(`^session: 2 streams from 127\.0\.0\.1:\d+: received [^,]+ on 2, sent 0 B \(0 B/s\) on 0, in `)
}

// TestBenchDirections: -R moves data from the server to the client, and
// --bidir both ways at once; the server says what it received and sent.
func TestBenchDirections(t *testing.T) {
	srv, fp, addr := benchServer(t)

	doc, _ := benchJSON(t, fp, addr, "-t", "1", "-R")
	assert.Equal(t, 1, doc.Start.TestStart.Reverse)
	checkIntervals(t, doc, false)
	checkEnd(t, doc, false)
	for _, iv := range doc.Intervals {
		for _, s := range iv.Streams {
			assert.False(t, s.Sender, "with -R the client only receives")
		}
	}
	assert.False(t, doc.End.SumReceived.Sender)
	require.NotNil(t, doc.End.Streams[0].Sender.BP, "the server's figures for its sending")
	srv.waitLine(`^session: 1 streams from [^:]+:\d+: received 0 B \(0 B/s\) on 0, sent [1-9][^,]* on 1, in `)
	t.Logf("-R: %.0f bit/s from the server", doc.End.SumReceived.BitsPerSecond)

	doc, _ = benchJSON(t, fp, addr, "-t", "1", "--bidir")
	assert.Equal(t, 1, doc.Start.TestStart.Bidir)
	checkIntervals(t, doc, true)
	checkEnd(t, doc, true)
	var up, down int
	for _, s := range doc.Intervals[0].Streams {
		if s.Sender {
			up++
		} else {
			down++
		}
	}
	assert.Equal(t, [2]int{1, 1}, [2]int{up, down}, "one stream each way")
	srv.waitLine(`^session: 2 streams from [^:]+:\d+: received [1-9][^,]* on 1, sent [1-9][^,]* on 1, in `)
	t.Logf("--bidir: %.0f bit/s up, %.0f bit/s down", doc.End.SumReceived.BitsPerSecond, doc.End.SumReceivedBidirReverse.BitsPerSecond)
}

// TestBenchRate: -b paces each stream's sender; two streams at 40 Mbit/s
// each for two seconds deliver about 80 Mbit/s, in both directions.
func TestBenchRate(t *testing.T) {
	_, fp, addr := benchServer(t)
	const target = 40e6
	for _, dir := range []string{"-P", "-R"} {
		args := []string{"-t", "2", "-b", "40M", "-P", "2"}
		if dir == "-R" {
			args = append(args, "-R")
		}
		doc, _ := benchJSON(t, fp, addr, args...)
		assert.Equal(t, uint64(target), doc.Start.TestStart.TargetBitrate)
		checkEnd(t, doc, false)
		for _, s := range doc.End.Streams {
			ratio := s.Receiver.BitsPerSecond / target
			t.Logf("%q stream %d: %.0f bit/s, %.3f of the target", args, s.Receiver.Socket, s.Receiver.BitsPerSecond, ratio)
			assert.InDelta(t, 1, ratio, 0.10, "stream %d paced to %.3f of -b", s.Receiver.Socket, ratio)
		}
	}
}

// TestParseBitrate: -b takes iperf3's bits (decimal units) and bpcat's
// bytes (with a B).
func TestParseBitrate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64 // bytes per second
	}{
		{"100M", 12_500_000}, {"100m", 12_500_000}, {"1.5G", 187_500_000}, {"800K", 100_000},
		{"8000", 1000}, {"100Mbps", 12_500_000}, {"100Mbit/s", 12_500_000}, {"100 Mbits", 12_500_000},
		{"8MiB", 8 << 20}, {"8MiB/s", 8 << 20}, {"10MB/s", 10_000_000}, {"64KiB", 64 << 10},
	} {
		got, err := parseBitrate(tc.in)
		if assert.NoError(t, err, tc.in) {
			assert.Equal(t, tc.want, got, tc.in)
		}
	}
	for _, bad := range []string{"", "fast", "-5M", "10X", "1e30G"} {
		_, err := parseBitrate(bad)
		assert.Error(t, err, bad)
	}
}

// TestBenchServer: the server logs each session and serves two clients in
// turn; the text report has iperf3's lines; and each side's help lists
// only its own flags.
func TestBenchServer(t *testing.T) {
	srv, fp, addr := benchServer(t)
	for i := 0; i < 2; i++ {
		var out bytes.Buffer
		target := []string{addr}
		if i == 1 { // the second client gives the address in nc's form, HOST PORT
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			target = []string{host, port}
		}
		c := start(t, "bench", nil, &out, append([]string{"bench", "-t", "1", "-P", "2", "--pin", fp}, target...)...)
		c.stdin.Close()
		require.Equal(t, 0, c.wait(60*time.Second), "bench %d exit code", i)
		srv.waitLine(`^session: 2 streams from 127\.0\.0\.1:\d+: received [1-9]`)
		text := out.String()
		assert.Regexp(t, `(?m)^\[  3\]   0\.00-1\.00   sec +\S+ [KMG]?Bytes +\S+ [KMG]?bits/sec +\d+ +\S+ \S+$`, text)
		assert.Regexp(t, `(?m)^\[SUM\]   0\.00-1\.00   sec .* sender$`, text)
		assert.Regexp(t, `(?m)^\[SUM\]   0\.00-1\.\d\d +sec .* receiver$`, text)
		assert.Regexp(t, `(?m)^fairness [01]\.\d{3} \(Jain's index, 2 stream\(s\)\), RTT .*at the server`, text)
		if i == 0 {
			t.Logf("text report:\n%s", text)
		}
	}
	assert.False(t, srv.exited(), "the server stopped serving")

	help := func(args ...string) string {
		var out bytes.Buffer
		p := start(t, "help", nil, &out, args...)
		p.stdin.Close()
		require.Equal(t, 0, p.wait(10*time.Second))
		return out.String()
	}
	server := help("bench", "-l", ":0", "-h")
	client := help("bench", "-h")
	for _, f := range []string{"-P", "-R", "-bidir", "-json", "-timeout", "-pin"} {
		assert.NotRegexp(t, `(?m)^ +-?`+f+`\b`, server, "bench -l help lists %s", f)
		assert.Regexp(t, `(?m)^ +-?`+f+`\b`, client, "bench help lacks %s", f)
	}
	for _, f := range []string{"-cert", "-quiet"} {
		assert.Regexp(t, `(?m)^ +-?`+f+`\b`, server, "bench -l help lacks %s", f)
		assert.NotRegexp(t, `(?m)^ +-?`+f+`\b`, client, "bench help lists %s", f)
	}
}

// TestBenchInterruptedSummary: SIGINT in the middle of a measurement
// prints the summary of what was measured so far, as text and as one
// JSON document with an "error", and exits non-zero.
func TestBenchInterruptedSummary(t *testing.T) {
	srv, fp, addr := benchServer(t)
	for _, asJSON := range []bool{false, true} {
		args := []string{"bench", "-t", "30", "-i", "0.2", "-P", "2", "--pin", fp, addr}
		if asJSON {
			args = append(args[:1], append([]string{"--json"}, args[1:]...)...)
		}
		c := start(t, "bench", nil, nil, args...)
		c.stdin.Close()
		out := make(chan []byte, 1)
		r := bufio.NewReader(c.stdout)
		if !asJSON { // wait for the first interval report
			var head bytes.Buffer
			for i := 0; i < 20; i++ {
				l, err := r.ReadString('\n')
				head.WriteString(l)
				require.NoError(t, err, "stdout so far: %s", head.String())
				if strings.HasPrefix(l, "[  3]   0.00-0.20") {
					break
				}
			}
			go func() { b, _ := io.ReadAll(r); out <- append(head.Bytes(), b...) }()
		} else {
			go func() { b, _ := io.ReadAll(r); out <- b }()
			time.Sleep(700 * time.Millisecond)
		}
		c.signal(syscall.SIGINT)
		code := c.wait(10 * time.Second)
		assert.NotEqual(t, 0, code, "exit code of an interrupted bench")
		assert.Regexp(t, `bpcat bench: interrupted \(SIGINT\)\n$`, c.stderrText())
		b := <-out
		if asJSON {
			doc, _ := decodeBenchDoc(t, b)
			assert.Equal(t, "interrupted (SIGINT)", doc.Error)
			assert.Positive(t, doc.End.SumReceived.Bytes)
			assert.Less(t, doc.End.SumSent.Seconds, 10.0)
			checkIntervals(t, doc, false)
			t.Logf("interrupted --json (exit %d): %d intervals, %d bytes received", code, len(doc.Intervals), doc.End.SumReceived.Bytes)
		} else {
			text := string(b)
			assert.Regexp(t, `(?m)^\[SUM\]   0\.00-\d+\.\d\d +sec .* receiver$`, text)
			assert.Contains(t, text, "ended early (interrupted (SIGINT)): the figures are what was measured until then")
			t.Logf("interrupted (exit %d), last lines:\n%s", code, text[strings.LastIndex(text, "- - -"):])
		}
		srv.waitLine(`^session: 2 streams from .*; ended early: `)
	}
	assert.False(t, srv.exited(), "the server stopped serving")
}
