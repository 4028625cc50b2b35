package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quicSchema is quic-go's event schema, as its headers list it.
const quicSchema = "urn:ietf:params:qlog:events:quic-14"

// qev is one event of a hand-written qlog file: its time in ms, name and
// data (a JSON object).
type qev struct {
	ms   float64
	name string
	data string
}

// qlogHeader returns a trace header as quic-go writes it, with the
// vantage point, reference time and schemas given.
func qlogHeader(vp string, ref time.Time, schemas ...string) string {
	quoted := make([]string, len(schemas))
	for i, s := range schemas {
		quoted[i] = `"` + s + `"`
	}
	return `{"file_schema":"urn:ietf:params:qlog:file:sequential","serialization_format":"application/qlog+json-seq","title":"quic-go qlog","code_version":"(devel)",` +
		`"trace":{"event_schemas":[` + strings.Join(quoted, ",") + `],"vantage_point":{"type":"` + vp + `"},` +
		`"common_fields":{"group_id":"2d1bc75bb82dc17f","reference_time":{"clock_type":"monotonic","epoch":"unknown","wall_clock_time":"` + ref.Format(time.RFC3339Nano) + `"}}},` +
		`"qlog_format":"JSON-SEQ","qlog_version":"0.3"}`
}

// qlogFile returns a JSON-SEQ file: the header and the events, each record
// a separator, the JSON text and a newline, as quic-go writes them.
func qlogFile(header string, evs ...qev) []byte {
	var b bytes.Buffer
	b.WriteString("\x1e" + header + "\n")
	for _, e := range evs {
		fmt.Fprintf(&b, "\x1e{\"time\":%g,\"name\":%q,\"data\":%s}\n", e.ms, e.name, e.data)
	}
	return b.Bytes()
}

var qref = time.Date(2026, 12, 1, 11, 25, 59, 14993640, time.UTC)

// bpEvents are a few events of bp/1 and QUIC, one of each kind a reader
// converts, in the order of docs/qlog.md.
var bpEvents = []qev{
	{0.036, "transport:connection_started", `{"local":{"address_v4":{"ip":"127.0.0.1","port":4242}},"remote":{"address_v6":{"ip":"::1","port":5000}}}`},
	{1, "bp:stream_state_updated", `{"stream_id":4,"new":"open","initiator":"remote"}`},
	{2, "bp:window_update_sent", `{"stream_id":4,"maximum":262144,"limit":262144,"window":131072,"consumed":131072}`},
	{3, "bp:window_update_received", `{"stream_id":4,"maximum":393216,"peer_consumed":131072,"limit":393216,"credit":65536}`},
	{4, "bp:window_updated", `{"stream_id":4,"window":262144}`},
	{5, "bp:stream_data_moved", `{"stream_id":4,"offset":131072,"length":16384,"from":"bp","to":"application","buffered":4096,"window":262144}`},
	{6, "bp:stream_data_blocked_updated", `{"stream_id":4,"state":"blocked","reason":"peer_window","side":"send","limit":393216}`},
	{8.5, "bp:stream_data_blocked_updated", `{"stream_id":4,"state":"unblocked","reason":"peer_window","side":"send","blocked_ms":2.5,"signal_latency_ms":0.75,"credit":65536}`},
	{9, "bp:peer_blocked", `{"stream_id":4,"blocked_at":262144}`},
	{10, "bp:data_dropped", `{"stream_id":4,"length":512}`},
	{11, "bp:budget_refused", `{"stream_id":4,"wanted":65536,"window":131072}`},
	{12, "bp:threshold_crossed", `{"stream_id":4,"metric":"stall","level":"warning","value":150.5}`},
	{13, "recovery:packet_lost", `{"header":{"packet_type":"1RTT","packet_number":7},"trigger":"reordering_threshold"}`},
	{14, "bp:goaway", `{"stream_id":0,"owner":"remote","last_stream_id":8,"error_code":0}`},
	{15, "bp:rtt_sample", `{"stream_id":0,"latest_rtt":0.25}`},
	{16, "bp:stream_state_updated", `{"stream_id":4,"new":"reset_received","error_code":3}`},
	{17, "bp:session_closed", `{"stream_id":0,"owner":"local","error_code":0}`},
	{18, "transport:packet_sent", `{"header":{"packet_type":"1RTT","packet_number":9},"raw":{"length":47}}`},
}

func TestReadQlog(t *testing.T) {
	header := qlogHeader("server", qref, quicSchema, QlogSchema)
	valid := qlogFile(header, bpEvents...)
	last := len(bpEvents) // the last record's index
	tests := []struct {
		name      string
		file      []byte
		events    int
		truncated bool
		wantErr   string // "" for none
	}{
		{"valid", valid, len(bpEvents), false, ""},
		{"no final newline, last record whole", bytes.TrimSuffix(valid, []byte("\n")), len(bpEvents), false, ""},
		{"empty records skipped", bytes.ReplaceAll(valid, []byte("\x1e"), []byte("\x1e\x1e")), len(bpEvents), false, ""},
		{"truncated last record tolerated", valid[:len(valid)-20], len(bpEvents) - 1, true, ""},
		{"a bare separator at the end", append(bytes.Clone(valid), 0x1e), len(bpEvents), true, ""},
		{"empty file", nil, 0, false, "the file is empty"},
		{"no separator at the start", valid[1:], 0, false, "record 0 (offset 0) does not begin with the record separator"},
		{"missing separator between records", bytes.Replace(valid, []byte("\n\x1e{\"time\":2,"), []byte("\n{\"time\":2,"), 1), 0, false, "record 2 (offset"},
		{"garbage record in the middle", bytes.Replace(valid, []byte("\x1e{\"time\":4,"), []byte("\x1e{garbage\n\x1e{\"time\":4,"), 1), 0, false, "record 5 (offset"},
		{"garbage last record with its newline", append(bytes.Clone(valid), "\x1e{garbage}\n"...), 0, false, fmt.Sprintf("record %d (offset", last+1)},
		{"event without time", append(qlogFile(header), "\x1e{\"name\":\"bp:goaway\",\"data\":{}}\n"...), 0, false, fmt.Sprintf("record 1 (offset %d) has no time", len(qlogFile(header)))},
		{"event without name", append(qlogFile(header), "\x1e{\"time\":1,\"data\":{}}\n"...), 0, false, fmt.Sprintf("record 1 (offset %d) has no name", len(qlogFile(header)))},
		{"oversize record refused", qlogFile(header, qev{1, "bp:window_updated", `{"pad":"` + strings.Repeat("x", MaxQlogRecord) + `"}`}), 0, false, "record 1 (offset"},
		{"not qlog: file_schema", qlogFile(strings.Replace(header, "file:sequential", "file:contained", 1)), 0, false, "file_schema"},
		{"not qlog: serialization_format", qlogFile(strings.Replace(header, "qlog+json-seq", "qlog+json", 1)), 0, false, "serialization_format"},
		{"no serialization_format", qlogFile(strings.Replace(header, `"serialization_format":"application/qlog+json-seq",`, "", 1)), 0, false, "no serialization_format"},
		{"truncated header", []byte("\x1e" + header[:40]), 0, false, "record 0 (the header) is cut short"},
		{"bad reference time", qlogFile(strings.Replace(header, qref.Format(time.RFC3339Nano), "yesterday", 1)), 0, false, "reference time"},
		{"unsupported time format", qlogFile(strings.Replace(header, `"group_id"`, `"time_format":"relative_to_previous_event","group_id"`, 1)), 0, false, "time_format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ReadQlog(bytes.NewReader(tt.file), 0)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.ErrorIs(t, err, ErrBadQlog)
				return
			}
			require.NoError(t, err)
			assert.Len(t, tr.Events, tt.events)
			assert.Equal(t, tt.truncated, tr.Truncated)
		})
	}
}

func TestReadQlogHeaderAndEvents(t *testing.T) {
	tr, err := ReadQlog(bytes.NewReader(qlogFile(qlogHeader("server", qref, quicSchema, QlogSchema), bpEvents...)), 0)
	require.NoError(t, err)
	h := tr.Header
	assert.Equal(t, QlogFileSchema, h.FileSchema)
	assert.Equal(t, QlogSerialization, h.SerializationFormat)
	assert.Equal(t, "quic-go qlog", h.Title)
	assert.Equal(t, []string{quicSchema, QlogSchema}, h.EventSchemas)
	assert.True(t, h.HasSchema(QlogSchema))
	assert.Equal(t, "server", h.VantagePoint)
	assert.Equal(t, "2d1bc75bb82dc17f", h.GroupID)
	assert.True(t, h.ReferenceTime.Equal(qref), "%v", h.ReferenceTime)

	ev := tr.Events[7]
	assert.Equal(t, 8, ev.Index, "the header is record 0")
	assert.Equal(t, "bp:stream_data_blocked_updated", ev.Name)
	assert.InDelta(t, 8.5, ev.Time, 1e-12)
	assert.True(t, ev.Wall.Equal(qref.Add(8500*time.Microsecond)), "%v", ev.Wall)
	assert.JSONEq(t, bpEvents[7].data, string(ev.Data))

	_, err = ReadQlog(bytes.NewReader(qlogFile(qlogHeader("server", qref, QlogSchema), bpEvents...)), 5)
	assert.ErrorContains(t, err, "more than 5 qlog events")
}

// TestQlogRecord: each of bp/1's events becomes the Record of the
// mux.EventKind it mirrors, with its stream's state.
func TestQlogRecord(t *testing.T) {
	f, err := ReadAny(bytes.NewReader(qlogFile(qlogHeader("server", qref, quicSchema, QlogSchema), bpEvents...)), 0)
	require.NoError(t, err)
	require.Equal(t, FormatQlog, f.Format)
	at := func(ms float64) time.Time { return qref.Add(time.Duration(ms * float64(time.Millisecond))) }
	want := []Record{
		{Event: EventTrace},
		{Event: EventSession, Local: "127.0.0.1:4242", Remote: "[::1]:5000"},
		{Stream: 4, Event: "stream_opened", ByPeer: true},
		{Stream: 4, Event: "grant", Limit: 262144, Window: 131072, Consumed: 131072},
		{Stream: 4, Event: "credit", Limit: 393216, Consumed: 131072, Credit: 65536},
		{Stream: 4, Event: "window", Window: 262144},
		{Stream: 4, Event: "consumed", Consumed: 147456, Buffered: 4096, Window: 262144},
		{Stream: 4, Event: "blocked", Reason: "peer_window", Limit: 393216},
		{Stream: 4, Event: "unblocked", Reason: "peer_window", Duration: 0.0025, Signal: 0.00075, Credit: 65536},
		{Stream: 4, Event: "peer_blocked", Limit: 262144},
		{Stream: 4, Event: "dropped", Dropped: 512},
		{Stream: 4, Event: "budget_refused", Value: 65536, Window: 131072},
		{Stream: 4, Event: "threshold", Metric: "stall", Level: "warning", Value: 150_500_000},
		{Event: EventPacketLost},
		{Event: "goaway", ByPeer: true, Limit: 8},
		{Event: "rtt", Duration: 0.00025},
		{Stream: 4, Event: "stream_reset", ByPeer: true, Code: 3},
		{Event: "session_closed"},
		{Event: EventEnd},
	}
	times := []float64{0, 0.036, 1, 2, 3, 4, 5, 6, 8.5, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}
	require.Len(t, f.Records, len(want))
	for i, w := range want {
		got := f.Records[i]
		w.Side = "server"
		w.T, w.TS = times[i]/1e3, at(times[i])
		assert.True(t, w.TS.Equal(got.TS), "record %d: ts %v, want %v", i, got.TS, w.TS)
		got.TS, w.TS = time.Time{}, time.Time{}
		assert.InDelta(t, w.T, got.T, 1e-12, "record %d", i)
		got.T, w.T = 0, 0
		assert.InDelta(t, w.Duration, got.Duration, 1e-12, "record %d", i)
		assert.InDelta(t, w.Signal, got.Signal, 1e-12, "record %d", i)
		got.Duration, w.Duration, got.Signal, w.Signal = 0, 0, 0, 0
		assert.Equal(t, w, got, "record %d", i)
	}
	q := f.Qlog
	require.NotNil(t, q)
	assert.Equal(t, len(bpEvents), q.Events)
	assert.Equal(t, 15, q.BP)
	assert.Equal(t, 2, q.Names["bp:stream_data_blocked_updated"])
	assert.Equal(t, 1, q.Names["transport:packet_sent"])
	assert.False(t, q.Truncated)
}

// TestQlogRecordEdges: unknown events of bp/1 are kept as events and left
// out of the Records; a file whose header does not declare bp/1's schema
// has none of its events converted; a bp/1 event whose data does not
// parse is an error.
func TestQlogRecordEdges(t *testing.T) {
	unknown := qev{1, "bp:future_event", `{"stream_id":4,"novel":true}`}
	unblocked := qev{2, "bp:stream_data_blocked_updated", `{"stream_id":4,"state":"unblocked","side":"recv","blocked_ms":1}`}
	tests := []struct {
		name    string
		header  string
		evs     []qev
		records []string // the events of the Records between the trace's and its end
		wantErr string
	}{
		{"unknown bp event left out", qlogHeader("client", qref, QlogSchema), []qev{unknown, unblocked}, []string{"unblocked"}, ""},
		{"header without our schema", qlogHeader("client", qref, quicSchema), []qev{unknown, unblocked, {3, "recovery:packet_lost", `{}`}}, []string{EventPacketLost}, ""},
		{"bad data", qlogHeader("client", qref, QlogSchema), []qev{{1, "bp:window_updated", `{"stream_id":"four"}`}}, nil, "record 1: bp:window_updated"},
		{"bad state", qlogHeader("client", qref, QlogSchema), []qev{{1, "bp:stream_data_blocked_updated", `{"stream_id":4,"state":"stuck"}`}}, nil, `state "stuck"`},
		{"no data", qlogHeader("client", qref, QlogSchema), []qev{{1, "bp:window_updated", `null`}}, nil, "has no data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := qlogFile(tt.header, tt.evs...)
			f, err := ReadAny(bytes.NewReader(file), 0)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.ErrorIs(t, err, ErrBadQlog)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, r := range f.Records[1 : len(f.Records)-1] {
				got = append(got, r.Event)
			}
			assert.Equal(t, tt.records, got)
			assert.Equal(t, EventEnd, f.Records[len(f.Records)-1].Event)
			tr, err := ReadQlog(bytes.NewReader(file), 0)
			require.NoError(t, err)
			assert.Len(t, tr.Events, len(tt.evs), "every event is exposed")
			recs, err := tr.Records()
			require.NoError(t, err)
			assert.Equal(t, f.Records, recs, "ReadQlog's Records are ReadAny's")
		})
	}
	// The receiving side's stall without a reason is "unread".
	f, err := ReadAny(bytes.NewReader(qlogFile(qlogHeader("client", qref, QlogSchema), unblocked)), 0)
	require.NoError(t, err)
	assert.Equal(t, "unread", f.Records[1].Reason)
}

// TestReadAny: the first byte tells the format; JSON lines read as
// before; bounds hold for both.
func TestReadAny(t *testing.T) {
	var jl bytes.Buffer
	w := NewWriter(&jl, qref)
	w.Write(Record{T: 1, Side: "recv", Stream: 1, Event: "grant", Limit: 10})
	require.NoError(t, w.Close())
	qlog := qlogFile(qlogHeader("client", qref, QlogSchema), bpEvents...)
	tests := []struct {
		name      string
		in        []byte
		max       int
		format    Format
		n         int
		wantErr   string
		wantErrIs error
	}{
		{"JSON lines", jl.Bytes(), 0, FormatJSONLines, 2, "", nil},
		{"qlog", qlog, 0, FormatQlog, 19, "", nil},
		{"empty", nil, 0, FormatJSONLines, 0, "", nil},
		{"qlog over the bound", qlog, 10, 0, 0, "more than 10 records", nil},
		{"JSON lines over the bound", jl.Bytes(), 1, 0, 0, "more than 1 records", nil},
		{"contained qlog", []byte(`{"file_schema":"urn:ietf:params:qlog:file:contained","traces":[` + "\n"), 0, 0, 0, "only .sqlog", ErrBadTrace},
		{"garbage", []byte("hello\n"), 0, 0, 0, "line 1", ErrBadTrace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ReadAny(bytes.NewReader(tt.in), tt.max)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				if tt.wantErrIs != nil {
					assert.ErrorIs(t, err, tt.wantErrIs)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.format, f.Format)
			assert.Len(t, f.Records, tt.n)
			assert.Equal(t, tt.format == FormatQlog, f.Qlog != nil)
		})
	}
}

// errReader fails after its data.
type errReader struct{ data []byte }

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReadQlogReadError(t *testing.T) {
	_, err := ReadQlog(&errReader{qlogFile(qlogHeader("client", qref, QlogSchema), bpEvents[:3]...)}, 0)
	assert.ErrorContains(t, err, "disk on fire")
	_, err = ReadQlog(io.MultiReader(bytes.NewReader([]byte{0x1e}), &errReader{}), 0)
	assert.ErrorContains(t, err, "disk on fire")
}
