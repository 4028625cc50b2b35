package mux

import (
	"sync"
	"time"

	"github.com/bpmux/bp/breaker"
	"github.com/quic-go/quic-go/qlogwriter"
	"github.com/quic-go/quic-go/qlogwriter/jsontext"
)

// QlogSchema is the qlog event schema of bp/1's events (docs/qlog.md). A
// private schema, so not of the urn:ietf:params:qlog form; its events are
// named "bp:<type>".
const QlogSchema = "https://github.com/bpmux/bp/qlog/bp-01"

func init() {
	// Traces declare every schema registered before they are made, so
	// this runs at init, as quic-go's own qlog packages do.
	qlogwriter.RegisterEventSchema(QlogSchema)
}

// qlogRecorder writes a session's events into its connection's qlog
// trace, as one more producer beside the QUIC stack.
//
// qlogwriter's Recorder must not be closed while an event is being
// recorded, and events come from many goroutines, so close takes the
// write lock. Recording costs one allocation (the event escapes into the
// trace's queue) and the trace's own mutex; the encoding is done by the
// trace's goroutine.
type qlogRecorder struct {
	mu     sync.RWMutex
	rec    qlogwriter.Recorder
	closed bool
}

func newQlogRecorder(t qlogwriter.Trace) *qlogRecorder {
	if t == nil {
		return nil
	}
	rec := t.AddProducer()
	if rec == nil { // the trace has closed already
		return nil
	}
	return &qlogRecorder{rec: rec}
}

func (q *qlogRecorder) record(ev Event) {
	q.mu.RLock()
	if !q.closed {
		q.rec.RecordEvent(qlogEvent(ev))
	}
	q.mu.RUnlock()
}

// close ends the session's part of the trace; the file closes when QUIC's
// part has ended too.
func (q *qlogRecorder) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.rec.Close()
	}
}

// qlogEvent is an Event as qlog writes it (docs/qlog.md).
type qlogEvent Event

var qlogNames = [...]string{
	EventGrant:         "bp:window_update_sent",
	EventWindowResized: "bp:window_updated",
	EventConsumed:      "bp:stream_data_moved",
	EventPeerBlocked:   "bp:peer_blocked",
	EventCredit:        "bp:window_update_received",
	EventBlocked:       "bp:stream_data_blocked_updated",
	EventUnblocked:     "bp:stream_data_blocked_updated",
	EventDropped:       "bp:data_dropped",
	EventStreamOpened:  "bp:stream_state_updated",
	EventStreamReset:   "bp:stream_state_updated",
	EventStreamClosed:  "bp:stream_state_updated",
	EventBudgetRefused: "bp:budget_refused",
	EventThreshold:     "bp:threshold_crossed",
	EventGoAway:        "bp:goaway",
	EventRTT:           "bp:rtt_sample",
	EventSessionClosed: "bp:session_closed",
	EventBreaker:       "bp:breaker_updated",
	EventReplaced:      "bp:data_replaced",
}

// Name returns the event's qlog name.
func (e qlogEvent) Name() string {
	if int(e.Kind) < len(qlogNames) && qlogNames[e.Kind] != "" {
		return qlogNames[e.Kind]
	}
	return "bp:unknown"
}

// qlogEncoder writes one event's data object, remembering the first
// error.
type qlogEncoder struct {
	enc *jsontext.Encoder
	err error
}

func (q *qlogEncoder) token(t jsontext.Token) {
	if q.err == nil {
		q.err = q.enc.WriteToken(t)
	}
}

func (q *qlogEncoder) str(k, v string) {
	q.token(jsontext.String(k))
	q.token(jsontext.String(v))
}

func (q *qlogEncoder) uint(k string, v uint64) {
	q.token(jsontext.String(k))
	q.token(jsontext.Uint(v))
}

// uintNZ writes k only when v is not zero.
func (q *qlogEncoder) uintNZ(k string, v uint64) {
	if v != 0 {
		q.uint(k, v)
	}
}

func (q *qlogEncoder) ms(k string, d time.Duration) {
	q.token(jsontext.String(k))
	q.token(jsontext.Float(float64(d.Nanoseconds()) / 1e6))
}

func owner(remote bool) string {
	if remote {
		return "remote"
	}
	return "local"
}

// Encode writes the event's data (docs/qlog.md).
func (e qlogEvent) Encode(enc *jsontext.Encoder, _ time.Time) error {
	q := qlogEncoder{enc: enc}
	q.token(jsontext.BeginObject)
	switch e.Kind {
	case EventRTT:
		q.ms("latest_rtt", e.Duration)
	case EventSessionClosed:
		q.str("owner", owner(e.Remote))
		q.uint("error_code", e.Code)
	case EventBreaker:
		q.str("old", breaker.State(e.Limit).String())
		q.str("new", breaker.State(e.Value).String())
	case EventGoAway:
		q.str("owner", owner(e.Remote))
		q.uint("last_stream_id", e.Limit)
		q.uint("error_code", e.Code)
	default:
		e.encodeStream(&q)
	}
	q.token(jsontext.EndObject)
	return q.err
}

// encodeStream writes a stream event: the stream's state, then the
// fields of its kind.
func (e qlogEvent) encodeStream(q *qlogEncoder) {
	q.uint("stream_id", e.Stream)
	q.uintNZ("limit", e.Limit)
	q.uintNZ("window", e.Window)
	if e.Kind != EventCredit { // there, Consumed is the peer's
		q.uintNZ("consumed", e.Consumed)
	}
	q.uintNZ("buffered", e.Buffered)
	q.uintNZ("credit", e.Credit)
	switch e.Kind {
	case EventGrant:
		q.uint("maximum", e.Limit)
	case EventCredit:
		q.uint("maximum", e.Limit)
		q.uintNZ("peer_consumed", e.Consumed)
	case EventConsumed:
		q.uint("offset", e.Consumed-e.Value)
		q.uint("length", e.Value)
		q.str("from", "bp")
		q.str("to", "application")
	case EventPeerBlocked:
		q.uint("blocked_at", e.Limit)
	case EventBlocked, EventUnblocked:
		state := "blocked"
		if e.Kind == EventUnblocked {
			state = "unblocked"
		}
		q.str("state", state)
		q.str("reason", e.Reason.String())
		side := "send"
		if e.Reason == ReasonUnread {
			side = "recv"
		}
		q.str("side", side)
		if e.Kind == EventUnblocked {
			q.ms("blocked_ms", e.Duration)
			if e.Signal > 0 {
				q.ms("signal_latency_ms", e.Signal)
			}
		}
	case EventDropped, EventReplaced:
		q.uint("length", e.Dropped)
	case EventBudgetRefused:
		q.uint("wanted", e.Value)
	case EventThreshold:
		q.str("metric", e.Metric.String())
		q.str("level", e.Level.String())
		if e.Metric == MetricStall {
			q.ms("value", time.Duration(e.Value))
		} else {
			q.uint("value", e.Value)
		}
	case EventStreamOpened:
		q.str("new", "open")
		q.str("initiator", owner(e.Remote))
	case EventStreamReset:
		if e.Remote {
			q.str("new", "reset_received")
		} else {
			q.str("new", "reset_sent")
		}
		q.uint("error_code", e.Code)
	case EventStreamClosed:
		q.str("new", "closed")
	}
}
