package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// plainError is an error whose message is written for people and leaves
// out the wrapped error's words (they are still there for errors.Is).
type plainError struct {
	msg string
	err error
}

func (e *plainError) Error() string { return e.msg }
func (e *plainError) Unwrap() error { return e.err }

// peerUnreachable reports whether err says the peer stopped answering: the
// session's dead-peer timeout, or the transport's idle timeout.
func peerUnreachable(err error) bool {
	return errors.Is(err, mux.ErrPeerUnreachable) || errors.Is(err, transport.ErrIdleTimeout)
}

// describeSend is describe for the sending direction, where a stream error
// from the peer means that it stopped reading (STOP_SENDING).
func (f *sessionFlags) describeSend(doing string, err error) error {
	var se *mux.StreamError
	if errors.As(err, &se) && se.Remote {
		return &plainError{fmt.Sprintf("%s: the receiver stopped reading (%v): data sent was lost", doing, se.Code), err}
	}
	return f.describe(doing, err)
}

// errStdoutClosed is the cause of a transfer whose output went away.
var errStdoutClosed = errors.New("stdout closed")

// describeOutput describes a failed write of received data to stdout.
func describeOutput(err error) error {
	if errors.Is(err, syscall.EPIPE) {
		return &plainError{"stdout closed (its reader went away): stopped receiving, and told the peer", errors.Join(errStdoutClosed, err)}
	}
	return &plainError{fmt.Sprintf("writing to stdout: %v: stopped receiving, and told the peer", errors.Unwrap(err)), errors.Join(errStdoutClosed, err)}
}

// withContext prefixes err with doing, unless the message starts with the
// name of the library package that made it ("transport: listen
// 127.0.0.1:1: ..."): that message already says what was being done, and
// is kept, without the package's name.
func withContext(doing string, err error) error {
	msg := err.Error()
	for _, p := range []string{"transport: ", "bp: ", "mux: "} {
		if strings.HasPrefix(msg, p) {
			return &plainError{strings.TrimPrefix(msg, p), err}
		}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// describe wraps a transfer error with what was being done, in words a
// user can act on. For a peer that stopped answering, use
// sessionFlags.describe, which knows how long it was waited for.
func describe(doing string, err error) error {
	var se *mux.SessionError
	var ae *transport.ApplicationError
	var ste *mux.StreamError
	switch {
	case errors.Is(err, transport.ErrConnRefused):
		return withContext(doing, err) // the transport says what was tried
	case errors.Is(err, context.Canceled):
		return &plainError{doing + ": interrupted", err}
	case peerUnreachable(err):
		return &plainError{doing + ": the peer stopped answering (it, or the path to it, is gone)", err}
	case errors.As(err, &se) && se.Remote:
		return &plainError{fmt.Sprintf("%s: the peer closed the session (%v)%s", doing, se.Code, reasonOf(err)), err}
	case errors.As(err, &ae) && ae.Remote:
		return &plainError{fmt.Sprintf("%s: the peer closed the connection (code 0x%x)%s", doing, ae.Code, reasonOf(err)), err}
	case errors.Is(err, transport.ErrConnClosed):
		return &plainError{doing + ": the connection was lost", err}
	case errors.As(err, &ste) && ste.Remote:
		return &plainError{fmt.Sprintf("%s: the peer reset the stream (%v): data was lost", doing, ste.Code), err}
	case errors.Is(err, mux.ErrStreamReset):
		return &plainError{doing + ": the stream was reset", err}
	}
	return withContext(doing, err)
}

// reasonOf returns ": " and the reason phrase of the peer's
// CONNECTION_CLOSE in err, or "" if there is none.
func reasonOf(err error) string {
	var ae *transport.ApplicationError
	if errors.As(err, &ae) && ae.Reason != "" {
		return ": " + strings.Join(strings.Fields(ae.Reason), " ")
	}
	return ""
}
