package main

import (
	"context"
	"time"

	"github.com/bpmux/bp/mux"
)

// Ending a session without losing its last frames.
//
// A QUIC close discards stream data not yet delivered, and a stream's last
// frames (the final consumed report that the peer's WaitConsumed needs,
// and the end of its lane) are written only as it finishes. So the
// dialling side closes, once every stream of its session is retired (which
// means the peer's lanes have ended, after the peer's last frames) and
// after a short linger for its own last frames to arrive; the accepting
// side waits for that close.

// closeGrace bounds the wait for a clean end of a session whose streams
// are done.
const closeGrace = 3 * time.Second

// closeAsDialler closes sess once its streams are retired, lingering a
// few round trips for its own last frames.
func closeAsDialler(ctx context.Context, sess *mux.Session) {
	ctx, cancel := context.WithTimeout(ctx, closeGrace)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sess.Stats().Streams > 0 && ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
		case <-sess.Done():
		}
		if sess.Err() != nil {
			break
		}
	}
	linger := time.NewTimer(min(3*sess.Stats().RTT+20*time.Millisecond, 500*time.Millisecond))
	defer linger.Stop()
	select {
	case <-linger.C:
	case <-ctx.Done():
	case <-sess.Done():
	}
	sess.Close()
}

// closeAsListener waits for the dialler to close sess, then closes it.
func closeAsListener(ctx context.Context, sess *mux.Session) {
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-sess.Done():
	case <-t.C:
	case <-ctx.Done():
	}
	sess.Close()
}
