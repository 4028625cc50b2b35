package mux

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// latestWindow is the fixed window of the LatestWins tests: a message of
// more than half of it fits only once.
const latestWindow = 64 << 10

// latestPair is a pair with fixed 64 KiB windows, and a counter of the
// EventReplaced and EventDropped events the client reports.
func latestPair(t *testing.T) (sessionPair, *latestEvents) {
	t.Helper()
	evs := &latestEvents{}
	ccfg := &Config{InitialWindow: latestWindow, MaxWindow: latestWindow, OnEvent: evs.on}
	scfg := &Config{InitialWindow: latestWindow, MaxWindow: latestWindow}
	return newPair(t, ccfg, scfg), evs
}

type latestEvents struct {
	mu                       sync.Mutex
	replaced, dropped        int
	replacedBytes, dropBytes uint64
}

func (e *latestEvents) on(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch ev.Kind {
	case EventReplaced:
		e.replaced++
		e.replacedBytes += ev.Dropped
	case EventDropped:
		e.dropped++
		e.dropBytes += ev.Dropped
	}
}

func (e *latestEvents) counts() (replaced int, replacedBytes uint64, dropped int, dropBytes uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.replaced, e.replacedBytes, e.dropped, e.dropBytes
}

// latestStream opens a stream in LatestWins mode with the whole window of
// credit.
func latestStream(t *testing.T, p sessionPair) (c, s *Stream) {
	t.Helper()
	c, s = p.openPair(t)
	waitCredit(t, c, latestWindow)
	c.SetOverload(LatestWins)
	return c, s
}

// message is message i: size bytes of byte(i).
func message(i, size int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }

// writeNow writes p and fails unless Write returned nil at once.
func writeNow(t *testing.T, c *Stream, p []byte) {
	t.Helper()
	start := time.Now()
	n, err := c.Write(p)
	require.NoError(t, err)
	require.Equal(t, len(p), n)
	require.Less(t, time.Since(start), 2*time.Second, "a LatestWins Write must not wait for credit")
}

// readMessage reads one message of size bytes and says which it is.
func readMessage(t *testing.T, s *Stream, size int) int {
	t.Helper()
	require.NoError(t, s.SetReadDeadline(time.Now().Add(10*time.Second)))
	got := make([]byte, size)
	_, err := io.ReadFull(s, got)
	require.NoError(t, err)
	if !bytes.Equal(message(int(got[0]), size), got) {
		i := bytes.IndexFunc(got, func(r rune) bool { return r != rune(got[0]) })
		require.FailNow(t, "a message arrives whole", "message %d of %d bytes: byte %d is %d", got[0], size, i, got[max(i, 0)])
	}
	return int(got[0])
}

// flusherIdle waits until no LatestWins sender holds the stream's turn.
func flusherIdle(t *testing.T, c *Stream) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.latest.sending && c.latest.pending == nil
	}, 10*time.Second, 5*time.Millisecond, "the flusher ends when nothing is pending")
}

// flushers counts the goroutines running a LatestWins flusher.
func flushers() int {
	buf := make([]byte, 4<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "mux.(*Stream).flushLatest(")
}

// TestLatestWinsKeepsNewest: with the reader stopped, the first message
// fits and is sent; every later one replaces the one pending. Once the
// reader reads, it gets the first and the last, with no further Write,
// and the stats and events count the replaced ones exactly.
func TestLatestWinsKeepsNewest(t *testing.T) {
	cases := []struct {
		name   string
		size   int // message i has size+i bytes
		writes int
	}{
		{"ten writes, eight replaced", 40 << 10, 10},
		{"two writes, none replaced", 40 << 10, 2},
		{"near a whole window", latestWindow - 100, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, evs := latestPair(t)
			c, s := latestStream(t, p)
			var replacedBytes uint64
			for i := 1; i <= tc.writes; i++ {
				writeNow(t, c, message(i, tc.size+i))
				if i > 1 && i < tc.writes {
					replacedBytes += uint64(tc.size + i)
				}
			}
			st := c.Stats()
			assert.Equal(t, uint64(tc.size+1), st.BytesSent, "only the first message went")
			assert.Equal(t, uint64(tc.writes-2), st.Replaced)
			assert.Equal(t, replacedBytes, st.BytesReplaced)
			assert.Zero(t, st.Drops)
			if tc.writes > 1 { // (a goroutine just started may not show yet)
				require.Eventually(t, func() bool { return flushers() == 1 }, 10*time.Second, time.Millisecond, "one flusher per stream")
				assert.Equal(t, 1, flushers(), "one flusher per stream")
			}
			time.Sleep(50 * time.Millisecond) // the pending message stays pending without credit
			assert.Equal(t, uint64(tc.size+1), c.Stats().BytesSent)

			assert.Equal(t, 1, readMessage(t, s, tc.size+1))
			assert.Equal(t, tc.writes, readMessage(t, s, tc.size+tc.writes), "the newest arrives once credit does")
			flusherIdle(t, c)
			require.Eventually(t, func() bool { return flushers() == 0 }, 10*time.Second, 5*time.Millisecond)
			st = c.Stats()
			assert.Equal(t, uint64(2*tc.size+1+tc.writes), st.BytesSent)
			assert.Equal(t, uint64(tc.writes-2), st.Replaced, "replaced messages are counted once")
			replaced, rb, dropped, _ := evs.counts()
			assert.Equal(t, tc.writes-2, replaced)
			assert.Equal(t, replacedBytes, rb)
			assert.Zero(t, dropped)

			require.NoError(t, c.CloseWrite())
			rest, err := io.ReadAll(s)
			require.NoError(t, err)
			assert.Empty(t, rest, "nothing but the first and the newest")
		})
	}
}

// TestLatestWinsSmallMessagesFlow: messages that fit are sent at once, as
// they come; nothing is replaced while the reader keeps up.
func TestLatestWinsSmallMessagesFlow(t *testing.T) {
	p, _ := latestPair(t)
	c, s := latestStream(t, p)
	const n, size = 200, 1000
	done := make(chan int, 1)
	go func() {
		got := 0
		for range n {
			readMessage(t, s, size)
			got++
		}
		done <- got
	}()
	for i := range n {
		writeNow(t, c, message(i, size))
		// Keep within the window, so that each message finds credit.
		require.Eventually(t, func() bool { return c.Stats().SendCredit >= latestWindow/2 }, 10*time.Second, time.Millisecond)
	}
	assert.Equal(t, n, <-done)
	assert.Zero(t, c.Stats().Replaced)
}

// TestLatestWinsEnds: what ends a stream with a message pending: which
// end delivers it and which discard it.
func TestLatestWinsEnds(t *testing.T) {
	const size = 40 << 10
	cases := []struct {
		name    string
		end     func(t *testing.T, c *Stream) // with message 2 pending
		deliver bool                          // message 2 arrives
		dropped bool                          // counted as dropped
		reset   bool                          // the reader sees the reset
	}{
		{"CloseWrite delivers", func(t *testing.T, c *Stream) {
			done := make(chan error, 1)
			go func() { done <- c.CloseWrite() }() // waits for the message to go
			t.Cleanup(func() { require.NoError(t, <-done) })
		}, true, false, false},
		{"Close discards", func(t *testing.T, c *Stream) {
			start := time.Now()
			require.NoError(t, c.Close())
			assert.Less(t, time.Since(start), 2*time.Second, "Close returns at once")
		}, false, true, false},
		{"deadline discards", func(t *testing.T, c *Stream) {
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(50*time.Millisecond)))
			require.Eventually(t, func() bool { return c.Stats().Drops == 1 }, 10*time.Second, 5*time.Millisecond)
			_, err := c.Write([]byte("late"))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.NoError(t, c.SetWriteDeadline(time.Time{}))
			require.NoError(t, c.CloseWrite())
		}, false, true, false},
		{"Reset discards", func(t *testing.T, c *Stream) {
			require.NoError(t, c.Reset(0x42))
			_, err := c.Write([]byte("after"))
			require.ErrorIs(t, err, ErrStreamReset)
		}, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, evs := latestPair(t)
			c, s := latestStream(t, p)
			writeNow(t, c, message(1, size))
			writeNow(t, c, message(2, size+2))
			tc.end(t, c)
			if tc.reset {
				_, err := io.ReadAll(s)
				require.ErrorIs(t, err, ErrStreamReset)
			} else {
				assert.Equal(t, 1, readMessage(t, s, size))
				if tc.deliver {
					assert.Equal(t, 2, readMessage(t, s, size+2))
				}
				rest, err := io.ReadAll(s)
				require.NoError(t, err)
				assert.Empty(t, rest)
			}
			flusherIdle(t, c)
			st := c.Stats()
			want := uint64(size)
			if tc.deliver {
				want += size + 2
			}
			assert.Equal(t, want, st.BytesSent)
			assert.Zero(t, st.Replaced)
			_, _, dropped, dropBytes := evs.counts()
			if tc.dropped {
				assert.Equal(t, uint64(1), st.Drops)
				assert.Equal(t, uint64(size+2), st.BytesDropped)
				assert.Equal(t, 1, dropped)
				assert.Equal(t, uint64(size+2), dropBytes)
			} else {
				assert.Zero(t, st.Drops)
				assert.Zero(t, dropped)
			}
		})
	}
}

// TestLatestWinsLargeMessage: a message larger than the peer's whole
// window is sent in frames as credit allows, and arrives whole; Write
// does not wait for it.
func TestLatestWinsLargeMessage(t *testing.T) {
	cases := []struct {
		name  string
		first int // a message written before, 0 for none
		size  int
	}{
		{"alone", 0, 3*latestWindow + 7},
		{"behind a message", 1000, 2 * latestWindow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := latestPair(t)
			c, s := latestStream(t, p)
			if tc.first > 0 {
				writeNow(t, c, message(1, tc.first))
			}
			writeNow(t, c, message(9, tc.size))
			if tc.first > 0 {
				assert.Equal(t, 1, readMessage(t, s, tc.first))
			}
			assert.Equal(t, 9, readMessage(t, s, tc.size))
			flusherIdle(t, c)
			require.NoError(t, c.CloseWrite())
			rest, err := io.ReadAll(s)
			require.NoError(t, err)
			assert.Empty(t, rest)
			assert.Zero(t, c.Stats().Replaced)
		})
	}
}

// TestLatestWinsConcurrentWriters: writers on one stream at once, under
// -race, with a slow reader. Every message arrives whole, each writer's
// in the order it wrote them, every message is either received or counted
// replaced, and a last message written after them all arrives last.
func TestLatestWinsConcurrentWriters(t *testing.T) {
	const writers, each, size = 8, 100, 3000
	p, _ := latestPair(t)
	c, s := latestStream(t, p)
	type rec struct{ writer, seq int }
	msgOf := func(w, seq int) []byte {
		m := bytes.Repeat([]byte{byte(w*31 + seq)}, size)
		m[0] = byte(w)
		binary.BigEndian.PutUint32(m[1:5], uint32(seq))
		return m
	}
	var got []rec
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				if err == io.EOF {
					err = nil
				}
				readDone <- err
				return
			}
			w, seq := int(buf[0]), int(binary.BigEndian.Uint32(buf[1:5]))
			if !bytes.Equal(buf, msgOf(w, seq)) {
				readDone <- fmt.Errorf("message %d/%d arrived mixed", w, seq)
				return
			}
			got = append(got, rec{w, seq})
			time.Sleep(200 * time.Microsecond) // a slow reader
		}
	}()
	var wg sync.WaitGroup
	var errs atomic.Int32
	for w := range writers {
		wg.Go(func() {
			for seq := range each {
				if _, err := c.Write(msgOf(w, seq)); err != nil {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load())
	writeNow(t, c, msgOf(writers, 0)) // the last of all
	require.NoError(t, c.CloseWrite())
	require.NoError(t, <-readDone)
	st := c.Stats()
	total := writers*each + 1
	assert.Equal(t, uint64(total), uint64(len(got))+st.Replaced, "each message is received or replaced")
	assert.Equal(t, uint64(len(got)*size), st.BytesSent)
	assert.Equal(t, uint64((total-len(got))*size), st.BytesReplaced)
	assert.Zero(t, st.Drops)
	require.NotEmpty(t, got)
	assert.Equal(t, rec{writers, 0}, got[len(got)-1], "the newest arrives last")
	last := map[int]int{}
	for _, r := range got {
		if prev, ok := last[r.writer]; ok {
			require.Greater(t, r.seq, prev, "writer %d's messages in order", r.writer)
		}
		last[r.writer] = r.seq
	}
	t.Logf("%d messages received, %d replaced", len(got), st.Replaced)
}

// TestLatestWinsSessionCloseEndsFlusher: a flusher waiting for credit ends
// when the session closes; no goroutine is left.
func TestLatestWinsSessionCloseEndsFlusher(t *testing.T) {
	p, _ := latestPair(t)
	c, _ := latestStream(t, p)
	writeNow(t, c, message(1, 40<<10))
	before := runtime.NumGoroutine() // the session's, without a flusher
	writeNow(t, c, message(2, 40<<10))
	c.mu.Lock()
	waiting := c.latest.sending
	c.mu.Unlock()
	require.True(t, waiting, "a flusher waits with message 2")
	require.Eventually(t, func() bool { return flushers() == 1 }, 10*time.Second, time.Millisecond)

	done := make(chan struct{})
	go func() {
		p.client.Close() // returns once the session's goroutines, the flusher's too, have ended
		p.server.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("session Close did not return: the flusher is stuck")
	}
	assert.Zero(t, flushers())
	c.mu.Lock()
	assert.False(t, c.latest.sending)
	assert.Nil(t, c.latest.pending, "the pending message is abandoned with the session")
	c.mu.Unlock()
	_, err := c.Write([]byte("x"))
	require.ErrorIs(t, err, ErrSessionClosed)
	// The sessions' goroutines end too (the listener's stay until the
	// test's cleanup).
	require.Eventually(t, func() bool { return runtime.NumGoroutine() < before }, 10*time.Second, 20*time.Millisecond,
		"goroutines: %d, before: %d", runtime.NumGoroutine(), before)
}

// TestLatestWinsModeSwitch: a Block Write after SetOverload waits for the
// pending message, which goes first.
func TestLatestWinsModeSwitch(t *testing.T) {
	const size = 40 << 10
	p, _ := latestPair(t)
	c, s := latestStream(t, p)
	writeNow(t, c, message(1, size))
	writeNow(t, c, message(2, size))
	c.SetOverload(Block)
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(message(3, size))
		done <- err
	}()
	for i := 1; i <= 3; i++ {
		assert.Equal(t, i, readMessage(t, s, size))
	}
	require.NoError(t, <-done)
}

// TestLatestWinsEmptyWrite: an empty Write is no message: it returns at
// once, even while a message waits for credit.
func TestLatestWinsEmptyWrite(t *testing.T) {
	p, _ := latestPair(t)
	c, s := latestStream(t, p)
	writeNow(t, c, message(1, 40<<10))
	writeNow(t, c, message(2, 40<<10))
	n, err := c.Write(nil)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Zero(t, c.Stats().Replaced)
	assert.Equal(t, 1, readMessage(t, s, 40<<10))
	assert.Equal(t, 2, readMessage(t, s, 40<<10))
}
