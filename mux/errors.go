package mux

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
)

// Errors of sessions and streams. Every error a Session or Stream returns
// can be tested with errors.Is against these, or unpacked with errors.As
// into *SessionError or *StreamError.
var (
	// ErrSessionClosed: the session is closed, by either side or by a
	// failure; the *SessionError says which and why.
	ErrSessionClosed = errors.New("mux: session closed")
	// ErrGoAway: the peer sent GOAWAY, so no new stream may be opened.
	ErrGoAway = errors.New("mux: peer is going away")
	// ErrStreamReset: the stream was reset; the *StreamError gives the code.
	ErrStreamReset = errors.New("mux: stream reset")
	// ErrStreamRefused: the peer refused the stream before processing any
	// of it (stream limit, budget, GOAWAY); it is safe to retry.
	ErrStreamRefused = errors.New("mux: stream refused")
	// ErrPeerUnreachable: nothing was heard from the peer for the
	// session's DeadPeerTimeout (no PING answer, no packet): the peer
	// vanished, or the path to it did.
	ErrPeerUnreachable = errors.New("mux: peer unreachable")
	// ErrWouldBlock: a fail-fast stream has no credit for the write.
	ErrWouldBlock = errors.New("mux: write would block: no flow-control credit")
	// ErrClosed is returned after the stream's own Close or CloseWrite.
	// It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("mux: stream closed: %w", net.ErrClosed)
)

// SessionError describes why a session ended.
type SessionError struct {
	// Code is the bp/1 error code the session closed with.
	Code framing.ErrorCode
	// Remote is true when the peer closed the session.
	Remote bool
	// Err is the underlying cause, if any.
	Err error
}

func (e *SessionError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	cause := ""
	if e.Err != nil {
		cause = e.Err.Error()
	}
	// A close the peer sent says its code already: what is left to say is
	// its reason phrase, once.
	var ae *transport.ApplicationError
	if errors.As(e.Err, &ae) && ae.Remote {
		cause = ae.Reason
	}
	if cause != "" {
		return fmt.Sprintf("mux: session closed %s (%v): %s", who, e.Code, cause)
	}
	return fmt.Sprintf("mux: session closed %s (%v)", who, e.Code)
}

// Is makes every SessionError match ErrSessionClosed.
func (e *SessionError) Is(target error) bool { return target == ErrSessionClosed }

// Unwrap returns the cause.
func (e *SessionError) Unwrap() error { return e.Err }

// StreamError is a stream reset by the peer (Remote) or by this endpoint.
type StreamError struct {
	StreamID uint64
	Code     framing.ErrorCode
	Remote   bool
	// After is the peer's retry-after hint when it refused the stream
	// for its admission rate (REFUSED_STREAM with RETRY_AFTER, SPEC.md
	// 5.4): open again no sooner. Zero when it gave none.
	After time.Duration
}

// RetryAfter returns the peer's retry-after hint (zero: none), so that a
// retry policy (package retry) can honour it.
func (e *StreamError) RetryAfter() time.Duration { return e.After }

func (e *StreamError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	if e.After > 0 {
		return fmt.Sprintf("mux: stream %d reset %s (%v, retry after %v)", e.StreamID, who, e.Code, e.After)
	}
	return fmt.Sprintf("mux: stream %d reset %s (%v)", e.StreamID, who, e.Code)
}

// Is matches ErrStreamReset, and ErrStreamRefused for REFUSED_STREAM.
func (e *StreamError) Is(target error) bool {
	return target == ErrStreamReset || (target == ErrStreamRefused && e.Code == framing.RefusedStream)
}
