package trace

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteRead(t *testing.T) {
	start := time.Date(2025, 12, 1, 9, 40, 12, 0, time.UTC)
	var buf bytes.Buffer
	w := NewWriter(&buf, start)
	hook := w.Hook("recv")
	hook(mux.Event{Time: start.Add(1500 * time.Millisecond), Stream: 3, Kind: mux.EventGrant, Limit: 262144, Window: 131072, Consumed: 131072})
	w.Event("send", mux.Event{Time: start.Add(2 * time.Second), Stream: 3, Kind: mux.EventBlocked, Limit: 262144})
	w.Write(Record{T: 3, Side: "we\"ird\n", Stream: 5, Event: "dropped", Dropped: 7})
	require.NoError(t, w.Close())
	assert.Equal(t, int64(4), w.Records(), "the trace record and three events")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4)
	assert.Equal(t, `{"t":1.500000,"ts":"2025-12-01T09:40:13.5Z","side":"recv","stream":3,"event":"grant","limit":262144,"window":131072,"consumed":131072}`, lines[1])
	for _, l := range lines { // the hand-written encoder writes valid JSON
		assert.True(t, json.Valid([]byte(l)), l)
	}

	recs, err := Read(&buf, 0)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	host, _ := os.Hostname()
	tests := []struct {
		name string
		got  Record
		want Record
	}{
		{"trace record first", recs[0], Record{TS: start, Event: EventTrace, Host: host}},
		{"hooked event", recs[1], Record{T: 1.5, TS: start.Add(1500 * time.Millisecond), Side: "recv", Stream: 3, Event: "grant", Limit: 262144, Window: 131072, Consumed: 131072}},
		{"event", recs[2], Record{T: 2, TS: start.Add(2 * time.Second), Side: "send", Stream: 3, Event: "blocked", Limit: 262144}},
		{"raw record, escaped side", recs[3], Record{T: 3, TS: start.Add(3 * time.Second), Side: "we\"ird\n", Stream: 5, Event: "dropped", Dropped: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.True(t, tt.want.TS.Equal(tt.got.TS), "ts %v, want %v", tt.got.TS, tt.want.TS)
			tt.got.TS, tt.want.TS = time.Time{}, time.Time{}
			assert.Equal(t, tt.want, tt.got)
		})
	}
}

// fakeSession has a session's two addresses.
type fakeSession struct{ local, remote net.Addr }

func (f fakeSession) LocalAddr() net.Addr  { return f.local }
func (f fakeSession) RemoteAddr() net.Addr { return f.remote }

func TestSessionRecord(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, time.Now())
	w.Session("relay-up", fakeSession{
		local:  &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000},
		remote: &net.UDPAddr{IP: net.IPv6loopback, Port: 4242},
	})
	w.Session("nil addresses", fakeSession{})
	var nilWriter *Writer
	nilWriter.Session("ignored", fakeSession{}) // a nil Writer records nothing
	require.NoError(t, w.Close())
	recs, err := Read(&buf, 0)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, EventSession, recs[1].Event)
	assert.Equal(t, "relay-up", recs[1].Side)
	assert.Equal(t, "127.0.0.1:5000", recs[1].Local)
	assert.Equal(t, "[::1]:4242", recs[1].Remote)
	assert.Equal(t, "nil addresses", recs[2].Side)
	assert.Empty(t, recs[2].Local)
}

// TestWriteOrder: whatever order events arrive in, records leave in time
// order, each at the later of its event's time and the previous record's.
func TestWriteOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(ms int) mux.Event {
		return mux.Event{Time: start.Add(time.Duration(ms) * time.Millisecond), Stream: 1, Kind: mux.EventConsumed}
	}
	tests := []struct {
		name string
		in   []int     // event times, ms since start, in arrival order
		want []float64 // record times, s
	}{
		{"in order", []int{1, 2, 3}, []float64{0.001, 0.002, 0.003}},
		{"one late", []int{1, 3, 2, 4}, []float64{0.001, 0.003, 0.003, 0.004}},
		{"before the start", []int{-5, 1}, []float64{0, 0.001}},
		{"all equal", []int{7, 7}, []float64{0.007, 0.007}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, start)
			for _, ms := range tt.in {
				w.Event("recv", at(ms))
			}
			require.NoError(t, w.Close())
			recs, err := Read(&buf, 0)
			require.NoError(t, err)
			var got []float64
			for _, r := range recs[1:] {
				got = append(got, r.T)
				assert.True(t, start.Add(time.Duration(r.T*1e9)).Equal(r.TS), "ts agrees with t")
			}
			assert.InDeltaSlice(t, tt.want, got, 1e-9)
		})
	}
}

// TestConcurrentWritesInOrder: events from many goroutines come out in
// time order.
func TestConcurrentWritesInOrder(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, time.Now())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hook := w.Hook("side" + string(rune('a'+g)))
			for range 500 {
				hook(mux.Event{Time: time.Now(), Stream: 1, Kind: mux.EventCredit})
			}
		}()
	}
	wg.Wait()
	require.NoError(t, w.Close())
	recs, err := Read(&buf, 0)
	require.NoError(t, err)
	require.Len(t, recs, 1+8*500)
	for i := 1; i < len(recs); i++ {
		require.False(t, recs[i].TS.Before(recs[i-1].TS), "record %d is older than %d", i, i-1)
		require.GreaterOrEqual(t, recs[i].T, recs[i-1].T)
	}
}

func TestReadOldTrace(t *testing.T) {
	recs, err := Read(strings.NewReader(`{"t":0.5,"side":"recv","stream":1,"event":"grant","limit":10}`+"\n"), 0)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.True(t, recs[0].TS.IsZero(), "no wall-clock time in an old trace")
	assert.Equal(t, 0.5, recs[0].T)
}

func TestReadRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":      "hello\n",
		"no event":      `{"t":1,"stream":1}` + "\n",
		"bad ts":        `{"t":1,"ts":"yesterday","event":"a"}` + "\n",
		"line too long": `{"t":1,"event":"` + strings.Repeat("x", MaxLine) + `"}` + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Read(strings.NewReader(in), 0)
			require.ErrorIs(t, err, ErrBadTrace)
		})
	}
	_, err := Read(strings.NewReader(`{"t":1,"event":"a"}`+"\n"+`{"t":2,"event":"b"}`+"\n"), 1)
	require.Error(t, err, "more records than allowed")
}

func TestWriteAllocatesNothing(t *testing.T) {
	w := NewWriter(&bytes.Buffer{}, time.Unix(0, 0))
	ev := mux.Event{Time: time.Unix(1, 0), Stream: 1, Kind: mux.EventConsumed, Consumed: 1 << 20}
	allocs := testing.AllocsPerRun(1000, func() { w.Event("recv", ev) })
	assert.Zero(t, allocs)
}
