// Package transport binds the bp/1 protocol to real connections.
//
// [Conn] is the small interface package mux needs from a connection: a
// control lane in each direction and any number of bidirectional lanes, one
// per logical stream, each an independent ordered byte stream so that loss
// or a stall on one lane never delays another. Three bindings live in this
// package, all behind the same interface, none known to mux:
//
//   - DialQUIC/ListenQUIC: QUIC with quic-go, the default.
//   - DialXQUIC/ListenXQUIC: QUIC with golang.org/x/net/quic, a second,
//     independent stack, for interoperability. That package says it is not
//     ready for production, and it slows badly when packets are reordered.
//   - DialTCP/ListenTCP: one TLS 1.3 connection over TCP (SPEC.md section
//     13), for networks that block UDP. bp/1's credit still keeps one
//     stalled stream from holding up the others, but a lost segment delays
//     every lane until TCP resends it (head-of-line blocking).
//
// memconn is an in-memory pair with the same behaviour, for tests.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ALPN is the TLS application protocol of bp/1.
const ALPN = "bp/1"

// Conn is one transport connection carrying one bp/1 session.
//
// All methods are safe for concurrent use. When the connection closes,
// every blocked call returns an error, and errors caused by the peer closing
// the connection with an application code are *ApplicationError.
type Conn interface {
	// OpenControl opens this endpoint's control lane, a unidirectional
	// stream to the peer.
	OpenControl(ctx context.Context) (SendLane, error)
	// AcceptControl waits for the peer's control lane.
	AcceptControl(ctx context.Context) (io.Reader, error)
	// OpenLane opens a new bidirectional lane, waiting while the peer's
	// limit on concurrent lanes is reached.
	OpenLane(ctx context.Context) (Lane, error)
	// AcceptLane waits for the next lane the peer opens.
	AcceptLane(ctx context.Context) (Lane, error)
	// CloseWithError closes the connection with a bp/1 error code.
	CloseWithError(code uint64, reason string) error
	// Done is closed when the connection is closed, for any reason.
	Done() <-chan struct{}
	// RTT returns the smoothed round-trip time, or 0 before a sample.
	RTT() time.Duration
	// LocalAddr returns the local network address.
	LocalAddr() net.Addr
	// RemoteAddr returns the peer's network address.
	RemoteAddr() net.Addr
	// IsClient reports whether this endpoint dialled the connection.
	IsClient() bool
}

// SendLane is the sending half of a lane.
//
// A Write can block when the peer stops reading the lane at the transport
// level; the write deadline bounds it, and CancelWrite (from another
// goroutine) unblocks it at once.
type SendLane interface {
	io.Writer
	// CloseWrite ends the lane's sending direction gracefully.
	CloseWrite() error
	// CancelWrite abandons the sending direction with an error code.
	CancelWrite(code uint64)
	// SetWriteDeadline makes Writes that have not completed by t fail with
	// an error matching os.ErrDeadlineExceeded. Zero means no deadline.
	SetWriteDeadline(t time.Time) error
}

// Prioritizer is implemented by lanes whose transport schedules its
// sending by priority (the quic-go binding): urgency 0 (most urgent) to 7,
// and whether the lane's data may be interleaved with that of other lanes
// of the same urgency (RFC 9218).
type Prioritizer interface {
	SetPriority(urgency uint8, incremental bool)
}

// Lane is a bidirectional, ordered, reliable byte stream.
type Lane interface {
	io.Reader
	SendLane
	// CancelRead tells the peer to stop sending on the lane.
	CancelRead(code uint64)
}

// ReadDeadliner is implemented by lanes whose Read can be cut short: once
// the deadline t passes, a Read returns what it has read with an error
// matching os.ErrDeadlineExceeded, and the lane reads on as before once
// the deadline is cleared (zero). The quic-go binding implements it;
// package mux uses it to read a DATA payload straight into the buffer of a
// waiting Read, and to give that Read its buffer back when its own
// deadline passes first.
type ReadDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// Listener accepts connections.
type Listener interface {
	// Accept waits for the next connection.
	Accept(ctx context.Context) (Conn, error)
	// Close stops listening. Connections already accepted stay open.
	Close() error
	// Addr returns the address the listener is bound to.
	Addr() net.Addr
}

// ApplicationError is a connection closed with a bp/1 error code, by the
// peer (Remote) or by this endpoint.
type ApplicationError struct {
	Code   uint64
	Remote bool
	Reason string
}

func (e *ApplicationError) Error() string {
	who := "local"
	if e.Remote {
		who = "peer"
	}
	if e.Reason == "" {
		return fmt.Sprintf("connection closed by %s with code 0x%x", who, e.Code)
	}
	return fmt.Sprintf("connection closed by %s with code 0x%x: %s", who, e.Code, e.Reason)
}

// ErrConnClosed is returned (wrapped) by lanes of a connection that closed
// without an application error code: an idle timeout, a handshake failure,
// a transport error.
var ErrConnClosed = errors.New("transport: connection closed")

// ErrIdleTimeout is returned (wrapped, together with ErrConnClosed) when
// the connection closed because nothing was heard from the peer for the
// transport's idle timeout.
var ErrIdleTimeout = errors.New("idle timeout: nothing heard from the peer")

// ErrConnRefused is returned (wrapped) when the server refused the
// connection, as a bp/1 listener does over its session or handshake cap, its session rate, or
// once it is closed (QUIC's CONNECTION_REFUSED), or when nothing listens
// on the port (ICMP port unreachable).
var ErrConnRefused = errors.New("connection refused")
