package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
)

// The direct path (stream_direct.go): a waiting Read lends its buffer to
// the lane reader, which reads the payload straight into it. These tests
// check that it changes nothing a reader can see (bytes, order, errors,
// deadlines) whichever way a Read ends while the lane reader holds its
// buffer, and that a bulk reader does take it.

// directBytes is what the stream's lane reader read straight into lent
// buffers, ever.
func directBytes(s *Stream) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dr := s.direct.Load(); dr != nil {
		return dr.delivered
	}
	return 0
}

// directState is the state of the buffer a Read lent the stream's lane
// reader, and how many claimed reads a Read cut short, ever.
func directState(s *Stream) (lent, claimed bool, cuts uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dr := s.direct.Load(); dr != nil {
		return dr.lent, dr.claimed, dr.cuts
	}
	return false, false, 0
}

// waitDirect waits until the Read's buffer is lent (and claimed, if
// claimed), on a lane that takes the direct path; on another it returns
// at once.
func waitDirect(t *testing.T, s *Stream, claimed bool) {
	t.Helper()
	if !canCutShort(s) {
		return
	}
	waitFor(t, "the Read's buffer to be lent or claimed", func() bool {
		l, c, _ := directState(s)
		return l && c == claimed
	})
}

// canCutShort says whether the stream's lane takes the direct path.
func canCutShort(s *Stream) bool {
	_, ok := s.lane.(transport.ReadDeadliner)
	return ok
}

// seqBytes is n bytes that show where each of them belongs.
func seqBytes(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251 + seed)
	}
	return b
}

// TestDirectReadsCarryBulk: whatever the size of the reader's buffer, one
// reader or two at once, every byte arrives once and in order, and a
// reader with buffers as large as the frames gets most of them straight
// from the lane.
func TestDirectReadsCarryBulk(t *testing.T) {
	const total = 8 << 20
	for _, tc := range []struct {
		name    string
		readBuf int
		readers int
	}{
		{"frame-sized reads", 64 << 10, 1},
		{"larger than frames", 256 << 10, 1},
		{"smaller than frames", 5000, 1},
		{"one-byte reads", 1, 1}, // the ring path, mostly: a tiny buffer holds little of a frame
		{"two readers", 64 << 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := total
			if tc.readBuf == 1 {
				n = 256 << 10
			}
			p := newPair(t, nil, nil)
			c, s := p.openPair(t)
			want := seqBytes(n, 3)
			go func() {
				_, _ = c.Write(want)
				_ = c.CloseWrite()
			}()
			require.NoError(t, s.SetReadDeadline(time.Now().Add(rawWait)))
			var mu sync.Mutex
			pieces := map[int][]byte{} // by the order each reader saw them in; one reader: in order
			var order []int
			var wg sync.WaitGroup
			var seq int
			errs := make(chan error, tc.readers)
			for range tc.readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, tc.readBuf)
					for {
						k, err := s.Read(buf)
						if k > 0 {
							mu.Lock()
							pieces[seq] = bytes.Clone(buf[:k])
							order = append(order, seq)
							seq++
							mu.Unlock()
						}
						if err != nil {
							if err != io.EOF {
								errs <- err
							}
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			var got []byte
			for _, i := range order {
				got = append(got, pieces[i]...)
			}
			if tc.readers == 1 {
				require.True(t, bytes.Equal(want, got), "bytes out of order or lost")
			} else {
				// Two readers take turns in an order nobody can see, but
				// every byte is read exactly once.
				require.Len(t, got, len(want))
				require.Equal(t, byteCounts(want), byteCounts(got))
			}
			direct := directBytes(s)
			t.Logf("%d of %d bytes read straight into the reader's buffer", direct, n)
			if canCutShort(s) && tc.readBuf >= 64<<10 {
				require.Greater(t, direct, uint64(0), "a bulk reader never took the direct path")
			}
			st := s.Stats()
			require.Equal(t, uint64(n), st.BytesConsumed)
			require.Zero(t, st.Buffered)
			require.NoError(t, p.server.Err())
		})
	}
}

// byteCounts counts each byte value in b.
func byteCounts(b []byte) [256]int {
	var c [256]int
	for _, x := range b {
		c[x]++
	}
	return c
}

// TestDirectReadEndsMidFrame: the peer sends a DATA frame's header and half
// its payload, then nothing, while a Read waits with its buffer lent. Each
// way that Read may end (its deadline, CloseRead, Close, Reset from
// another goroutine, the session's Close) ends it promptly, with what a
// Read ends with on the ring path; and when the stream lives on, the rest
// of the frame and the next frames arrive whole and in order, on a lane
// whose read deadline was cleared.
func TestDirectReadEndsMidFrame(t *testing.T) {
	const frame = 60 << 10
	for _, tc := range []struct {
		name    string
		end     func(s *Stream, sess *Session)
		wantErr error
		lives   bool // the stream reads on afterwards
	}{
		{"deadline", func(s *Stream, _ *Session) { s.SetReadDeadline(time.Now()) }, os.ErrDeadlineExceeded, true},
		{"CloseRead", func(s *Stream, _ *Session) { s.CloseRead() }, ErrClosed, false},
		{"Close", func(s *Stream, _ *Session) { s.Close() }, ErrClosed, false},
		{"Reset", func(s *Stream, _ *Session) { s.Reset(framing.Cancel) }, ErrClosed, false},
		{"session Close", func(_ *Stream, sess *Session) { sess.Close() }, ErrSessionClosed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
			p := dialRaw(t, srv)
			l := p.openStream()
			s := acceptStream(t, p.sess)
			payload := seqBytes(frame, 1)
			whole := rfData(l.ID, payload, false)
			head := len(whole) - frame/2 // the header and the first half

			type result struct {
				n   int
				err error
			}
			buf := make([]byte, 64<<10)
			res := make(chan result, 1)
			go func() {
				n, err := s.Read(buf)
				res <- result{n, err}
			}()
			waitDirect(t, s, false)
			require.NoError(t, l.write(whole[:head]))
			waitFor(t, "half the payload to begin", func() bool { return s.Stats().BytesReceived == frame })
			waitDirect(t, s, true) // the lane reader reads the payload into buf

			tc.end(s, p.sess)
			var r result
			select {
			case r = <-res:
			case <-time.After(rawWait):
				t.Fatal("the Read did not end")
			}
			got := buf[:r.n]
			// What the lane reader had read of the payload when the Read
			// cut it short (some or all of the half sent) is the Read's
			// if it reads on; else it is dropped with the rest of what
			// nobody will read. When the session ends, the lane's read
			// may fail before the Read cuts it short: either way is right.
			require.LessOrEqual(t, r.n, frame/2)
			require.True(t, bytes.Equal(payload[:r.n], got), "a cut-short Read returned the wrong bytes")
			if !tc.lives && tc.wantErr != ErrSessionClosed {
				require.Zero(t, r.n, "bytes returned from a stream closed for reading")
			}
			if canCutShort(s) {
				_, claimed, cuts := directState(s)
				require.False(t, claimed, "the lane reader still holds the buffer")
				if tc.wantErr != ErrSessionClosed {
					require.Equal(t, uint64(1), cuts, "the Read cut the lane's read short")
				}
			}
			if r.err == nil {
				_, r.err = s.Read(buf) // it returned what it had; the next Read ends as asked
			}
			require.ErrorIs(t, r.err, tc.wantErr)
			if !tc.lives {
				return
			}

			// The stream reads on: the rest of this frame, then two more
			// frames, which the lane reader waits for once it has read the
			// rest: had the lane's read deadline been left set, that wait
			// would fail the session.
			require.NoError(t, s.SetReadDeadline(time.Now().Add(rawWait)))
			require.NoError(t, l.write(whole[head:]))
			rest := make([]byte, frame-r.n)
			_, err := io.ReadFull(s, rest)
			require.NoError(t, err)
			require.True(t, bytes.Equal(payload[r.n:], rest), "bytes lost or out of order after the Read ended")
			next := seqBytes(20<<10, 2) // all of it within the initial window
			require.NoError(t, l.write(rfData(l.ID, next, false), rfData(l.ID, next, true)))
			more, err := io.ReadAll(s)
			require.NoError(t, err)
			require.True(t, bytes.Equal(append(append([]byte(nil), next...), next...), more), "the frames after it")
			require.NoError(t, p.sess.Err())
		})
	}
}

// TestDirectReadLaneFails: the lane ends inside a payload that is being
// read into a lent buffer. The Read gets none of the frame's bytes and
// the error the ring path gives: a QUIC reset of the lane is the stream's
// reset, a FIN inside a frame is a protocol error of the session.
func TestDirectReadLaneFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(l *rawLane)
		want func(t *testing.T, err error, p *rawPeer)
	}{
		{"lane reset", func(l *rawLane) { l.s.cancelWrite(framing.Cancel) }, func(t *testing.T, err error, _ *rawPeer) {
			var se *StreamError
			require.ErrorAs(t, err, &se)
			require.True(t, se.Remote)
		}},
		{"FIN inside the frame", func(l *rawLane) { l.fin() }, func(t *testing.T, err error, p *rawPeer) {
			require.Error(t, err)
			p.expectClose(framing.ProtocolError)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
			p := dialRaw(t, srv)
			l := p.openStream()
			s := acceptStream(t, p.sess)
			whole := rfData(l.ID, seqBytes(40<<10, 5), false)
			res := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				var err error
				for err == nil {
					var n int
					n, err = s.Read(buf)
					if n > 0 {
						err = errors.New("a Read returned bytes of a frame that never ended")
					}
				}
				res <- err
			}()
			require.NoError(t, l.write(whole[:len(whole)/2]))
			waitFor(t, "the frame to begin", func() bool { return s.Stats().BytesReceived > 0 })
			tc.end(l)
			select {
			case err := <-res:
				tc.want(t, err, p)
			case <-time.After(rawWait):
				t.Fatal("the Read did not end")
			}
		})
	}
}

// TestDirectReadDeadlineAfterLend: a deadline set while the Read already
// waits with its buffer lent still ends it, whether or not the lane reader
// has claimed the buffer.
func TestDirectReadDeadlineAfterLend(t *testing.T) {
	for _, claimed := range []bool{false, true} {
		name := "unclaimed"
		if claimed {
			name = "claimed"
		}
		t.Run(name, func(t *testing.T) {
			srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
			p := dialRaw(t, srv)
			l := p.openStream()
			s := acceptStream(t, p.sess)
			res := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 64<<10))
				res <- err
			}()
			waitDirect(t, s, false)
			if claimed {
				whole := rfData(l.ID, seqBytes(40<<10, 9), false)
				require.NoError(t, l.write(whole[:100]))
				waitFor(t, "the frame to begin", func() bool { return s.Stats().BytesReceived > 0 })
				waitDirect(t, s, true)
			}
			ctx, cancel := context.WithTimeout(context.Background(), rawWait)
			defer cancel()
			require.NoError(t, s.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
			select {
			case err := <-res:
				if err == nil { // it returned the bytes read so far; the next Read times out
					_, err = s.Read(make([]byte, 10))
				}
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			case <-ctx.Done():
				t.Fatal("the deadline did not end the Read")
			}
			require.NoError(t, p.sess.Err())
		})
	}
}
