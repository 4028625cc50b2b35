package trace

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteRead(t *testing.T) {
	start := time.Unix(1000, 0)
	var buf bytes.Buffer
	w := NewWriter(&buf, start)
	hook := w.Hook("recv")
	hook(mux.Event{Time: start.Add(1500 * time.Millisecond), Stream: 3, Kind: mux.EventGrant, Limit: 262144, Window: 131072, Consumed: 131072})
	w.Event("send", mux.Event{Time: start.Add(2 * time.Second), Stream: 3, Kind: mux.EventBlocked, Limit: 262144})
	w.Write(Record{T: 3, Side: `we"ird`, Stream: 5, Event: "dropped", Dropped: 7})
	require.NoError(t, w.Close())
	assert.Equal(t, int64(3), w.Records())

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	assert.Equal(t, `{"t":1.500000,"side":"recv","stream":3,"event":"grant","limit":262144,"window":131072,"consumed":131072}`, lines[0])
	for _, l := range lines { // the hand-written encoder writes valid JSON
		assert.True(t, json.Valid([]byte(l)), l)
	}

	recs, err := Read(&buf, 0)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, Record{T: 1.5, Side: "recv", Stream: 3, Event: "grant", Limit: 262144, Window: 131072, Consumed: 131072}, recs[0])
	assert.Equal(t, Record{T: 2, Side: "send", Stream: 3, Event: "blocked", Limit: 262144}, recs[1])
	assert.Equal(t, `we"ird`, recs[2].Side)
}

func TestReadRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":      "hello\n",
		"no event":      `{"t":1,"stream":1}` + "\n",
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
