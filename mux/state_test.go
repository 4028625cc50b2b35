package mux

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The lifecycle is checked here the way window/ is: as pure logic, over
// every interleaving. Two endpoints run their lifecycles, joined by a lane
// whose two directions deliver frames in order. Each endpoint's
// application follows a plan (the calls it will make, at any moment); the
// model explores every order of calls, of each side writing what it owes
// (as Stream.writeControl does) and of frames arriving, and checks at
// every state that no frame breaks the peer's rules, and at every end
// state that the stream is retired on both sides exactly when the plans
// finish both directions.

// wireFrame is what the model's lanes carry.
type wireFrame uint8

const (
	wFin wireFrame = iota + 1
	wReset
	wStop
	wUpdate
	wLaneFin
)

// plan is what one application does with its stream.
type plan uint8

const (
	planNothing plan = iota
	planClose
	planCloseWrite
	planCloseRead
	planReset
	planReadToEOF
	planHalfClose // CloseWrite, then read to EOF: the README's pattern
	planCloseBoth // CloseRead, then CloseWrite
	// CloseWrite, read to EOF, then Close: the README's pattern, and the
	// one that once left the stream unable to retire.
	planHalfCloseThenClose
	planReadThenClose // read to EOF, then Close
	numPlans
)

var planNames = [...]string{"nothing", "Close", "CloseWrite", "CloseRead", "Reset", "read-to-EOF", "CloseWrite+read-to-EOF", "CloseRead+CloseWrite", "CloseWrite+read-to-EOF+Close", "read-to-EOF+Close"}

func (p plan) String() string { return planNames[p] }

// steps are the calls of a plan, in order.
func (p plan) steps() []string {
	switch p {
	case planClose:
		return []string{"Close"}
	case planCloseWrite:
		return []string{"CloseWrite"}
	case planCloseRead:
		return []string{"CloseRead"}
	case planReset:
		return []string{"Reset"}
	case planReadToEOF:
		return []string{"Read", "ReadEOF"}
	case planHalfClose:
		return []string{"CloseWrite", "Read", "ReadEOF"}
	case planCloseBoth:
		return []string{"CloseRead", "CloseWrite"}
	case planHalfCloseThenClose:
		return []string{"CloseWrite", "Read", "ReadEOF", "Close"}
	case planReadThenClose:
		return []string{"Read", "ReadEOF", "Close"}
	}
	return nil
}

// endsWriting says whether an application following p, beside a peer
// following q, ends its writing: at once, or (for a plan that first reads
// to the end) once q ends its own.
func (p plan) endsWriting(q plan) bool {
	switch p {
	case planClose, planCloseWrite, planReset, planHalfClose, planCloseBoth, planHalfCloseThenClose:
		return true
	case planReadThenClose:
		return q.endsWriting(planNothing)
	}
	return false
}

// stopsReading says whether p stops reading before the end: STOP_SENDING.
func (p plan) stopsReading() bool {
	return p == planClose || p == planCloseRead || p == planReset || p == planCloseBoth
}

// finishesReading says whether p is done with what it receives, by
// stopping or by reading until the end or an error.
func (p plan) finishesReading() bool {
	switch p {
	case planReadToEOF, planHalfClose, planHalfCloseThenClose, planReadThenClose:
		return true
	}
	return p.stopsReading()
}

// directionDone says whether the direction from a writer following w to a
// reader following r ends and is finished: it ends when the writer ends
// it or the reader stops it (STOP_SENDING makes the writer reset), and it
// is finished when the reader reads or stops, or the writer resets it.
func directionDone(w, r plan) bool {
	return (w.endsWriting(r) || r.stopsReading()) && (r.finishesReading() || w == planReset)
}

// modelEnd is one endpoint of the model.
type modelEnd struct {
	lc     lifecycle
	unread bool // the peer's data (sent before anything else) is not yet read
	step   int  // next step of the plan
}

type modelState struct {
	end  [2]modelEnd
	wire [2][]wireFrame // wire[i]: frames from end i to the other, in order
}

func (m modelState) key() string { return fmt.Sprintf("%+v", m) }

// call applies an application call to an endpoint, as Stream's methods do.
// It reports false if the call cannot happen yet (Read of data not there).
func (e *modelEnd) call(name string) bool {
	l := &e.lc
	switch name {
	case "Close":
		l.closeRead(!e.unread)
		e.unread = false
		l.closeWrite()
	case "CloseWrite":
		l.closeWrite()
	case "CloseRead":
		l.closeRead(!e.unread)
		e.unread = false
	case "Reset":
		l.closeRead(!e.unread)
		e.unread = false
		l.reset()
	case "Read":
		e.unread = false // the data arrived first, lanes being ordered
	case "ReadEOF":
		switch l.recv {
		case recvOpen:
			return false // Read waits for the end (or an error)
		case recvDataRecvd:
			l.readEOF()
		}
	}
	return true
}

// flush writes what the endpoint owes, as Stream.writeControl does.
func (e *modelEnd) flush() []wireFrame {
	l := &e.lc
	if l.laneSend != laneOpen {
		return nil
	}
	var out []wireFrame
	if l.finalUpdateOwed && l.mayUpdate() {
		out = append(out, wUpdate)
	}
	l.finalUpdateOwed = false
	if l.stopOwed {
		out = append(out, wStop)
		l.stopOwed = false
	}
	switch l.send {
	case sendResetQueued:
		out = append(out, wReset)
	case sendFinQueued:
		out = append(out, wFin)
	}
	l.sendWritten()
	if l.shouldFinishLane() {
		l.laneSend = laneFinished
		out = append(out, wLaneFin)
	}
	return out
}

// deliver applies a frame from the peer, as the lane reader does.
func (e *modelEnd) deliver(f wireFrame) error {
	l := &e.lc
	switch f {
	case wFin:
		return l.onPeerFin()
	case wReset:
		e.unread = false
		return l.onPeerReset()
	case wStop:
		l.onStopSending()
	case wLaneFin:
		return l.onLaneFin()
	}
	return nil
}

func TestLifecycleEveryInterleaving(t *testing.T) {
	for a := range numPlans {
		for b := range numPlans {
			t.Run(a.String()+"/"+b.String(), func(t *testing.T) {
				plans := [2]plan{a, b}
				start := modelState{end: [2]modelEnd{{unread: true}, {unread: true}}}
				seen := map[string]bool{}
				ends := 0
				var explore func(m modelState)
				explore = func(m modelState) {
					if seen[m.key()] {
						return
					}
					seen[m.key()] = true
					require.Less(t, len(seen), 200000, "state space exploded")
					moved := false
					for i := range 2 {
						// The application's next call.
						if steps := plans[i].steps(); m.end[i].step < len(steps) {
							n := m
							if n.end[i].call(steps[n.end[i].step]) {
								n.end[i].step++
								explore(n)
								moved = true
							}
						}
						// Writing what is owed.
						n := m
						if out := n.end[i].flush(); len(out) > 0 || n.end[i].lc != m.end[i].lc {
							n.wire[i] = append(append([]wireFrame(nil), m.wire[i]...), out...)
							explore(n)
							moved = true
						}
						// The next frame from the other end arriving.
						if len(m.wire[1-i]) > 0 {
							n := m
							f := m.wire[1-i][0]
							n.wire[1-i] = m.wire[1-i][1:]
							require.NoError(t, n.end[i].deliver(f), "end %d receiving %v in %v", i, f, m.end[i].lc)
							explore(n)
							moved = true
						}
					}
					for i := range 2 {
						l := m.end[i].lc
						if l.laneSend != laneOpen {
							require.False(t, l.owesFrames(), "end %d owes frames after its lane ended: %v", i, l)
						}
						if l.shouldFinishLane() {
							require.True(t, l.sendEnded() && l.recvQuiet())
						}
					}
					if moved {
						return
					}
					// An end state: nothing more can happen.
					ends++
					want := directionDone(a, b) && directionDone(b, a)
					for i := range 2 {
						e := m.end[i]
						require.Equal(t, want, e.lc.retired(e.unread), "end %d (%v): %v", i, plans[i], e.lc)
					}
				}
				explore(start)
				require.Positive(t, ends)
				t.Logf("%d states, %d end states", len(seen), ends)
			})
		}
	}
}

// TestLifecycleTransitions pins single transitions that the interleaving
// test only reaches through the model.
func TestLifecycleTransitions(t *testing.T) {
	t.Run("a queued FIN gives way to RESET", func(t *testing.T) {
		var l lifecycle
		l.closeWrite()
		require.True(t, l.reset())
		require.Equal(t, sendResetQueued, l.send)
		l.sendWritten()
		require.Equal(t, sendResetSent, l.send)
		require.False(t, l.reset(), "nothing to reset once the end is written")
	})
	t.Run("STOP_SENDING after FIN is recorded, not answered", func(t *testing.T) {
		l := lifecycle{send: sendDataSent}
		first, answer := l.onStopSending()
		require.True(t, first)
		require.False(t, answer)
		first, _ = l.onStopSending()
		require.False(t, first, "a repeat")
	})
	t.Run("frames after the end", func(t *testing.T) {
		l := lifecycle{recv: recvDataRecvd}
		require.ErrorIs(t, l.onPeerData(), errDataAfterEnd)
		require.ErrorIs(t, l.onPeerFin(), errDataAfterEnd)
		require.ErrorIs(t, l.onPeerReset(), errResetAfterEnd)
	})
	t.Run("lane FIN too early", func(t *testing.T) {
		l := lifecycle{}
		require.ErrorIs(t, l.onLaneFin(), errLaneEndedOpen)
		l = lifecycle{recv: recvDataRecvd}
		require.ErrorIs(t, l.onLaneFin(), errLaneEndedEarly)
		l = lifecycle{recv: recvDataRecvd, peerStopped: true}
		require.NoError(t, l.onLaneFin())
	})
	t.Run("aborted at the QUIC level", func(t *testing.T) {
		var l lifecycle
		require.True(t, l.onLaneStopped())
		require.True(t, l.peerStopped)
		require.Equal(t, sendResetSent, l.send)
		require.True(t, l.onLaneReset())
		require.Equal(t, recvResetRecvd, l.recv)
		require.True(t, l.retired(true), "reset data is discarded")
	})
	t.Run("unread data holds a stream whose lane ended", func(t *testing.T) {
		l := lifecycle{recv: recvDataRecvd, laneSend: laneAborted, laneRecv: laneFinished}
		require.False(t, l.retired(true))
		require.True(t, l.retired(false))
		l.closeRead(false)
		require.True(t, l.retired(true))
	})
}

func TestTokenBucket(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	b := newTokenBucket(100, 10) // 100 a second, bursts of 10
	for i := range 10 {
		require.Zero(t, b.reserve(now), "token %d of the burst", i)
	}
	require.Equal(t, "10ms", b.reserve(now).String(), "the 11th waits one token's time")
	require.Equal(t, "20ms", b.reserve(now).String(), "and the next queues behind it")
	now = now.Add(time.Second)
	require.Zero(t, b.reserve(now), "refilled, up to the burst")
	unlimited := newTokenBucket(0, 0)
	for range 1000 {
		require.Zero(t, unlimited.reserve(now))
	}
}
