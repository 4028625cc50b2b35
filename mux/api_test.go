package mux

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSessionCloseWakesEverything: closing a session wakes every blocked
// Read, Write, Accept and WaitConsumed, on both sides, with errors that
// errors.Is matches against ErrSessionClosed.
func TestSessionCloseWakesEverything(t *testing.T) {
	cfg := &Config{InitialWindow: 64 << 10, MaxWindow: 64 << 10}
	p := newPair(t, cfg, cfg)
	c, s := p.openPair(t)
	quiet, _ := p.openPair(t) // nothing is ever written to it
	require.Equal(t, 64<<10, writeWithin(t, c, newPattern(3), 300*time.Millisecond))

	type result struct {
		what string
		err  error
	}
	errs := make(chan result, 5)
	go func() { _, err := c.Write(make([]byte, 1)); errs <- result{"client Write", err} }()
	go func() { _, err := quiet.Read(make([]byte, 1)); errs <- result{"client Read", err} }()
	go func() { _, err := p.client.Accept(context.Background()); errs <- result{"client Accept", err} }()
	go func() { _, err := s.Write(make([]byte, 1<<20)); errs <- result{"server Write", err} }() // client never reads
	go func() { errs <- result{"client WaitConsumed", c.WaitConsumed(context.Background())} }()
	time.Sleep(100 * time.Millisecond) // let them block; the assertions do not depend on it
	require.NoError(t, p.client.Close())
	for range 5 {
		select {
		case r := <-errs:
			require.ErrorIs(t, r.err, ErrSessionClosed, r.what)
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked call was not woken by Close")
		}
	}
	var se *SessionError
	require.ErrorAs(t, p.client.Err(), &se)
	assert.Equal(t, framing.NoError, se.Code)
	assert.False(t, se.Remote)
	select {
	case <-p.server.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("peer session not closed")
	}
	require.ErrorAs(t, p.server.Err(), &se)
	assert.True(t, se.Remote)
}

// TestResetCarriesCode: Reset fails the peer's Read and Write with a
// StreamError carrying the code, and this side's with a local one.
func TestResetCarriesCode(t *testing.T) {
	p := newPair(t, nil, nil)
	c, s := p.openPair(t)
	_, err := c.Write([]byte("abandoned"))
	require.NoError(t, err)
	require.NoError(t, c.Reset(0x42))

	_, err = io.ReadAll(s)
	var se *StreamError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, framing.ErrorCode(0x42), se.Code)
	assert.True(t, se.Remote)
	require.ErrorIs(t, err, ErrStreamReset)
	require.Eventually(t, func() bool {
		_, err := s.Write([]byte("x"))
		return errors.Is(err, ErrStreamReset)
	}, 10*time.Second, 10*time.Millisecond, "the peer's writes fail after STOP_SENDING")
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, ErrStreamReset)
	require.Eventually(t, func() bool { return len(p.client.Streams()) == 0 && len(p.server.Streams()) == 0 },
		10*time.Second, 10*time.Millisecond, "reset streams are retired on both sides")
	assert.Zero(t, p.server.Stats().WindowBytes())
}

// TestOverheadCharged: each side's budget holds SessionOverhead from the
// start and StreamOverhead for each stream while it lives; once the
// streams are retired only the session's is left.
func TestOverheadCharged(t *testing.T) {
	p := newPair(t, nil, nil)
	for _, sess := range []*Session{p.client, p.server} {
		assert.Equal(t, uint64(SessionOverhead), sess.Stats().Overhead)
	}
	const n = 3
	var streams []*Stream
	for range n {
		c, s := p.openPair(t)
		streams = append(streams, c, s)
	}
	for _, sess := range []*Session{p.client, p.server} {
		st := sess.Stats()
		assert.Equal(t, uint64(SessionOverhead+n*StreamOverhead), st.Overhead)
		assert.GreaterOrEqual(t, st.WindowBytes(), uint64(n*128<<10), "besides, each stream's floor (the default InitialWindow)")
	}
	for _, s := range streams {
		s.Reset(0)
	}
	require.Eventually(t, func() bool { return len(p.client.Streams()) == 0 && len(p.server.Streams()) == 0 },
		10*time.Second, 10*time.Millisecond, "reset streams are retired on both sides")
	for _, sess := range []*Session{p.client, p.server} {
		st := sess.Stats()
		assert.Equal(t, uint64(SessionOverhead), st.Overhead)
		assert.Equal(t, st.Overhead+st.Compression.CodecMemory, st.BudgetUsed, "the streams gave everything back")
	}
}

// TestCloseDeliversThenRetires: Close after Write still delivers the data,
// the stream is retired on both sides, and its budget returned.
func TestCloseDeliversThenRetires(t *testing.T) {
	p := newPair(t, nil, nil)
	c, s := p.openPair(t)
	msg := []byte("last words")
	_, err := c.Write(msg)
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, msg, got)
	require.NoError(t, c.WaitConsumed(ctxT(t)), "the reader read EOF, so everything was consumed")
	require.NoError(t, s.Close())
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	require.Eventually(t, func() bool { return len(p.client.Streams()) == 0 && len(p.server.Streams()) == 0 },
		10*time.Second, 10*time.Millisecond)
	assert.Zero(t, p.server.Stats().WindowBytes())
	assert.Zero(t, p.client.Stats().WindowBytes())
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrClosed)
}

// TestFailFastAndDrop: the two non-blocking answers to a full window.
func TestFailFastAndDrop(t *testing.T) {
	const window = 64 << 10
	cfg := &Config{InitialWindow: window, MaxWindow: window}
	p := newPair(t, cfg, cfg)

	t.Run("fail fast", func(t *testing.T) {
		c, s := p.openPair(t)
		waitCredit(t, c, window)
		c.SetOverload(FailFast)
		n, err := c.Write(make([]byte, window+100))
		require.ErrorIs(t, err, ErrWouldBlock)
		assert.Equal(t, window, n, "it sends what credit allows")
		_, err = io.ReadFull(s, make([]byte, window))
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := c.Write([]byte("x"))
			return err == nil
		}, 10*time.Second, 5*time.Millisecond, "credit returns after the read")
	})
	t.Run("drop", func(t *testing.T) {
		c, s := p.openPair(t)
		waitCredit(t, c, window)
		c.SetOverload(Drop)
		msg := make([]byte, 40<<10)
		for i := range 3 { // 40 KiB fits, the next two do not: dropped whole
			n, err := c.Write(msg)
			require.NoError(t, err, "write %d", i)
			assert.Equal(t, len(msg), n)
		}
		st := c.Stats()
		assert.Equal(t, uint64(2), st.Drops)
		assert.Equal(t, uint64(80<<10), st.BytesDropped)
		assert.Equal(t, uint64(40<<10), st.BytesSent)
		require.NoError(t, c.CloseWrite())
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		assert.Len(t, got, 40<<10, "only the write that fitted arrives")
	})
}

// waitCredit waits until the peer's SETTINGS have raised c's credit.
func waitCredit(t *testing.T, c *Stream, want uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return c.Stats().SendCredit == want }, 10*time.Second, 5*time.Millisecond)
}

// TestGoAwayShutdown: after GOAWAY the peer cannot open streams, streams
// in progress finish, and Shutdown closes once they have.
func TestGoAwayShutdown(t *testing.T) {
	p := newPair(t, nil, nil)
	c, s := p.openPair(t)

	done := make(chan error, 1)
	go func() { done <- p.server.Shutdown(ctxT(t)) }()
	require.Eventually(t, func() bool {
		_, err := p.client.Open(ctxT(t))
		if err != nil && !errors.Is(err, ErrGoAway) {
			t.Log(err)
		}
		return errors.Is(err, ErrGoAway)
	}, 10*time.Second, 10*time.Millisecond)

	// The stream in progress still works both ways.
	_, err := c.Write([]byte("still here"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, "still here", string(got))
	select {
	case <-done:
		t.Fatal("Shutdown returned while a stream was open")
	default:
	}
	require.NoError(t, s.Close())
	_, err = io.ReadAll(c)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last stream finished")
	}
}

// TestEventsAndStats: the event hook sees the window at work, and the
// counters agree with what moved.
func TestEventsAndStats(t *testing.T) {
	const window = 64 << 10
	var mu sync.Mutex
	kinds := map[EventKind]int{}
	hook := func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		kinds[ev.Kind]++
	}
	cfg := &Config{InitialWindow: window, MaxWindow: window, OnEvent: hook}
	p := newPair(t, cfg, cfg)
	c, s := p.openPair(t)
	const size = 1 << 20
	go func() {
		io.CopyN(c, newPattern(5), size)
		c.CloseWrite()
	}()
	// A slow start makes the writer block at least once.
	time.Sleep(50 * time.Millisecond)
	n, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	require.NoError(t, c.WaitConsumed(ctxT(t)))

	cs, ss := c.Stats(), s.Stats()
	assert.Equal(t, uint64(size), cs.BytesSent)
	assert.Equal(t, uint64(size), ss.BytesReceived)
	assert.Equal(t, uint64(size), ss.BytesConsumed)
	assert.Equal(t, uint64(size), cs.PeerConsumed)
	assert.Zero(t, cs.ConsumerLag)
	assert.Positive(t, cs.Stalls)
	assert.Positive(t, ss.UpdatesSent)
	assert.Equal(t, ss.UpdatesSent, cs.UpdatesReceived)
	assert.Equal(t, cs.BlockedSent, ss.BlockedReceived)

	mu.Lock()
	defer mu.Unlock()
	for _, k := range []EventKind{EventGrant, EventConsumed, EventCredit, EventBlocked, EventUnblocked, EventPeerBlocked} {
		assert.Positive(t, kinds[k], "no %v events", k)
	}
}

// TestDeadlines: an expired deadline fails Read and Write at once with
// os.ErrDeadlineExceeded, and clearing it makes them work again.
func TestDeadlines(t *testing.T) {
	p := newPair(t, nil, nil)
	c, s := p.openPair(t)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err := s.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne interface{ Timeout() bool }
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	require.NoError(t, s.SetReadDeadline(time.Time{}))
	_, err = c.Write([]byte("y"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = io.ReadFull(s, b)
	require.NoError(t, err)
	assert.Equal(t, "y", string(b))
}

// TestWaitConsumedLearnsOfDiscardedData: no data is lost silently. A reader
// that closes with data unread, even after the FIN arrived, makes the
// writer's WaitConsumed fail; one that read everything makes it succeed.
func TestWaitConsumedLearnsOfDiscardedData(t *testing.T) {
	p := newPair(t, nil, nil)
	const size = 64 << 10
	for _, tc := range []struct {
		name   string
		read   int
		wantOK bool
	}{
		{"closed with data unread", 10, false},
		{"closed after reading all but EOF", size, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := p.openPair(t)
			_, err := c.Write(make([]byte, size))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			require.Eventually(t, func() bool { return s.Stats().BytesReceived == size }, 10*time.Second, 5*time.Millisecond)
			_, err = io.ReadFull(s, make([]byte, tc.read))
			require.NoError(t, err)
			require.NoError(t, s.Close())
			err = c.WaitConsumed(ctxT(t))
			if tc.wantOK {
				require.NoError(t, err)
				return
			}
			var se *StreamError
			require.ErrorAs(t, err, &se)
			assert.True(t, se.Remote)
			assert.Equal(t, framing.Cancel, se.Code)
		})
	}
}

// TestShutdownDeliversEverything: the side that shuts down right after its
// stream finished does not cut off the frames still in transit: the peer's
// WaitConsumed succeeds, and both sessions end gracefully once both sides
// have said DONE.
func TestShutdownDeliversEverything(t *testing.T) {
	for i := range 5 {
		p := newPair(t, nil, nil)
		c, s := p.openPair(t)
		const size = 1 << 20
		go func() {
			_, err := c.Write(make([]byte, size))
			if err == nil {
				c.CloseWrite()
			}
		}()
		n, err := io.Copy(io.Discard, s)
		require.NoError(t, err)
		require.Equal(t, int64(size), n)
		require.NoError(t, s.Close())

		shut := make(chan error, 1)
		go func() { shut <- p.server.Shutdown(ctxT(t)) }()
		require.NoError(t, c.WaitConsumed(ctxT(t)), "round %d", i)
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
		require.NoError(t, <-shut, "round %d", i)
		select {
		case <-p.client.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the client session did not end after both sides were done")
		}
		for _, sess := range []*Session{p.client, p.server} {
			var se *SessionError
			require.ErrorAs(t, sess.Err(), &se)
			assert.Equal(t, framing.NoError, se.Code)
		}
	}
}

// withOverhead is a session budget that holds windows bytes of windows
// for streams streams, besides the session's and the streams' fixed
// memory.
func withOverhead(windows uint64, streams int) uint64 {
	return SessionOverhead + windows + uint64(streams)*StreamOverhead
}
