package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The constants of the qlog files this package reads.
const (
	// QlogSchema is the URI of bp/1's event schema, as a trace header's
	// event_schemas lists it (docs/qlog.md).
	QlogSchema = "https://github.com/bpmux/bp/qlog/bp-01"
	// QlogFileSchema and QlogSerialization are the header's file_schema
	// and serialization_format of a JSON-SEQ qlog file.
	QlogFileSchema    = "urn:ietf:params:qlog:file:sequential"
	QlogSerialization = "application/qlog+json-seq"
	// MaxQlogRecord is the longest record a QlogReader accepts, in bytes.
	MaxQlogRecord = 1 << 20
)

// recordSeparator begins every record of a JSON text sequence (RFC 7464).
const recordSeparator = 0x1e

// ErrBadQlog is returned (wrapped, with the record's index and byte
// offset) for a file that is not a well-formed qlog JSON-SEQ file.
var ErrBadQlog = errors.New("trace: not a qlog JSON-SEQ file")

// QlogHeader is the first record of a qlog file: the trace header.
type QlogHeader struct {
	FileSchema          string
	SerializationFormat string
	Title               string
	// EventSchemas lists the URIs of the event schemas the trace's events
	// follow (trace.event_schemas).
	EventSchemas []string
	// VantagePoint is the trace's vantage point type: "client" or
	// "server" for a connection's trace.
	VantagePoint string
	// GroupID is the trace's group (quic-go: the original destination
	// connection ID, the same at both ends of a connection).
	GroupID string
	// ReferenceTime is the wall-clock time of the trace's time 0; zero if
	// the header gives none.
	ReferenceTime time.Time
}

// HasSchema reports whether the header declares the event schema uri.
func (h *QlogHeader) HasSchema(uri string) bool { return slices.Contains(h.EventSchemas, uri) }

// QlogEvent is one event record of a qlog file.
type QlogEvent struct {
	// Index is the record's position in the file: the header is 0.
	Index int
	// Time is milliseconds since the trace's reference time.
	Time float64
	// Wall is Time on the wall clock (zero if the header has no
	// reference wall-clock time).
	Wall time.Time
	// Name is the event's name, "namespace:type": "bp:window_update_sent",
	// "transport:packet_sent".
	Name string
	// Data is the event's data object as it was in the file (nil if the
	// event has none).
	Data json.RawMessage
}

// QlogReader reads a qlog JSON-SEQ file (RFC 7464 framing: every record
// begins with the byte 0x1E) one record at a time, in bounded memory:
// a record longer than MaxQlogRecord is an error, not a reason to buffer.
//
// It is strict: a record that does not parse is an error naming its
// index, except the file's last record, cut short as by a writer killed
// mid-record; that one is dropped, and Truncated reports it.
type QlogReader struct {
	r         *bufio.Reader
	header    QlogHeader
	index     int   // the index of the next non-empty record
	offset    int64 // the byte offset of the next record's separator
	rec       []byte
	truncated bool
	done      bool
}

// NewQlogReader reads and checks the header of the qlog file on r: it
// must be a JSON-SEQ qlog file (file_schema and serialization_format).
func NewQlogReader(r io.Reader) (*QlogReader, error) {
	q := &QlogReader{r: bufio.NewReaderSize(r, 64<<10)}
	first, err := q.r.ReadByte()
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: the file is empty", ErrBadQlog)
	case err != nil:
		return nil, fmt.Errorf("trace: %w", err)
	case first != recordSeparator:
		return nil, fmt.Errorf("%w: record 0 (offset 0) does not begin with the record separator 0x1E", ErrBadQlog)
	}
	rec, last, err := q.next()
	// Empty records (separators in a row) are skipped, as RFC 7464
	// allows; each pass consumes a separator.
	for err == nil && !last && len(bytes.TrimSpace(rec)) == 0 {
		rec, last, err = q.next()
	}
	if err != nil {
		return nil, err
	}
	if last && !bytes.HasSuffix(rec, []byte("\n")) && !json.Valid(rec) {
		return nil, fmt.Errorf("%w: record 0 (the header) is cut short", ErrBadQlog)
	}
	if err := q.parseHeader(rec); err != nil {
		return nil, err
	}
	q.index = 1
	return q, nil
}

// Header returns the trace header.
func (q *QlogReader) Header() QlogHeader { return q.header }

// Truncated reports whether the file's last record was cut short (and
// dropped). It is known once Next has returned io.EOF.
func (q *QlogReader) Truncated() bool { return q.truncated }

// next returns the next record's bytes (without its separator) and
// whether it is the file's last, and moves q.offset past it. The caller
// counts q.index: empty records do not count.
func (q *QlogReader) next() (rec []byte, last bool, err error) {
	q.rec = q.rec[:0]
	// Each pass consumes at least one byte or ends the record; the record
	// is bounded by MaxQlogRecord.
	for {
		chunk, err := q.r.ReadSlice(recordSeparator)
		q.rec = append(q.rec, chunk...)
		if len(q.rec) > MaxQlogRecord+1 {
			return nil, false, fmt.Errorf("%w: record %d (offset %d) is longer than %d bytes", ErrBadQlog, q.index, q.offset, MaxQlogRecord)
		}
		switch {
		case err == nil:
			rec = q.rec[:len(q.rec)-1]
			q.offset += int64(len(q.rec))
			return rec, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			q.offset += int64(len(q.rec))
			return q.rec, true, nil
		default:
			return nil, false, fmt.Errorf("trace: record %d: %w", q.index, err)
		}
	}
}

// parseHeader checks and keeps the header record.
func (q *QlogReader) parseHeader(rec []byte) error {
	var h struct {
		FileSchema          *string `json:"file_schema"`
		SerializationFormat *string `json:"serialization_format"`
		Title               string  `json:"title"`
		Trace               struct {
			EventSchemas []string `json:"event_schemas"`
			VantagePoint struct {
				Type string `json:"type"`
			} `json:"vantage_point"`
			CommonFields struct {
				GroupID       string `json:"group_id"`
				TimeFormat    string `json:"time_format"`
				ReferenceTime struct {
					ClockType     string `json:"clock_type"`
					Epoch         string `json:"epoch"`
					WallClockTime string `json:"wall_clock_time"`
				} `json:"reference_time"`
			} `json:"common_fields"`
		} `json:"trace"`
	}
	if err := unmarshalOne(rec, &h); err != nil {
		return fmt.Errorf("%w: record 0 (the header): %w", ErrBadQlog, err)
	}
	switch {
	case h.FileSchema == nil:
		return fmt.Errorf("%w: the header has no file_schema", ErrBadQlog)
	case *h.FileSchema != QlogFileSchema:
		return fmt.Errorf("%w: file_schema %q, want %q", ErrBadQlog, *h.FileSchema, QlogFileSchema)
	case h.SerializationFormat == nil:
		return fmt.Errorf("%w: the header has no serialization_format", ErrBadQlog)
	case *h.SerializationFormat != QlogSerialization:
		return fmt.Errorf("%w: serialization_format %q, want %q", ErrBadQlog, *h.SerializationFormat, QlogSerialization)
	}
	cf := h.Trace.CommonFields
	if f := cf.TimeFormat; f != "" && f != "relative_to_epoch" {
		return fmt.Errorf("%w: time_format %q is not supported (only relative_to_epoch)", ErrBadQlog, f)
	}
	q.header = QlogHeader{
		FileSchema:          *h.FileSchema,
		SerializationFormat: *h.SerializationFormat,
		Title:               h.Title,
		EventSchemas:        h.Trace.EventSchemas,
		VantagePoint:        h.Trace.VantagePoint.Type,
		GroupID:             cf.GroupID,
	}
	rt := cf.ReferenceTime
	wall := rt.WallClockTime
	if wall == "" && rt.Epoch != "" && rt.Epoch != "unknown" {
		wall = rt.Epoch // a system clock's epoch is a wall-clock time
	}
	if wall != "" {
		t, err := time.Parse(time.RFC3339Nano, wall)
		if err != nil {
			return fmt.Errorf("%w: the header's reference time: %w", ErrBadQlog, err)
		}
		q.header.ReferenceTime = t
	}
	return nil
}

// unmarshalOne decodes the one JSON text in rec into v: a second text (a
// missing separator) is an error.
func unmarshalOne(rec []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(rec))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON text (a missing record separator?)")
	}
	return nil
}

// Next returns the next event, or io.EOF after the last. Empty records
// (separators in a row) are skipped, as RFC 7464 allows.
func (q *QlogReader) Next() (QlogEvent, error) {
	// Each pass reads one record; the file's length bounds them.
	for !q.done {
		index, offset := q.index, q.offset
		rec, last, err := q.next()
		if err != nil {
			return QlogEvent{}, err
		}
		q.done = last
		if len(bytes.TrimSpace(rec)) == 0 {
			// A separator with nothing after it ends a file whose writer
			// died as it began a record.
			q.truncated = q.truncated || (last && len(rec) == 0)
			continue
		}
		q.index++
		var ev struct {
			Time *float64        `json:"time"`
			Name *string         `json:"name"`
			Data json.RawMessage `json:"data"`
		}
		if err := unmarshalOne(rec, &ev); err != nil {
			if last && !bytes.HasSuffix(rec, []byte("\n")) {
				// Cut short as its writer died: tolerated, and reported.
				q.truncated = true
				return QlogEvent{}, io.EOF
			}
			return QlogEvent{}, fmt.Errorf("%w: record %d (offset %d): %w", ErrBadQlog, index, offset, err)
		}
		switch {
		case ev.Time == nil:
			return QlogEvent{}, fmt.Errorf("%w: record %d (offset %d) has no time", ErrBadQlog, index, offset)
		case ev.Name == nil || *ev.Name == "":
			return QlogEvent{}, fmt.Errorf("%w: record %d (offset %d) has no name", ErrBadQlog, index, offset)
		case math.IsNaN(*ev.Time) || math.IsInf(*ev.Time, 0):
			return QlogEvent{}, fmt.Errorf("%w: record %d (offset %d): time %v", ErrBadQlog, index, offset, *ev.Time)
		}
		e := QlogEvent{Index: index, Time: *ev.Time, Name: *ev.Name}
		if len(ev.Data) > 0 && !bytes.Equal(ev.Data, []byte("null")) {
			e.Data = slices.Clone(ev.Data)
		}
		if !q.header.ReferenceTime.IsZero() {
			e.Wall = q.header.ReferenceTime.Add(time.Duration(e.Time * float64(time.Millisecond)))
		}
		return e, nil
	}
	return QlogEvent{}, io.EOF
}

// QlogTrace is a whole qlog file, as ReadQlog reads it.
type QlogTrace struct {
	Header QlogHeader
	Events []QlogEvent
	// Truncated is true if the file's last record was cut short (and
	// dropped).
	Truncated bool
}

// ReadQlog reads a whole qlog file: its header and every event. At most
// maxEvents are kept (0 means no limit); a longer file is an error rather
// than a silent cut. For large files, QlogReader (or ReadAny) reads in
// bounded memory.
func ReadQlog(r io.Reader, maxEvents int) (*QlogTrace, error) {
	q, err := NewQlogReader(r)
	if err != nil {
		return nil, err
	}
	t := &QlogTrace{Header: q.Header()}
	// Each pass reads one record; the file's length bounds them.
	for {
		ev, err := q.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if maxEvents > 0 && len(t.Events) == maxEvents {
			return nil, fmt.Errorf("trace: more than %d qlog events", maxEvents)
		}
		t.Events = append(t.Events, ev)
	}
	t.Truncated = q.Truncated()
	return t, nil
}

// Records converts the trace's events to Records: see QlogRecord.
func (t *QlogTrace) Records() ([]Record, error) {
	out := []Record{traceRecord(&t.Header)}
	var last QlogEvent
	for _, ev := range t.Events {
		r, ok, err := QlogRecord(&t.Header, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
		}
		last = ev
	}
	if len(t.Events) > 0 {
		out = append(out, endRecord(&t.Header, last))
	}
	return out, nil
}

// traceRecord opens the Records of a trace with header h.
func traceRecord(h *QlogHeader) Record {
	return Record{TS: h.ReferenceTime, Side: h.VantagePoint, Event: EventTrace}
}

// endRecord marks the end of a trace at its last event.
func endRecord(h *QlogHeader, last QlogEvent) Record {
	return Record{T: last.Time / 1e3, TS: last.Wall, Side: h.VantagePoint, Event: EventEnd}
}

// qlogData holds the fields of bp/1's events (docs/qlog.md) and the few
// of QUIC's that a plot uses.
type qlogData struct {
	StreamID        *uint64  `json:"stream_id"`
	Limit           uint64   `json:"limit"`
	Window          uint64   `json:"window"`
	Consumed        uint64   `json:"consumed"`
	Buffered        uint64   `json:"buffered"`
	Credit          uint64   `json:"credit"`
	Maximum         uint64   `json:"maximum"`
	PeerConsumed    uint64   `json:"peer_consumed"`
	Offset          uint64   `json:"offset"`
	Length          uint64   `json:"length"`
	State           string   `json:"state"`
	Reason          string   `json:"reason"`
	Side            string   `json:"side"`
	BlockedMS       float64  `json:"blocked_ms"`
	SignalLatencyMS float64  `json:"signal_latency_ms"`
	BlockedAt       uint64   `json:"blocked_at"`
	Wanted          uint64   `json:"wanted"`
	Metric          string   `json:"metric"`
	Level           string   `json:"level"`
	Value           *float64 `json:"value"`
	New             string   `json:"new"`
	Initiator       string   `json:"initiator"`
	ErrorCode       uint64   `json:"error_code"`
	Owner           string   `json:"owner"`
	LastStreamID    uint64   `json:"last_stream_id"`
	LatestRTT       float64  `json:"latest_rtt"`
	// transport:connection_started
	Local  *qlogEndpoint `json:"local"`
	Remote *qlogEndpoint `json:"remote"`
}

type qlogEndpoint struct {
	V4 *qlogAddr `json:"address_v4"`
	V6 *qlogAddr `json:"address_v6"`
}

type qlogAddr struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

func (e *qlogEndpoint) String() string {
	switch {
	case e == nil:
		return ""
	case e.V4 != nil:
		return e.V4.IP + ":" + strconv.Itoa(int(e.V4.Port))
	case e.V6 != nil:
		return "[" + e.V6.IP + "]:" + strconv.Itoa(int(e.V6.Port))
	}
	return ""
}

// qlogKinds maps bp/1's qlog event types to the Record events (mux's
// EventKind names) they become.
var qlogKinds = map[string]string{
	"window_update_sent":     "grant",
	"window_update_received": "credit",
	"window_updated":         "window",
	"stream_data_moved":      "consumed",
	"peer_blocked":           "peer_blocked",
	"data_dropped":           "dropped",
	"data_replaced":          "replaced",
	"breaker_updated":        "breaker",
	"budget_refused":         "budget_refused",
	"threshold_crossed":      "threshold",
	"goaway":                 "goaway",
	"rtt_sample":             "rtt",
	"session_closed":         "session_closed",
}

// QlogRecord converts one event of a trace with header h to a Record, if
// it is one a plot uses (ok); an event of bp/1 whose data does not parse
// is an error. It converts:
//
//   - bp/1's events (docs/qlog.md), if the header declares QlogSchema (in
//     a file that does not, "bp:" may be someone else's namespace): each
//     to the mux.EventKind it mirrors ("bp:window_update_sent" is
//     "grant", "bp:stream_data_blocked_updated" is "blocked" or
//     "unblocked", and so on), with its stream's state, Reason, Duration
//     (blocked_ms, or the RTT sample), Signal, Metric, Level and Value;
//     unknown bp: events are left out;
//   - QUIC's connection_started, as EventSession with the addresses, and
//     packet_lost, as EventPacketLost (in quic-go's "transport:" and
//     "recovery:" namespaces, or the "quic:" of later qlog drafts).
//
// Every Record's Side is the trace's vantage point ("client",
// "server"); T is seconds since the trace's reference time, and TS the
// wall-clock time, if the header gives it.
func QlogRecord(h *QlogHeader, ev QlogEvent) (Record, bool, error) {
	ns, typ, _ := strings.Cut(ev.Name, ":")
	r := Record{T: ev.Time / 1e3, TS: ev.Wall, Side: h.VantagePoint}
	switch {
	case ns == "bp" && h.HasSchema(QlogSchema):
	case (ns == "transport" || ns == "quic") && typ == "connection_started":
		var d qlogData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return Record{}, false, nil // QUIC's own: not ours to judge
		}
		r.Event, r.Local, r.Remote = EventSession, d.Local.String(), d.Remote.String()
		return r, true, nil
	case (ns == "recovery" || ns == "quic") && typ == "packet_lost":
		r.Event = EventPacketLost
		return r, true, nil
	default:
		return Record{}, false, nil
	}
	var d qlogData
	if len(ev.Data) == 0 {
		return Record{}, false, fmt.Errorf("%w: record %d: %s has no data", ErrBadQlog, ev.Index, ev.Name)
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return Record{}, false, fmt.Errorf("%w: record %d: %s: %w", ErrBadQlog, ev.Index, ev.Name, err)
	}
	if d.StreamID != nil {
		r.Stream = *d.StreamID
	}
	r.Limit, r.Window, r.Consumed, r.Buffered, r.Credit = d.Limit, d.Window, d.Consumed, d.Buffered, d.Credit
	r.Event = qlogKinds[typ]
	switch typ {
	case "window_update_sent":
		r.Limit = max(r.Limit, d.Maximum)
	case "window_update_received":
		r.Limit = max(r.Limit, d.Maximum)
		r.Consumed = max(r.Consumed, d.PeerConsumed)
	case "stream_data_moved":
		r.Consumed = max(r.Consumed, d.Offset+d.Length)
	case "stream_data_blocked_updated":
		switch d.State {
		case "blocked", "unblocked":
			r.Event = d.State
		default:
			return Record{}, false, fmt.Errorf("%w: record %d: %s: state %q", ErrBadQlog, ev.Index, ev.Name, d.State)
		}
		r.Reason = d.Reason
		if r.Reason == "" && d.Side == "recv" {
			r.Reason = "unread"
		}
		r.Duration = d.BlockedMS / 1e3
		r.Signal = d.SignalLatencyMS / 1e3
	case "peer_blocked":
		r.Limit = max(r.Limit, d.BlockedAt)
	case "data_dropped", "data_replaced":
		r.Dropped = d.Length
	case "budget_refused":
		r.Value = d.Wanted
	case "threshold_crossed":
		r.Metric, r.Level = d.Metric, d.Level
		if d.Value != nil && *d.Value > 0 {
			r.Value = uint64(*d.Value)
			if d.Metric == "stall" { // milliseconds in qlog, nanoseconds in mux
				r.Value = uint64(*d.Value * 1e6)
			}
		}
	case "stream_state_updated":
		switch d.New {
		case "open":
			r.Event, r.ByPeer = "stream_opened", d.Initiator == "remote"
		case "reset_sent", "reset_received":
			r.Event, r.ByPeer, r.Code = "stream_reset", d.New == "reset_received", d.ErrorCode
		case "closed":
			r.Event = "stream_closed"
		default:
			return Record{}, false, nil
		}
	case "goaway":
		r.ByPeer, r.Limit, r.Code = d.Owner == "remote", d.LastStreamID, d.ErrorCode
	case "rtt_sample":
		r.Duration = d.LatestRTT / 1e3
	case "session_closed":
		r.ByPeer, r.Code = d.Owner == "remote", d.ErrorCode
	}
	if r.Event == "" {
		return Record{}, false, nil // a bp: event this reader does not know
	}
	return r, true, nil
}
