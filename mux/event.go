package mux

import (
	"fmt"
	"time"

	"github.com/bpmux/bp/framing"
)

// EventKind says what happened to a stream's flow control.
type EventKind uint8

// The flow-control events. Receive-side events describe the credit this
// endpoint grants; send-side events the credit it was granted.
const (
	// EventGrant: this endpoint sent a WINDOW_UPDATE (Limit, Consumed).
	EventGrant EventKind = iota + 1
	// EventWindowResized: the receive window changed size (Window).
	EventWindowResized
	// EventConsumed: the application read bytes (Consumed, Buffered).
	EventConsumed
	// EventPeerBlocked: the peer said it is blocked at Limit.
	EventPeerBlocked
	// EventCredit: the peer granted credit up to Limit (Credit available).
	EventCredit
	// EventBlocked: a writer has data but no credit (Limit).
	EventBlocked
	// EventUnblocked: a blocked writer got credit (Credit).
	EventUnblocked
	// EventDropped: a drop-mode write was discarded for lack of credit
	// (Dropped bytes).
	EventDropped
	// EventStreamOpened: a stream was opened, by the peer if Remote.
	EventStreamOpened
	// EventStreamReset: a direction of the stream was reset with Code: the
	// peer's sending direction if Remote, else this side's.
	EventStreamReset
	// EventStreamClosed: the stream is retired: both directions ended and
	// everything it owed was written.
	EventStreamClosed
	// EventBudgetRefused: the session budget refused what a stream needed:
	// Value bytes of window growth it wanted (Window is what it has), or,
	// with Window 0, a whole new stream, refused.
	EventBudgetRefused
	// EventThreshold: the stream's Metric crossed into Level (up or down)
	// at Value (bytes, or nanoseconds for MetricStall).
	EventThreshold
	// EventGoAway: a GOAWAY was sent, or received if Remote, with Code;
	// Limit is its Last Stream ID.
	EventGoAway
	// EventRTT: a PING answer gave an RTT sample (Duration). Stream is 0.
	EventRTT
	// EventSessionClosed: the session ended with Code, closed by the peer
	// if Remote. Stream is 0; it is the session's last event.
	EventSessionClosed
	// EventBreaker: the session's circuit breaker changed state, from
	// breaker.State(Limit) to breaker.State(Value). Stream is 0.
	EventBreaker
	// EventReplaced: a LatestWins message waiting for credit was replaced
	// by a newer one, unsent (Dropped bytes: the replaced message's).
	EventReplaced
)

var kindNames = [...]string{
	EventGrant:         "grant",
	EventWindowResized: "window",
	EventConsumed:      "consumed",
	EventPeerBlocked:   "peer_blocked",
	EventCredit:        "credit",
	EventBlocked:       "blocked",
	EventUnblocked:     "unblocked",
	EventDropped:       "dropped",
	EventStreamOpened:  "stream_opened",
	EventStreamReset:   "stream_reset",
	EventStreamClosed:  "stream_closed",
	EventBudgetRefused: "budget_refused",
	EventThreshold:     "threshold",
	EventGoAway:        "goaway",
	EventRTT:           "rtt",
	EventSessionClosed: "session_closed",
	EventBreaker:       "breaker",
	EventReplaced:      "replaced",
}

// String returns the event's short name, as used in traces.
func (k EventKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("event(%d)", k)
}

// Event records one change of a stream's flow-control state. Fields that do
// not apply to the Kind hold the stream's current values.
type Event struct {
	Time   time.Time
	Stream uint64
	Kind   EventKind
	// Limit is the receive limit granted (receive-side events) or the send
	// limit granted by the peer (send-side events).
	Limit uint64
	// Window is the receive window size.
	Window uint64
	// Consumed is what the application has read (receive side), or what
	// the peer reports its application has read (EventCredit).
	Consumed uint64
	// Buffered is received data not yet read.
	Buffered uint64
	// Credit is the send credit available.
	Credit uint64
	// Dropped is the size of a dropped write.
	Dropped uint64
	// Reason says why the stream is blocked (EventBlocked,
	// EventUnblocked).
	Reason BlockReason
	// Duration is how long the stall lasted (EventUnblocked), or the RTT
	// sample (EventRTT).
	Duration time.Duration
	// Signal is the stall's signal latency (EventUnblocked of the
	// sending side's credit reasons; see StreamStats.SignalLatency).
	Signal time.Duration
	// Metric, Level and Value describe a threshold crossing
	// (EventThreshold).
	Metric Metric
	Level  Level
	Value  uint64
	// Code is the error code of EventStreamReset, EventGoAway and
	// EventSessionClosed.
	Code uint64
	// Remote is true when the peer did it (EventStreamOpened,
	// EventStreamReset, EventGoAway, EventSessionClosed).
	Remote bool
}

// StreamStats is a snapshot of one stream's counters.
type StreamStats struct {
	ID uint64
	// Send side.
	BytesSent    uint64 // DATA payload bytes sent
	SendLimit    uint64 // highest offset the peer allows
	SendCredit   uint64 // SendLimit - BytesSent
	PeerConsumed uint64 // bytes the peer's application has read
	ConsumerLag  uint64 // BytesSent - PeerConsumed
	// PeakConsumerLag is the largest ConsumerLag so far: the most data
	// ever sent and not yet consumed at once (tracked at every send, not
	// sampled).
	PeakConsumerLag uint64
	Stalls          uint64 // times a writer ran out of credit
	TimeStalled     time.Duration
	// Blocked is stall counts and time by reason: the sending side's
	// reasons, and ReasonUnread for the receiving side. Stalls and
	// TimeStalled are its credit reasons (peer window and session budget)
	// together.
	Blocked Blocked
	// SignalLatency is the distribution, over the stalls for credit that
	// ended, of the time from the peer's read that freed the credit to
	// this writer resuming (see the package documentation for how it is
	// measured across hosts).
	SignalLatency Histogram
	// UpdateDelay (receiving side) is the distribution of the time from a
	// read that made a WINDOW_UPDATE due to the update being written to
	// the transport.
	UpdateDelay Histogram
	// Level is the highest level the stream is at against the session's
	// Thresholds, and Levels each metric's.
	Level        Level
	Levels       [NumMetrics]Level
	BytesDropped uint64 // drop mode: bytes discarded
	Drops        uint64 // drop mode: writes discarded
	// Replaced and BytesReplaced (LatestWins) count the messages, and
	// their bytes, that were replaced unsent by a newer one while
	// waiting for credit. A LatestWins message discarded for another
	// reason (its write deadline passed, or Close) counts in Drops and
	// BytesDropped.
	Replaced      uint64
	BytesReplaced uint64
	// Receive side.
	BytesReceived uint64
	BytesConsumed uint64
	Buffered      uint64
	RecvLimit     uint64 // highest offset granted to the peer
	RecvWindow    uint64
	Reserved      uint64 // bytes held in the session budget
	// Compression counts the stream's compressed and plain frames, and
	// its bytes on the wire (BytesSent and BytesReceived count the
	// application's bytes).
	Compression CompressionStats
	// Frames.
	UpdatesSent     uint64
	UpdatesReceived uint64
	BlockedSent     uint64
	BlockedReceived uint64
}

// SessionStats is a snapshot of a session's counters.
type SessionStats struct {
	Streams         int    // streams open now
	StreamsOpened   uint64 // streams opened by this endpoint, ever
	StreamsAccepted uint64 // streams opened by the peer, ever
	StreamsRefused  uint64 // peer streams refused
	BudgetUsed      uint64 // what the session budget holds: windows, codecs and Overhead
	BudgetTotal     uint64 // the session budget
	// Overhead is the part of BudgetUsed that is fixed memory: the
	// session's SessionOverhead and each stream's StreamOverhead.
	Overhead        uint64
	RTT             time.Duration // smoothed RTT
	BytesSent       uint64
	BytesReceived   uint64
	UpdatesSent     uint64
	UpdatesReceived uint64
	Stalls          uint64
	PingsSent       uint64
	PingsReceived   uint64
	// SmallFramesPaced counts the peer's small DATA frames that waited
	// for the session's small-frame rate (Config.MaxSmallFramesPerSecond).
	SmallFramesPaced uint64
	// AcceptQueue is the number of peer streams waiting for Accept.
	AcceptQueue int
	// BytesConsumed is what this side's application has read, ever.
	BytesConsumed uint64
	// WindowGrowths and WindowShrinks count auto-tuning steps of the
	// receive windows; BudgetRefusals the times the session budget
	// refused window growth or a new stream.
	WindowGrowths  uint64
	WindowShrinks  uint64
	BudgetRefusals uint64
	// Blocked is the stall counts and time by reason of every stream the
	// session has had (ended stalls only).
	Blocked Blocked
	// SignalLatency and UpdateDelay merge those of every stream, as each
	// observation is made.
	SignalLatency Histogram
	UpdateDelay   Histogram
	// RTTSamples is the distribution of the RTT samples PINGs gave.
	RTTSamples Histogram
	// Thresholds counts the threshold crossings into warning and
	// critical.
	ThresholdWarnings, ThresholdCriticals uint64
	// Closed is true once the session has ended; CloseCode is the code
	// it ended with, and CloseRemote whether the peer sent it.
	Closed      bool
	CloseCode   uint64
	CloseRemote bool
	// Compression counts the session's compressed and plain frames, its
	// bytes on the wire and its codecs' memory.
	Compression CompressionStats
	// StreamsRateRefused counts the peer's streams refused for the
	// admission rate (Config.StreamRate), each with a retry-after hint;
	// they count in StreamsRefused too. OpensFailedFast counts Opens the
	// circuit breaker failed fast, and Breaker is its state ("closed",
	// "open", "half-open"; "" without one: BreakerStats has the rest).
	StreamsRateRefused uint64
	OpensFailedFast    uint64
	Breaker            string
	// PriorityRefusals counts the BudgetRefusals that a stream's priority
	// caused: the budget had room, kept for more urgent streams
	// (Stream.SetPriority).
	PriorityRefusals uint64
}

// WindowBytes is the part of BudgetUsed that the streams' receive windows
// hold: BudgetUsed less the codecs' memory and Overhead. Stats reads the
// three one after the other, so a stream or codec made or released in
// between can make them disagree for a moment: WindowBytes is then 0, not
// a wrapped-around difference.
func (st SessionStats) WindowBytes() uint64 {
	other := st.Compression.CodecMemory + st.Overhead
	if st.BudgetUsed < other {
		return 0
	}
	return st.BudgetUsed - other
}

// IsAbuseCode reports whether code is one a session closes a misbehaving
// peer with: PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR,
// STREAM_LIMIT_ERROR, SETTINGS_ERROR or ENHANCE_YOUR_CALM.
func IsAbuseCode(code uint64) bool {
	switch framing.ErrorCode(code) {
	case framing.ProtocolError, framing.FlowControlError, framing.FrameSizeError,
		framing.StreamLimitError, framing.SettingsError, framing.EnhanceYourCalm:
		return true
	}
	return false
}
