package main

import (
	"context"
	"strings"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// closeGrace bounds the wait for a clean end of a session whose streams
// are done.
const closeGrace = 3 * time.Second

// maxReason bounds the reason phrase of a CONNECTION_CLOSE, which must fit
// in one packet.
const maxReason = 200

// endSession ends sess gracefully: GOAWAY, then the close that follows once
// both sides have finished every stream, so that nothing sent is lost in
// transit (mux.Session.Shutdown). A stream that failed must have been
// reset (or its reading closed) first: that is how the peer learns, per
// stream, which data was lost (SPEC.md section 9: stream codes never close
// a session). If the peer has not finished within closeGrace, endSession
// closes the session with NO_ERROR and reason, which says what happened
// ("bpcat: interrupted (SIGTERM)"). It reports whether both sides
// finished in time.
//
// It does not watch a context: an interrupted command still ends its
// session this way, bounded by closeGrace.
func endSession(sess *mux.Session, reason string) (graceful bool) {
	reason = truncate(reason)
	t := time.AfterFunc(closeGrace, func() { sess.CloseWithError(framing.NoError, reason) })
	err := sess.Shutdown(context.Background())
	return t.Stop() && err == nil
}

// truncate shortens a reason phrase to maxReason bytes.
func truncate(reason string) string {
	if len(reason) <= maxReason {
		return reason
	}
	return strings.ToValidUTF8(reason[:maxReason-3], "") + "..."
}
