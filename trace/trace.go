// Package trace records the flow-control events of bp/1 streams as JSON
// lines, reads them back, and draws them (see Plot): the window's
// evolution made visible.
//
// A trace file holds one JSON object per line. Every line is a Record:
//
//	{"t":0.000000,"ts":"2025-12-01T09:40:12.001Z","stream":0,"event":"trace","host":"alpha"}
//	{"t":0.000000,"ts":"2025-12-01T09:40:12.001Z","side":"listen","stream":0,"event":"session","local":"127.0.0.1:4242","remote":"127.0.0.1:50123"}
//	{"t":0.012345,"ts":"2025-12-01T09:40:12.013345Z","side":"recv","stream":1,"event":"grant","limit":262144,"window":131072,"consumed":131072}
//
// t is seconds since the trace started (by the writer's monotonic clock);
// ts is the same instant on the wall clock, in RFC 3339 with nanoseconds
// (UTC), so that the traces of two processes, or two hosts with
// synchronized clocks, can be laid on one time axis. Traces written before
// ts existed have only t. Records are written in time order.
//
// side names the endpoint that saw the event ("send" or "recv" by
// convention, or any label the writer was given: bpcat uses "listen",
// "connect", "relay-down" and "relay-up"); event is the mux.EventKind name,
// or one of the writer's own: "trace" opens every trace and names the host
// that wrote it, "session" gives a side's local and remote addresses (see
// Writer.Session). Fields that are zero are left out. A stall's events
// carry its reason (a mux.BlockReason's name), and unblocked its duration
// in seconds, as qlog's do.
//
// # Two formats
//
// A bp/1 session can also write its events into the qlog trace of its
// QUIC connection (docs/qlog.md): a JSON-SEQ file per connection and
// end, with QUIC's own events beside them on one clock. QlogReader reads
// such files strictly and in bounded memory, and QlogRecord turns bp/1's
// events into Records, so that one plot draws both formats; ReadAny tells
// them apart by the first byte (0x1E begins a JSON text sequence, '{' a
// JSON line).
//
// qlog is the format to record in: it needs no hook, it has QUIC's view
// (packets, losses, QUIC's own flow control) on the same clock, and other
// tools read it. The JSON-lines format stays, read and written: traces
// in it exist (bpcat --trace has written them since the beginning), it
// records sessions on transports other than QUIC and events a hook
// filters, and it costs no allocation per event. Both carry the same
// fields, so neither draws less than the other.
package trace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/bpmux/bp/mux"
)

// The events the writer records of its own, beside mux's.
const (
	// EventTrace opens every trace written by NewWriter: Host is the host
	// that wrote it, TS the wall-clock time of its start.
	EventTrace = "trace"
	// EventSession names a side's addresses (Local, Remote): see
	// Writer.Session.
	EventSession = "session"
	// EventEnd marks the end of a trace read from qlog: the time of its
	// last event of any kind, so that a stall still going on is drawn to
	// it.
	EventEnd = "end"
	// EventPacketLost is QUIC's packet_lost, read from qlog.
	EventPacketLost = "packet_lost"
)

// Record is one line of a trace.
type Record struct {
	// T is seconds since the trace started.
	T float64 `json:"t"`
	// TS is the wall-clock time of the record (zero in old traces).
	TS       time.Time `json:"ts,omitzero"`
	Side     string    `json:"side,omitempty"`
	Stream   uint64    `json:"stream"`
	Event    string    `json:"event"`
	Limit    uint64    `json:"limit,omitempty"`
	Window   uint64    `json:"window,omitempty"`
	Consumed uint64    `json:"consumed,omitempty"`
	Buffered uint64    `json:"buffered,omitempty"`
	Credit   uint64    `json:"credit,omitempty"`
	Dropped  uint64    `json:"dropped,omitempty"`
	// Reason says why a stream was blocked (blocked, unblocked): a
	// mux.BlockReason's name, "peer_window", "session_budget", "transport"
	// or "unread" (empty in old traces).
	Reason string `json:"reason,omitempty"`
	// Duration is seconds: how long the stall lasted (unblocked), or the
	// RTT sample (rtt).
	Duration float64 `json:"duration,omitempty"`
	// Signal is the stall's signal latency in seconds (unblocked, the
	// sending side's credit reasons).
	Signal float64 `json:"signal,omitempty"`
	// Metric and Level name a threshold crossing (threshold): a
	// mux.Metric's and a mux.Level's names. Value is the metric's value
	// (bytes; nanoseconds for "stall"), or the bytes of window growth a
	// budget refusal wanted (budget_refused).
	Metric string `json:"metric,omitempty"`
	Level  string `json:"level,omitempty"`
	Value  uint64 `json:"value,omitempty"`
	// Code is the error code of stream_reset, goaway and session_closed.
	// ByPeer is true when the peer did it (stream_opened, stream_reset,
	// goaway, session_closed: mux.Event.Remote).
	Code   uint64 `json:"code,omitempty"`
	ByPeer bool   `json:"by_peer,omitempty"`
	// Host is the name of the host that wrote the trace (EventTrace).
	Host string `json:"host,omitempty"`
	// Local and Remote are a side's network addresses (EventSession).
	Local  string `json:"local,omitempty"`
	Remote string `json:"remote,omitempty"`
}

// Writer writes events as JSON lines. It is safe for concurrent use; its
// memory is one fixed-size buffer, and a slow file makes the hook wait
// rather than queue.
//
// Records leave the writer in time order. Events reach it from several
// goroutines, each stamped when it happened and handed over a moment later,
// so two of them can arrive a few microseconds out of order; the writer
// stamps each record under its lock as the later of its event's time and
// the previous record's. A record's time is thus late by at most the time
// its event waited for the lock, and a reader (or a plot) never has to sort.
type Writer struct {
	mu    sync.Mutex
	w     *bufio.Writer
	c     io.Closer // closed by Close, if the destination is one
	start time.Time
	last  time.Duration // the latest record's time since start
	line  []byte
	err   error
	n     int64
}

// NewWriter returns a Writer on w whose times count from start; start
// also anchors the records' wall-clock times (ts). It writes the trace's
// first record, EventTrace, with the name of this host.
func NewWriter(w io.Writer, start time.Time) *Writer {
	tw := &Writer{w: bufio.NewWriterSize(w, 64<<10), start: start, line: make([]byte, 0, 256)}
	if c, ok := w.(io.Closer); ok {
		tw.c = c
	}
	host, _ := os.Hostname()
	tw.Write(Record{Event: EventTrace, Host: host})
	return tw
}

// Hook returns a function for mux.Config.OnEvent that records every event
// of a session under the label side. Give each session (or each hop of a
// relay) its own label to tell them apart in a plot.
func (w *Writer) Hook(side string) func(mux.Event) {
	return func(ev mux.Event) { w.Event(side, ev) }
}

// Session records the local and remote addresses of the session traced
// under the label side, so that a plot can say which end is which. It
// accepts a *mux.Session, a net.Conn, or anything with those two methods;
// a nil Writer records nothing.
func (w *Writer) Session(side string, s interface {
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}) {
	if w == nil || s == nil {
		return
	}
	r := Record{T: time.Since(w.start).Seconds(), Side: side, Event: EventSession}
	if a := s.LocalAddr(); a != nil {
		r.Local = a.String()
	}
	if a := s.RemoteAddr(); a != nil {
		r.Remote = a.String()
	}
	w.Write(r)
}

// Event records one event.
func (w *Writer) Event(side string, ev mux.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeLocked(ev.Time.Sub(w.start), Record{
		Side:     side,
		Stream:   ev.Stream,
		Event:    ev.Kind.String(),
		Limit:    ev.Limit,
		Window:   ev.Window,
		Consumed: ev.Consumed,
		Buffered: ev.Buffered,
		Credit:   ev.Credit,
		Dropped:  ev.Dropped,
		Reason:   reasonName(ev),
		Duration: ev.Duration.Seconds(),
		Signal:   ev.Signal.Seconds(),
		Metric:   metricName(ev),
		Level:    levelName(ev),
		Value:    ev.Value,
		Code:     ev.Code,
		ByPeer:   ev.Remote,
	})
}

// reasonName, metricName and levelName name an event's reason, metric and
// level, or return "" where the event has none.
func reasonName(ev mux.Event) string {
	if ev.Reason == 0 {
		return ""
	}
	return ev.Reason.String()
}

func metricName(ev mux.Event) string {
	if ev.Kind != mux.EventThreshold || ev.Metric == 0 {
		return ""
	}
	return ev.Metric.String()
}

func levelName(ev mux.Event) string {
	if ev.Kind != mux.EventThreshold {
		return ""
	}
	return ev.Level.String()
}

// Write records r at r.T seconds since the start (or at the previous
// record's time, if that is later); r.TS is set from r.T. The first write
// error is kept and returned by Close; later records are dropped.
func (w *Writer) Write(r Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeLocked(time.Duration(r.T*float64(time.Second)), r)
}

// writeLocked stamps r at d since the start, kept in time order, and
// writes it.
func (w *Writer) writeLocked(d time.Duration, r Record) {
	if w.err != nil {
		return
	}
	d = max(d, w.last)
	w.last = d
	r.T = d.Seconds()
	r.TS = w.start.Add(d)
	w.line = appendRecord(w.line[:0], r)
	if _, err := w.w.Write(w.line); err != nil {
		w.err = fmt.Errorf("trace: %w", err)
		return
	}
	w.n++
}

// Records returns how many records were written.
func (w *Writer) Records() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Flush writes buffered records to the destination.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		if err := w.w.Flush(); err != nil {
			w.err = fmt.Errorf("trace: %w", err)
		}
	}
	return w.err
}

// Close flushes and, if the destination is an io.Closer, closes it.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.c != nil {
		if cerr := w.c.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("trace: %w", cerr)
		}
	}
	return err
}

// appendRecord encodes r as one JSON line without reflection, so that
// recording an event costs no allocation.
func appendRecord(b []byte, r Record) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendFloat(b, r.T, 'f', 6, 64)
	if !r.TS.IsZero() {
		b = append(b, `,"ts":"`...)
		b = r.TS.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if r.Side != "" {
		b = appendString(append(b, `,"side":`...), r.Side)
	}
	b = append(b, `,"stream":`...)
	b = strconv.AppendUint(b, r.Stream, 10)
	b = appendString(append(b, `,"event":`...), r.Event)
	for _, f := range [...]struct {
		name string
		v    uint64
	}{
		{"limit", r.Limit}, {"window", r.Window}, {"consumed", r.Consumed},
		{"buffered", r.Buffered}, {"credit", r.Credit}, {"dropped", r.Dropped},
	} {
		if f.v != 0 {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, f.v, 10)
		}
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{
		{"duration", r.Duration}, {"signal", r.Signal},
	} {
		if f.v != 0 {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendFloat(b, f.v, 'f', -1, 64)
		}
	}
	for _, f := range [...]struct {
		name string
		v    uint64
	}{
		{"value", r.Value}, {"code", r.Code},
	} {
		if f.v != 0 {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, f.v, 10)
		}
	}
	if r.ByPeer {
		b = append(b, `,"by_peer":true`...)
	}
	for _, f := range [...]struct{ name, v string }{
		{"reason", r.Reason}, {"metric", r.Metric}, {"level", r.Level},
		{"host", r.Host}, {"local", r.Local}, {"remote", r.Remote},
	} {
		if f.v != "" {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = appendString(append(b, `":`...), f.v)
		}
	}
	return append(b, "}\n"...)
}

// appendString appends s as a JSON string. Bytes that are not valid UTF-8
// pass through; encoding/json reads them as U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// MaxLine is the longest line Read accepts.
const MaxLine = 4096

// ErrBadTrace is returned (wrapped, with the line number) for a line that
// is not a trace record.
var ErrBadTrace = errors.New("trace: not a trace record")

// Read reads a whole trace. At most maxRecords are kept (0 means no limit);
// a longer trace is an error rather than a silent cut.
func Read(r io.Reader, maxRecords int) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, MaxLine), MaxLine)
	var out []Record
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadTrace, line, err)
		}
		if rec.Event == "" {
			return nil, fmt.Errorf("%w: line %d has no event", ErrBadTrace, line)
		}
		if maxRecords > 0 && len(out) == maxRecords {
			return nil, fmt.Errorf("trace: more than %d records", maxRecords)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line is longer than %d bytes", ErrBadTrace, MaxLine)
		}
		return nil, fmt.Errorf("trace: %w", err)
	}
	return out, nil
}
