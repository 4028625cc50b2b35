package mux

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
)

// TestCloseCombinations runs every pair of plans of state_test.go on a
// real stream over quic-go: each side has sent a message the other has not
// read yet, then both applications follow their plans at once. A stream
// whose plans finish both directions must be retired on both sides, and
// Shutdown must then return nil promptly on both; any other stream must be
// kept (it is still in use), and retires as soon as both sides Close it.
func TestCloseCombinations(t *testing.T) {
	cfg := &Config{KeepAliveInterval: -1}
	msg := []byte("a message that arrived before the plan ran")
	for a := range numPlans {
		for b := range numPlans {
			t.Run(a.String()+"/"+b.String(), func(t *testing.T) {
				p := newPair(t, cfg, cfg)
				ctx := ctxT(t)
				c, err := p.client.Open(ctx)
				require.NoError(t, err)
				_, err = c.Write(msg)
				require.NoError(t, err)
				s, err := p.server.Accept(ctx)
				require.NoError(t, err)
				_, err = s.Write(msg)
				require.NoError(t, err)
				for _, st := range []*Stream{c, s} {
					waitFor(t, "the message to arrive", func() bool { return st.Stats().Buffered == uint64(len(msg)) })
				}

				var wg sync.WaitGroup
				for _, run := range []struct {
					st *Stream
					pl plan
				}{{c, a}, {s, b}} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						runPlan(t, run.st, run.pl, msg)
					}()

				}
				want := directionDone(a, b) && directionDone(b, a)
				sessions := []*Session{p.client, p.server}
				if !want {
					// Still in use: nothing may retire it. Give the frames
					// time to travel, then check both sides kept it.
					time.Sleep(150 * time.Millisecond)
					for _, sess := range sessions {
						require.Len(t, sess.Streams(), 1, "a stream in use was retired; client %s, server %s", c.state(), s.state())
					}
					c.Close()
					s.Close()
				}
				for _, sess := range sessions {
					waitFor(t, "the stream to retire", func() bool { return len(sess.Streams()) == 0 })
				}
				wg.Wait()
				shut := make(chan error, 2)
				start := time.Now()
				for _, sess := range sessions {
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						shut <- sess.Shutdown(ctx)
					}()
				}
				for range sessions {
					require.NoError(t, <-shut)
				}
				require.Less(t, time.Since(start), 2*time.Second, "Shutdown took its time")
			})
		}
	}
}

// runPlan makes a plan's calls on st. A read to EOF waits until the end
// arrives or the stream is closed under it.
func runPlan(t *testing.T, st *Stream, pl plan, msg []byte) {
	for _, step := range pl.steps() {
		switch step {
		case "Close":
			require.NoError(t, st.Close())
		case "CloseWrite":
			require.NoError(t, st.CloseWrite())
		case "CloseRead":
			require.NoError(t, st.CloseRead())
		case "Reset":
			require.NoError(t, st.Reset(framing.Cancel))
		case "Read":
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(st, got); err == nil { // else reset by the peer
				require.Equal(t, msg, got)
			}
		case "ReadEOF":
			n, err := st.Read(make([]byte, 1))
			require.Zero(t, n, "data after the message")
			if errors.Is(err, ErrClosed) {
				return // closed by the test: the plan could not go on
			}
		}
	}
}

// TestShutdownReportsAbruptPeer: Shutdown returns nil only when both sides
// finished; a peer that closes with NO_ERROR while this side still has a
// stream in progress (its own Close, or its Shutdown deadline) vouches for
// nothing, and Shutdown says so.
func TestShutdownReportsAbruptPeer(t *testing.T) {
	p := newPair(t, nil, nil)
	c, _ := p.openPair(t)
	_, err := c.Write([]byte("unfinished"))
	require.NoError(t, err)
	shut := make(chan error, 1)
	go func() { shut <- p.server.Shutdown(ctxT(t)) }()
	waitFor(t, "the GOAWAY to arrive", func() bool {
		p.client.mu.Lock()
		defer p.client.mu.Unlock()
		return p.client.goAwayRecvd
	})
	require.NoError(t, p.client.Close())
	err = <-shut
	require.ErrorIs(t, err, ErrSessionClosed)
	var se *SessionError
	require.ErrorAs(t, err, &se)
	require.True(t, se.Remote)
	require.Equal(t, framing.NoError, se.Code)
	require.ErrorContains(t, err, "closed by the application", "the peer's reason")
}

// TestQUICResetBeforeAccept: a stream the peer aborts at the QUIC level
// before the application accepted it is refused like one it RESET: never
// handed to Accept, and retired at once.
func TestQUICResetBeforeAccept(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	p := dialRaw(t, srv)
	l := p.onStreamData([]byte("never mind"), false)
	waitFor(t, "the stream to be queued", func() bool { return p.sess.Stats().AcceptQueue == 1 })
	l.s.cancelWrite(framing.Cancel)
	l.s.cancelRead(framing.Cancel)
	waitFor(t, "the stream to retire", func() bool {
		st := p.sess.Stats()
		return st.Streams == 0 && st.AcceptQueue == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.sess.Accept(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, p.sess.Err())
}

// TestPeakConsumerLag: the peak of data in flight is tracked at every
// send, so a transfer too fast for any sampling still reports it.
func TestPeakConsumerLag(t *testing.T) {
	cfg := &Config{InitialWindow: 64 << 10, MaxWindow: 64 << 10}
	p := newPair(t, cfg, cfg)
	c, s := p.openPair(t)
	require.Equal(t, 64<<10, writeWithin(t, c, newPattern(1), 300*time.Millisecond))
	_, err := io.ReadFull(s, make([]byte, 64<<10))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, c.WaitConsumed(ctxT(t)))
	st := c.Stats()
	require.Zero(t, st.ConsumerLag)
	require.Equal(t, uint64(64<<10), st.PeakConsumerLag)
}

// TestSessionErrorSaysEachFactOnce: a peer's close reads as its code and
// its reason, each once, while errors.As still finds the transport's
// error underneath.
func TestSessionErrorSaysEachFactOnce(t *testing.T) {
	p := newPair(t, nil, nil)
	require.NoError(t, p.client.CloseWithError(framing.InternalError, "bpcat: interrupted"))
	<-p.server.Done()
	err := p.server.Err()
	require.EqualError(t, err, "mux: session closed by peer (INTERNAL_ERROR): bpcat: interrupted")
	var ae *transport.ApplicationError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, uint64(framing.InternalError), ae.Code)
}
