package bp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// qlogRecord is one record of a qlog JSON-SEQ file: the header, or an
// event.
type qlogRecord struct {
	// Header fields.
	FileSchema          string `json:"file_schema"`
	SerializationFormat string `json:"serialization_format"`
	Trace               *struct {
		EventSchemas []string `json:"event_schemas"`
		VantagePoint struct {
			Type string `json:"type"`
		} `json:"vantage_point"`
	} `json:"trace"`
	// Event fields.
	Time *float64       `json:"time"`
	Name string         `json:"name"`
	Data map[string]any `json:"data"`
}

// readQlogStrict parses a JSON-SEQ file (RFC 7464) strictly: every record
// starts with 0x1E, ends with a newline, and is one JSON object with no
// unknown trailing bytes.
func readQlogStrict(t *testing.T, b []byte) []qlogRecord {
	t.Helper()
	require.NotEmpty(t, b)
	require.Equal(t, byte(0x1e), b[0], "a JSON-SEQ file starts with RS")
	var out []qlogRecord
	for i, rec := range bytes.Split(b[1:], []byte{0x1e}) {
		require.True(t, bytes.HasSuffix(rec, []byte("\n")), "record %d ends with a newline", i)
		dec := json.NewDecoder(bytes.NewReader(rec))
		dec.UseNumber()
		var raw map[string]any
		require.NoError(t, dec.Decode(&raw), "record %d: %q", i, rec)
		rest, _ := io.ReadAll(dec.Buffered())
		require.Empty(t, strings.TrimSpace(string(rest)), "record %d has trailing bytes", i)
		var r qlogRecord
		require.NoError(t, json.Unmarshal(rec, &r), "record %d", i)
		out = append(out, r)
	}
	return out
}

// waitQlogFiles waits until dir holds n qlog files whose last record is
// complete and that have stopped growing: QUIC and the session have both
// closed their parts of each trace.
func waitQlogFiles(t *testing.T, dir string, n int) []string {
	t.Helper()
	var files []string
	sizes := map[string]int64{}
	stable := 0
	require.Eventually(t, func() bool {
		files, _ = filepath.Glob(filepath.Join(dir, "*.sqlog"))
		if len(files) != n {
			return false
		}
		grew := false
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				return false
			}
			if fi.Size() != sizes[f] {
				grew = true
				sizes[f] = fi.Size()
			}
		}
		if grew {
			stable = 0
			return false
		}
		stable++
		return stable >= 5
	}, 15*time.Second, 20*time.Millisecond, "qlog files in %s", dir)
	return files
}

// TestQlogTrace runs a transfer with qlog on and a reader that stops and
// resumes, then reads both ends' files strictly: each lists bp/1's schema
// beside QUIC's, interleaves both stacks' events in time order, and shows
// every stall of the stream's stats as a blocked/unblocked pair with its
// reason.
func TestQlogTrace(t *testing.T) {
	dir := t.TempDir()
	const window = 64 << 10
	cfg := &mux.Config{InitialWindow: window, MaxWindow: window, QlogDir: dir}
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	require.NoError(t, err)
	defer ln.Close()
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type accepted struct {
		sess *mux.Session
		st   mux.StreamStats
		n    int64
		err  error
	}
	got := make(chan accepted, 1)
	go func() {
		sess, err := ln.Accept(ctx)
		if err != nil {
			got <- accepted{err: err}
			return
		}
		s, err := sess.Accept(ctx)
		if err != nil {
			got <- accepted{err: err}
			return
		}
		time.Sleep(150 * time.Millisecond) // the reader stops, then resumes
		n, err := io.Copy(io.Discard, s)
		st := s.Stats()
		s.Close()
		got <- accepted{sess: sess, st: st, n: n, err: err}
	}()

	client, err := bp.Dial(ctx, ln.Addr().String(), pin, cfg)
	require.NoError(t, err)
	s, err := client.Open(ctx)
	require.NoError(t, err)
	const size = 1 << 20
	_, err = io.CopyN(s, bytes.NewReader(make([]byte, size)), size)
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	a := <-got
	require.NoError(t, a.err)
	require.EqualValues(t, size, a.n)
	require.NoError(t, s.WaitConsumed(ctx))
	clientStats := s.Stats()
	require.NoError(t, s.Close())
	require.NoError(t, client.Shutdown(ctx))
	<-a.sess.Done()

	files := waitQlogFiles(t, dir, 2)
	perSide := map[string][]qlogRecord{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		recs := readQlogStrict(t, b)
		hdr := recs[0]
		require.NotNil(t, hdr.Trace, "%s: the first record is the header", f)
		assert.Equal(t, "urn:ietf:params:qlog:file:sequential", hdr.FileSchema)
		assert.Equal(t, "application/qlog+json-seq", hdr.SerializationFormat)
		assert.Contains(t, hdr.Trace.EventSchemas, mux.QlogSchema)
		assert.False(t, strings.HasPrefix(mux.QlogSchema, "urn:ietf:params:qlog"), "a private schema")
		perSide[hdr.Trace.VantagePoint.Type] = recs[1:]
	}
	require.Contains(t, perSide, "client")
	require.Contains(t, perSide, "server")

	for side, evs := range perSide {
		last, quicEvents, bpEvents, switches := -1.0, 0, 0, 0
		prevBP := false
		for i, ev := range evs {
			require.NotNil(t, ev.Time, "%s event %d has a time", side, i)
			require.GreaterOrEqual(t, *ev.Time, last, "%s: events in time order (%d: %s)", side, i, ev.Name)
			last = *ev.Time
			isBP := strings.HasPrefix(ev.Name, "bp:")
			switch {
			case isBP:
				bpEvents++
			case strings.HasPrefix(ev.Name, "quic:") || strings.HasPrefix(ev.Name, "transport:"):
				quicEvents++
			}
			if i > 0 && isBP != prevBP {
				switches++
			}
			prevBP = isBP
		}
		assert.Positive(t, quicEvents, side)
		assert.Positive(t, bpEvents, side)
		assert.Greater(t, switches, 10, "%s: the two stacks' events are interleaved, not appended", side)
		assert.Equal(t, "bp:session_closed", lastBP(evs).Name, "%s: the session's last event", side)
	}

	// Every stall in the stats is in the trace, with its reason.
	check := func(side string, id uint64, st mux.StreamStats) {
		t.Helper()
		blocked, unblocked := map[string]int{}, map[string]int{}
		var blockedMs = map[string]float64{}
		for _, ev := range perSide[side] {
			if ev.Name != "bp:stream_data_blocked_updated" || fmt.Sprint(ev.Data["stream_id"]) != fmt.Sprint(id) {
				continue
			}
			reason, _ := ev.Data["reason"].(string)
			require.NotEmpty(t, reason, "every stall event has a reason")
			switch ev.Data["state"] {
			case "blocked":
				blocked[reason]++
			case "unblocked":
				unblocked[reason]++
				ms, _ := ev.Data["blocked_ms"].(float64)
				blockedMs[reason] += ms
			default:
				t.Fatalf("state %v", ev.Data["state"])
			}
		}
		for _, r := range mux.BlockReasons() {
			stall := st.Blocked.Of(r)
			assert.Equal(t, int(stall.Count), unblocked[r.String()], "%s %v: unblocked events", side, r)
			assert.InDelta(t, stall.Time.Seconds()*1e3, blockedMs[r.String()], 0.01*float64(stall.Count)+0.01, "%s %v: durations", side, r)
		}
		// A stall's blocked event comes first; a short transport stall is
		// seen when it ends only, and the credit reasons settle at the end.
		credit := st.Blocked.Of(mux.ReasonPeerWindow).Count + st.Blocked.Of(mux.ReasonSessionBudget).Count
		assert.Equal(t, int(credit), blocked["peer_window"]+blocked["session_budget"], "%s: blocked events for credit", side)
		assert.Equal(t, int(st.Blocked.Of(mux.ReasonUnread).Count), blocked["unread"], "%s: blocked events for unread data", side)
	}
	require.Positive(t, clientStats.Blocked.Of(mux.ReasonPeerWindow).Count, "the stop stalled the writer")
	require.Positive(t, a.st.Blocked.Of(mux.ReasonUnread).Count, "and the receiver saw it as unread")
	check("client", s.ID(), clientStats)
	check("server", s.ID(), a.st)
}

func lastBP(evs []qlogRecord) qlogRecord {
	for i := len(evs) - 1; i >= 0; i-- {
		if strings.HasPrefix(evs[i].Name, "bp:") {
			return evs[i]
		}
	}
	return qlogRecord{}
}
