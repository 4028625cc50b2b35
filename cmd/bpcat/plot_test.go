package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeTrace writes a trace of n events of one side to a file in dir.
func writeTrace(t *testing.T, dir, name, side string, kind mux.EventKind, start time.Time, n int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	require.NoError(t, err)
	w := trace.NewWriter(f, start)
	hook := w.Hook(side)
	for i := range n {
		hook(mux.Event{Time: start.Add(time.Duration(i) * time.Millisecond), Stream: 1, Kind: kind, Consumed: uint64(i) << 16, Window: 1 << 18, Credit: uint64(i%4) << 14})
	}
	require.NoError(t, w.Close())
	return path
}

func TestPlotFiles(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	a := writeTrace(t, dir, "a.jsonl", "listen", mux.EventGrant, start, 500)
	b := writeTrace(t, dir, "b.jsonl", "connect", mux.EventCredit, start.Add(20*time.Millisecond), 500)
	empty := writeTrace(t, dir, "empty.jsonl", "listen", mux.EventGrant, start, 0)
	tests := []struct {
		name       string
		files      []string
		out        string
		maxRecords int
		wantN      int
		wantErr    string
	}{
		{"one end", []string{a}, "one.png", 0, 501, ""},
		{"two ends overlaid", []string{a, b}, "two.png", 0, 1002, ""},
		{"svg", []string{a, b}, "two.svg", 0, 1002, ""},
		{"bound over all files", []string{a, b}, "big.png", 600, 0, "--max-records 600"},
		{"no events", []string{empty}, "none.png", 0, 0, "no events to plot"},
		{"bad extension", []string{a}, "x.gif", 0, 0, ".svg or .png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.out)
			n, err := plotFiles(tt.files, out, trace.PlotOptions{}, tt.maxRecords)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NoFileExists(t, out)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantN, n)
			if filepath.Ext(out) != ".png" {
				return
			}
			f, err := os.Open(out)
			require.NoError(t, err)
			defer f.Close()
			img, err := png.Decode(f)
			require.NoError(t, err)
			assert.Equal(t, 960, img.Bounds().Dx())
			assert.Equal(t, 720, img.Bounds().Dy())
		})
	}
}

// qlogEnd returns a JSON-SEQ qlog file of one end of a connection, by hand
// per docs/qlog.md and quic-go's layout: the header, then events at ms
// since ref, each a separator, a JSON text and a newline.
func qlogEnd(vp string, ref time.Time, events ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "\x1e"+`{"file_schema":"urn:ietf:params:qlog:file:sequential","serialization_format":"application/qlog+json-seq","title":"quic-go qlog","code_version":"(devel)","trace":{"event_schemas":["urn:ietf:params:qlog:events:quic-14","%s"],"vantage_point":{"type":"%s"},"common_fields":{"group_id":"c0ffee","reference_time":{"clock_type":"monotonic","epoch":"unknown","wall_clock_time":"%s"}}},"qlog_format":"JSON-SEQ","qlog_version":"0.3"}`+"\n",
		trace.QlogSchema, vp, ref.Format(time.RFC3339Nano))
	for _, e := range events {
		b.WriteString("\x1e" + e + "\n")
	}
	return []byte(b.String())
}

// writeQlogPair writes a client's and a server's qlog files of one
// connection to dir: the client is held by the peer's window while the
// server's data waits unread, then by the transport; the server loses a
// packet.
func writeQlogPair(t *testing.T, dir string) (client, server string) {
	t.Helper()
	ref := time.Now().UTC()
	var cev, sev []string
	for i := range 50 {
		ms := float64(i * 20)
		cev = append(cev, fmt.Sprintf(`{"time":%g,"name":"bp:window_update_received","data":{"stream_id":0,"limit":%d,"credit":%d,"maximum":%d,"peer_consumed":%d}}`, ms+1, 65536+i*16384, (i%4)*16384, 65536+i*16384, i*16384),
			fmt.Sprintf(`{"time":%g,"name":"transport:packet_sent","data":{"header":{"packet_type":"1RTT","packet_number":%d},"raw":{"length":1252}}}`, ms+2, i))
		sev = append(sev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_moved","data":{"stream_id":0,"window":65536,"consumed":%d,"buffered":%d,"offset":%d,"length":16384,"from":"bp","to":"application"}}`, ms+0.5, (i+1)*16384, (i%3)*16384, i*16384))
		switch i {
		case 10:
			cev = append(cev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_blocked_updated","data":{"stream_id":0,"state":"blocked","reason":"peer_window","side":"send"}}`, ms+3))
			sev = append(sev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_blocked_updated","data":{"stream_id":0,"state":"blocked","reason":"unread","side":"recv","buffered":65536}}`, ms+4))
		case 20:
			cev = append(cev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_blocked_updated","data":{"stream_id":0,"state":"unblocked","reason":"peer_window","side":"send","blocked_ms":200,"signal_latency_ms":0.4}}`, ms+3))
			sev = append(sev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_blocked_updated","data":{"stream_id":0,"state":"unblocked","reason":"unread","side":"recv","blocked_ms":199}}`, ms+3),
				fmt.Sprintf(`{"time":%g,"name":"recovery:packet_lost","data":{"header":{"packet_type":"1RTT","packet_number":77},"trigger":"time_threshold"}}`, ms+5))
		case 30:
			cev = append(cev, fmt.Sprintf(`{"time":%g,"name":"bp:stream_data_blocked_updated","data":{"stream_id":0,"state":"unblocked","reason":"transport","side":"send","blocked_ms":35}}`, ms+3))
		}
	}
	client, server = filepath.Join(dir, "c0ffee_client.sqlog"), filepath.Join(dir, "c0ffee_server.sqlog")
	require.NoError(t, os.WriteFile(client, qlogEnd("client", ref, cev...), 0o644))
	require.NoError(t, os.WriteFile(server, qlogEnd("server", ref.Add(3*time.Millisecond), sev...), 0o644))
	return client, server
}

// TestPlotQlog: bpcat plot reads both ends' qlog files, by name or as
// their directory, beside JSON-lines traces; a qlog without bp/1's events,
// and a directory without qlog files, are errors that say so; a qlog cut
// short is plotted with a warning.
func TestPlotQlog(t *testing.T) {
	dir := t.TempDir()
	qdir := filepath.Join(dir, "qlog")
	require.NoError(t, os.Mkdir(qdir, 0o755))
	client, server := writeQlogPair(t, qdir)
	jsonl := writeTrace(t, dir, "a.jsonl", "listen", mux.EventGrant, time.Now(), 100)
	quicOnly := filepath.Join(dir, "quic_client.sqlog")
	require.NoError(t, os.WriteFile(quicOnly, bytes.ReplaceAll(qlogEnd("client", time.Now(), `{"time":1,"name":"transport:packet_sent","data":{}}`), []byte(`,"`+trace.QlogSchema+`"`), nil), 0o644))
	cut := filepath.Join(dir, "cut_client.sqlog")
	full, err := os.ReadFile(client)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cut, full[:len(full)-30], 0o644))
	empty := t.TempDir()

	tests := []struct {
		name     string
		args     []string
		code     int
		wantErr  string // in stderr
		wantWarn string
	}{
		{"both ends by name", []string{client, server}, 0, "", ""},
		{"the directory", []string{qdir}, 0, "", ""},
		{"qlog beside JSON lines", []string{qdir, jsonl}, 0, "", ""},
		{"cut short", []string{cut, server}, 0, "", "cut_client.sqlog: the last record was cut short"},
		{"no bp events", []string{quicOnly}, exitError, "no bp/1 events among its 1 qlog events: its header does not list bp/1's schema", ""},
		{"no qlog in the directory", []string{empty}, exitUsage, "no .sqlog files in the directory", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("q%d.png", i))
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
			code := run(context.Background(), e, append([]string{"plot", "-o", out}, tt.args...))
			require.Equal(t, tt.code, code, "stderr: %s", stderr.String())
			if tt.code != 0 {
				assert.Contains(t, stderr.String(), tt.wantErr)
				assert.NoFileExists(t, out)
				return
			}
			assert.Contains(t, stderr.String(), tt.wantWarn)
			assert.Contains(t, stderr.String(), "plotted ")
			f, err := os.Open(out)
			require.NoError(t, err)
			defer f.Close()
			img, err := png.Decode(f)
			require.NoError(t, err)
			assert.Equal(t, 960, img.Bounds().Dx())
		})
	}
}

// qlogTransfer runs a real transfer over QUIC on 127.0.0.1 with qlog on
// at both ends, into dir, and returns once both files are complete: the
// client writes size bytes on each of streams streams at once; the server
// reads each as slowRead does. The server's session budget holds a
// window and a half besides its fixed memory (the session's and two
// streams'): the first stream's window grows into it, and the others'
// growth is refused.
func qlogTransfer(t *testing.T, dir string, streams, size int, pause time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), &mux.Config{QlogDir: dir, InitialWindow: 64 << 10, MaxWindow: 1 << 20, SessionBudget: 1536<<10 + mux.SessionOverhead + 2*mux.StreamOverhead})
	require.NoError(t, err)
	defer ln.Close()
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	read := make(chan error, streams+1)
	go func() {
		sess, err := ln.Accept(ctx)
		if err != nil {
			read <- err
			return
		}
		defer sess.Close()
		var wg sync.WaitGroup
		for range streams {
			st, err := sess.Accept(ctx)
			if err != nil {
				read <- err
				break
			}
			wg.Go(func() { read <- slowRead(st, size, pause) })
		}
		wg.Wait()
	}()
	sess, err := bp.Dial(ctx, ln.Addr().String(), pin, &mux.Config{QlogDir: dir})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range streams {
		st, err := sess.Open(ctx)
		require.NoError(t, err)
		wg.Go(func() {
			_, err := st.Write(make([]byte, size))
			assert.NoError(t, err)
			assert.NoError(t, st.Close())
		})
	}
	wg.Wait()
	for range streams {
		require.NoError(t, <-read)
	}
	<-sess.Done()
	require.NoError(t, ln.Close())
	// Each file is closed once its connection and its session are done.
	require.Eventually(t, func() bool {
		ms, _ := filepath.Glob(filepath.Join(dir, "*.sqlog"))
		if len(ms) != 2 {
			return false
		}
		for _, m := range ms {
			b, err := os.ReadFile(m)
			if err != nil || !bytes.Contains(b, []byte(`"name":"bp:session_closed"`)) || !bytes.Contains(b, []byte(`"name":"transport:connection_closed"`)) {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "both ends' qlog files complete")
}

// slowRead reads size bytes of st, then to its end: a quarter as fast as
// it can, a quarter slowly (16 KiB every 2 ms) after stopping for pause,
// and the rest fast after stopping again.
func slowRead(st io.Reader, size int, pause time.Duration) error {
	phases := []struct {
		n          int
		stop, pace time.Duration
	}{{size / 4, 0, 0}, {size / 4, pause, 2 * time.Millisecond}, {size - size/2, pause, 0}}
	buf := make([]byte, 16<<10)
	for _, p := range phases {
		time.Sleep(p.stop)
		for left := p.n; left > 0; {
			n, err := io.ReadFull(st, buf[:min(len(buf), left)])
			left -= n
			if err != nil {
				return err
			}
			time.Sleep(p.pace)
		}
	}
	_, err := io.Copy(io.Discard, st)
	return err
}

// TestPlotRealQlog plots both ends' qlog files of a real transfer whose
// reader stops and resumes: every record parses, both ends are drawn,
// and stalls of both sides are there. With BPCAT_QLOG_PNG set, the
// picture is also written there (docs/bpcat-qlog.png is made so).
func TestPlotRealQlog(t *testing.T) {
	if testing.Short() {
		t.Skip("a real transfer")
	}
	dir := t.TempDir()
	qlogTransfer(t, dir, 2, 16<<20, 400*time.Millisecond)
	ms, err := filepath.Glob(filepath.Join(dir, "*.sqlog"))
	require.NoError(t, err)
	reasons := map[string]int{}
	for _, m := range ms {
		f, err := os.Open(m)
		require.NoError(t, err)
		tr, err := trace.ReadAny(f, 0)
		f.Close()
		require.NoError(t, err, m)
		require.NotNil(t, tr.Qlog)
		assert.False(t, tr.Qlog.Truncated, m)
		assert.Positive(t, tr.Qlog.BP, m)
		for _, r := range tr.Records {
			if r.Event == "unblocked" {
				reasons[r.Reason]++
				assert.Positive(t, r.Duration, "an unblocked event says how long the stall lasted")
			}
		}
	}
	t.Logf("stalls by reason: %v", reasons)
	assert.Positive(t, reasons["peer_window"]+reasons["session_budget"], "the writer was held for credit")
	assert.Positive(t, reasons["unread"], "the reader's data waited unread")

	out := filepath.Join(dir, "real.png")
	if p := os.Getenv("BPCAT_QLOG_PNG"); p != "" {
		out = p
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}, []string{"plot", dir, "-o", out})
	require.Equal(t, 0, code, stderr.String())
	t.Log(strings.TrimSpace(stderr.String()))
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	_, err = png.Decode(f)
	require.NoError(t, err)
}
