package main

import (
	"context"
	"time"

	"github.com/bpmux/bp/mux"
)

// closeGrace bounds the wait for a clean end of a session whose streams
// are done.
const closeGrace = 3 * time.Second

// endSession ends sess gracefully: GOAWAY, then the close that follows once
// both sides have finished every stream, so that nothing sent is lost in
// transit (mux.Session.Shutdown). It waits at most closeGrace.
func endSession(ctx context.Context, sess *mux.Session) {
	ctx, cancel := context.WithTimeout(ctx, closeGrace)
	defer cancel()
	sess.Shutdown(ctx)
}
