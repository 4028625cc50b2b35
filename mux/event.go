package mux

import (
	"fmt"
	"time"
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
	BytesDropped    uint64 // drop mode: bytes discarded
	Drops           uint64 // drop mode: writes discarded
	// Receive side.
	BytesReceived uint64
	BytesConsumed uint64
	Buffered      uint64
	RecvLimit     uint64 // highest offset granted to the peer
	RecvWindow    uint64
	Reserved      uint64 // bytes held in the session budget
	// Frames.
	UpdatesSent     uint64
	UpdatesReceived uint64
	BlockedSent     uint64
	BlockedReceived uint64
}

// SessionStats is a snapshot of a session's counters.
type SessionStats struct {
	Streams         int           // streams open now
	StreamsOpened   uint64        // streams opened by this endpoint, ever
	StreamsAccepted uint64        // streams opened by the peer, ever
	StreamsRefused  uint64        // peer streams refused
	BudgetUsed      uint64        // sum of stream reservations
	BudgetTotal     uint64        // the session budget
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
}
