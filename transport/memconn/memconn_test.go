package memconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
)

const testTimeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// checkNoLeak fails the test if, a bounded time after it ends, more
// goroutines run than when it started.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// openAccept opens a lane on a, sends msg on it so that b sees it, and
// accepts it on b.
func openAccept(t *testing.T, a, b transport.Conn, msg string) (transport.Lane, transport.Lane) {
	t.Helper()
	ctx := testCtx(t)
	la, err := a.OpenLane(ctx)
	require.NoError(t, err)
	_, err = la.Write([]byte(msg))
	require.NoError(t, err)
	lb, err := b.AcceptLane(ctx)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(lb, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
	return la, lb
}

func TestConnBasics(t *testing.T) {
	checkNoLeak(t)
	c, s := PairWith(Options{RTT: 7 * time.Millisecond})
	defer c.CloseWithError(0, "")
	require.True(t, c.IsClient())
	require.False(t, s.IsClient())
	require.Equal(t, 7*time.Millisecond, c.RTT())
	require.Equal(t, 7*time.Millisecond, s.RTT())
	require.Equal(t, "memconn", c.LocalAddr().Network())
	require.Equal(t, c.LocalAddr(), s.RemoteAddr())
	require.Equal(t, s.LocalAddr(), c.RemoteAddr())
	require.NotEqual(t, c.LocalAddr(), s.LocalAddr())
	c2, s2 := Pair()
	defer c2.CloseWithError(0, "")
	require.Zero(t, c2.RTT())
	require.NotEqual(t, c.LocalAddr(), c2.LocalAddr())
	_ = s2
}

func TestLaneIO(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "hello")

	// Both directions, independently.
	_, err := ls.Write([]byte("world"))
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, err := lc.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "world", string(buf[:n]))

	// A zero-length read or write neither blocks nor fails.
	n, err = lc.Read(nil)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = lc.Write(nil)
	require.NoError(t, err)
	require.Zero(t, n)

	// Data written in pieces is read in order.
	for i := range 100 {
		_, err := lc.Write([]byte{byte(i)})
		require.NoError(t, err)
	}
	got := make([]byte, 100)
	_, err = io.ReadFull(ls, got)
	require.NoError(t, err)
	for i := range got {
		require.Equal(t, byte(i), got[i])
	}
}

func TestEOFAfterCloseWrite(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "x")
	_, err := lc.Write([]byte("buffered data"))
	require.NoError(t, err)
	require.NoError(t, lc.CloseWrite())
	require.NoError(t, lc.CloseWrite(), "a second CloseWrite is harmless, as in quic-go")
	_, err = lc.Write([]byte("late"))
	require.Error(t, err)

	got, err := io.ReadAll(ls)
	require.NoError(t, err)
	require.Equal(t, "buffered data", string(got))
	n, err := ls.Read(make([]byte, 4))
	require.Equal(t, io.EOF, err)
	require.Zero(t, n)

	// The other direction is still open.
	_, err = ls.Write([]byte("reply"))
	require.NoError(t, err)
	require.NoError(t, ls.CloseWrite())
	got, err = io.ReadAll(lc)
	require.NoError(t, err)
	require.Equal(t, "reply", string(got))

	// A lane ended by an empty CloseWrite is visible to the peer too.
	l2, err := c.OpenLane(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, l2.CloseWrite())
	a2, err := s.AcceptLane(testCtx(t))
	require.NoError(t, err)
	n, err = a2.Read(make([]byte, 4))
	require.Equal(t, io.EOF, err)
	require.Zero(t, n)
}

func requireLaneErr(t *testing.T, err error, code uint64, remote bool) {
	t.Helper()
	var le *transport.LaneError
	require.True(t, errors.As(err, &le), "want a *transport.LaneError, got %T %v", err, err)
	require.Equal(t, code, le.Code)
	require.Equal(t, remote, le.Remote)
}

func requireAppErr(t *testing.T, err error, code uint64, remote bool) {
	t.Helper()
	var ae *transport.ApplicationError
	require.True(t, errors.As(err, &ae), "want a *transport.ApplicationError, got %T %v", err, err)
	require.Equal(t, code, ae.Code)
	require.Equal(t, remote, ae.Remote)
}

func TestCancelWrite(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "x")
	_, err := lc.Write([]byte("never read"))
	require.NoError(t, err)

	// A blocked Read is woken by the reset, and unread data is discarded.
	errc := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(ls)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	lc.CancelWrite(7)
	requireLaneErr(t, <-errc, 7, true)
	_, err = ls.Read(make([]byte, 1))
	requireLaneErr(t, err, 7, true)

	_, err = lc.Write([]byte("more"))
	requireLaneErr(t, err, 7, false)
	require.Error(t, lc.CloseWrite(), "CloseWrite after CancelWrite fails, as in quic-go")
	lc.CancelWrite(8) // no effect
	_, err = ls.Read(make([]byte, 1))
	requireLaneErr(t, err, 7, true)

	// The other direction is unaffected.
	_, err = ls.Write([]byte("ok"))
	require.NoError(t, err)
	got := make([]byte, 2)
	_, err = io.ReadFull(lc, got)
	require.NoError(t, err)
}

func TestCancelRead(t *testing.T) {
	checkNoLeak(t)
	c, s := PairWith(Options{LaneBuffer: 16})
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "x")

	// A Write blocked on a full buffer is woken by the peer's CancelRead.
	errc := make(chan error, 1)
	go func() {
		_, err := lc.Write(make([]byte, 1000))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	ls.CancelRead(9)
	requireLaneErr(t, <-errc, 9, true)
	_, err := lc.Write([]byte("more"))
	requireLaneErr(t, err, 9, true)
	_, err = ls.Read(make([]byte, 1))
	requireLaneErr(t, err, 9, false)
	ls.CancelRead(10) // no effect
	_, err = ls.Read(make([]byte, 1))
	requireLaneErr(t, err, 9, false)

	// CancelRead after the peer's reset keeps the peer's code, as quic-go.
	ls.CancelWrite(3)
	_, err = lc.Read(make([]byte, 1))
	requireLaneErr(t, err, 3, true)
	lc.CancelRead(4)
	_, err = lc.Read(make([]byte, 1))
	requireLaneErr(t, err, 3, true)

	// CancelRead after EOF changes nothing.
	lc2, ls2 := openAccept(t, c, s, "y")
	require.NoError(t, lc2.CloseWrite())
	_, err = io.ReadAll(ls2)
	require.NoError(t, err)
	ls2.CancelRead(5)
	_, err = ls2.Read(make([]byte, 1))
	require.Equal(t, io.EOF, err)
}

func TestControlLane(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	ctx := testCtx(t)
	ctl, err := c.OpenControl(ctx)
	require.NoError(t, err)

	// Not visible until something is sent.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = s.AcceptControl(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	_, err = ctl.Write([]byte("settings"))
	require.NoError(t, err)
	r, err := s.AcceptControl(ctx)
	require.NoError(t, err)
	got := make([]byte, 8)
	_, err = io.ReadFull(r, got)
	require.NoError(t, err)
	require.Equal(t, "settings", string(got))

	// Only one control lane each way: further calls wait.
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = c.OpenControl(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = s.AcceptControl(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	cancel()

	ctl.CancelWrite(1)
	_, err = r.Read(got)
	requireLaneErr(t, err, 1, true)

	// The other way.
	sctl, err := s.OpenControl(ctx)
	require.NoError(t, err)
	_, err = sctl.Write([]byte("s"))
	require.NoError(t, err)
	require.NoError(t, sctl.CloseWrite())
	cr, err := c.AcceptControl(ctx)
	require.NoError(t, err)
	all, err := io.ReadAll(cr)
	require.NoError(t, err)
	require.Equal(t, "s", string(all))
}

func TestAcceptOrder(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	ctx := testCtx(t)
	var lanes []transport.Lane
	for range 3 {
		l, err := c.OpenLane(ctx)
		require.NoError(t, err)
		lanes = append(lanes, l)
	}
	// Nothing sent yet: nothing to accept.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := s.AcceptLane(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Sending on the last lane makes all three acceptable, in order.
	for i := 2; i >= 0; i-- {
		_, err := lanes[i].Write([]byte{byte(i)})
		require.NoError(t, err)
	}
	for i := range 3 {
		l, err := s.AcceptLane(ctx)
		require.NoError(t, err)
		b := make([]byte, 1)
		_, err = io.ReadFull(l, b)
		require.NoError(t, err)
		require.Equal(t, byte(i), b[0])
	}

	// A lane opened by CancelRead (QUIC's STOP_SENDING) is visible too.
	l, err := s.OpenLane(ctx)
	require.NoError(t, err)
	l.CancelRead(2)
	a, err := c.AcceptLane(ctx)
	require.NoError(t, err)
	_, err = a.Write([]byte("x"))
	requireLaneErr(t, err, 2, true)
}

func TestMaxLanes(t *testing.T) {
	checkNoLeak(t)
	c, s := PairWith(Options{MaxLanes: 2})
	defer c.CloseWithError(0, "")
	ctx := testCtx(t)
	c1, s1 := openAccept(t, c, s, "1")
	c2, s2 := openAccept(t, c, s, "2")

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := c.OpenLane(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// The limit is per side: the server may still open its own.
	openAccept(t, s, c, "from server")

	// A lane is finished once the acceptor has ended its sending direction
	// and read to the end of its receiving direction; the opener's part
	// does not matter.
	errc := make(chan error, 1)
	go func() {
		l, err := c.OpenLane(ctx)
		if err == nil {
			_, err = l.Write([]byte("3"))
		}
		errc <- err
	}()
	require.NoError(t, c1.CloseWrite())
	_, err = io.ReadAll(s1)
	require.NoError(t, err)
	select {
	case err := <-errc:
		t.Fatalf("OpenLane returned (%v) before the acceptor finished the lane", err)
	case <-time.After(20 * time.Millisecond):
	}
	require.NoError(t, s1.CloseWrite())
	require.NoError(t, <-errc)
	s3, err := s.AcceptLane(ctx)
	require.NoError(t, err)

	// Cancelling both directions also finishes a lane.
	go func() {
		_, err := c.OpenLane(ctx)
		errc <- err
	}()
	s2.CancelRead(1)
	s2.CancelWrite(1)
	require.NoError(t, <-errc)
	_, err = c2.Read(make([]byte, 1))
	requireLaneErr(t, err, 1, true)
	_ = s3
}

// TestBoundedBuffer checks that a writer blocks once the lane holds
// LaneBuffer bytes, and resumes as the reader reads.
func TestBoundedBuffer(t *testing.T) {
	checkNoLeak(t)
	const size = 4096
	c, s := PairWith(Options{LaneBuffer: size})
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "x")

	msg := make([]byte, 3*size+100)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		_, err := lc.Write(msg)
		done <- err
	}()
	out := lc.(*laneEnd).out
	buffered := func() int {
		out.p.mu.Lock()
		defer out.p.mu.Unlock()
		return out.buf.Len()
	}
	require.Eventually(t, func() bool { return buffered() == size }, testTimeout, time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Write returned (%v) with the buffer full", err)
	case <-time.After(20 * time.Millisecond):
	}
	require.Equal(t, size, buffered(), "the buffer never exceeds LaneBuffer")

	got := make([]byte, len(msg))
	_, err := io.ReadFull(ls, got)
	require.NoError(t, err)
	require.NoError(t, <-done)
	require.Equal(t, msg, got)
}

// TestCloseWakesEverything blocks every kind of call on both sides, closes
// the connection, and checks each returns the right error at once.
func TestCloseWakesEverything(t *testing.T) {
	checkNoLeak(t)
	for _, closer := range []string{"client", "server"} {
		t.Run(closer, func(t *testing.T) {
			c, s := PairWith(Options{LaneBuffer: 8, MaxLanes: 1})
			ctx := testCtx(t)
			lc, ls := openAccept(t, c, s, "x")
			_, err := c.OpenControl(ctx)
			require.NoError(t, err)
			_, err = s.OpenControl(ctx)
			require.NoError(t, err)

			type result struct {
				side string
				err  error
			}
			var wg sync.WaitGroup
			results := make(chan result, 32)
			block := func(side string, f func() error) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- result{side, f()}
				}()
			}
			for _, e := range []struct {
				side string
				conn transport.Conn
				lane transport.Lane
			}{{"client", c, lc}, {"server", s, ls}} {
				block(e.side, func() error { _, err := e.lane.Read(make([]byte, 1)); return err })
				block(e.side, func() error { _, err := e.lane.Write(make([]byte, 100)); return err })
				block(e.side, func() error { _, err := e.conn.AcceptLane(ctx); return err })
				block(e.side, func() error { _, err := e.conn.AcceptControl(ctx); return err })
				block(e.side, func() error { _, err := e.conn.OpenControl(ctx); return err })
			}
			block("client", func() error { _, err := c.OpenLane(ctx); return err })
			time.Sleep(20 * time.Millisecond)

			// Each Read may have returned a byte of the peer's blocked
			// Write before the close; only errors are checked below.
			closing, other := c, s
			if closer == "server" {
				closing, other = s, c
			}
			require.NoError(t, closing.CloseWithError(42, "bye"))
			require.NoError(t, other.CloseWithError(43, "ignored"))
			select {
			case <-c.Done():
			default:
				t.Fatal("client Done not closed")
			}
			select {
			case <-s.Done():
			default:
				t.Fatal("server Done not closed")
			}
			waited := make(chan struct{})
			go func() { wg.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-time.After(testTimeout):
				t.Fatal("blocked calls did not return after CloseWithError")
			}
			close(results)
			for r := range results {
				if r.err == nil {
					continue // a Read that got the peer's bytes before the close
				}
				requireAppErr(t, r.err, 42, r.side != closer)
			}
			// Later calls fail the same way.
			_, err = c.OpenLane(ctx)
			requireAppErr(t, err, 42, closer != "client")
			_, err = s.AcceptLane(ctx)
			requireAppErr(t, err, 42, closer != "server")
			_, err = lc.Write([]byte("x"))
			requireAppErr(t, err, 42, closer != "client")
			_, err = ls.Read(make([]byte, 1))
			requireAppErr(t, err, 42, closer != "server")
			require.NoError(t, lc.CloseWrite())
			lc.CancelWrite(1)
			lc.CancelRead(1)
		})
	}
}

// TestContextCancel checks that ctx ends waits without closing anything.
func TestContextCancel(t *testing.T) {
	checkNoLeak(t)
	c, s := Pair()
	defer c.CloseWithError(0, "")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.AcceptLane(ctx)
		errc <- err
	}()
	time.Sleep(5 * time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	openAccept(t, c, s, "still works")
}

// muxPair starts a mux session on each end of a memconn pair.
func muxPair(t *testing.T, opts Options, cfg *mux.Config) (client, server *mux.Session) {
	t.Helper()
	cc, sc := PairWith(opts)
	client, err := mux.New(cc, cfg)
	require.NoError(t, err)
	server, err = mux.New(sc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

func TestMuxEcho(t *testing.T) {
	checkNoLeak(t)
	client, server := muxPair(t, Options{}, nil)
	ctx := testCtx(t)
	go func() {
		s, err := server.Accept(ctx)
		if err != nil {
			return
		}
		io.Copy(s, s)
		s.CloseWrite()
	}()
	st, err := client.Open(ctx)
	require.NoError(t, err)

	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i*31 + i>>8)
	}
	go func() {
		st.Write(msg)
		st.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, st)
	require.NoError(t, err)
	require.EqualValues(t, len(msg), n)
	want := sha256.Sum256(msg)
	require.Equal(t, want[:], h.Sum(nil))
	require.NoError(t, st.Close())
}

// TestMuxLaneReuse runs many short streams through a small lane limit:
// each finished stream must give its lane back, in both directions.
func TestMuxLaneReuse(t *testing.T) {
	checkNoLeak(t)
	const maxLanes, streams = 3, 40
	client, server := muxPair(t, Options{MaxLanes: maxLanes, LaneBuffer: 64 << 10}, &mux.Config{MaxStreams: maxLanes, KeepAliveInterval: -1})
	ctx := testCtx(t)
	go func() {
		for {
			s, err := server.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				io.Copy(s, s)
				s.Close()
			}()
		}
	}()
	for i := range streams {
		st, err := client.Open(ctx)
		require.NoError(t, err, "stream %d", i)
		msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
		_, err = st.Write(msg)
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite())
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		require.Equal(t, msg, got)
		require.NoError(t, st.Close())
	}
}

// TestMuxNetConn runs the net.Conn conformance suite against a pair of mux
// streams over memconn.
func TestMuxNetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		cc, sc := Pair()
		client, err := mux.New(cc, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		server, err := mux.New(sc, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		a, err := client.Open(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := server.Accept(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		stop = func() {
			a.Close()
			b.Close()
			client.Close()
			server.Close()
		}
		return a, b, stop, nil
	})
}

func TestWriteDeadline(t *testing.T) {
	checkNoLeak(t)
	c, s := PairWith(Options{LaneBuffer: 16})
	defer c.CloseWithError(0, "")
	lc, ls := openAccept(t, c, s, "x")

	// A Write blocked on a full buffer fails at the deadline, having
	// written what fitted.
	require.NoError(t, lc.SetWriteDeadline(time.Now().Add(20*time.Millisecond)))
	n, err := lc.Write(make([]byte, 100))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, 16, n)

	// Past the deadline, Writes fail at once.
	n, err = lc.Write([]byte("y"))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Zero(t, n)

	// Moving the deadline wakes a blocked Write; clearing it lets Writes
	// through again.
	require.NoError(t, lc.SetWriteDeadline(time.Time{}))
	errc := make(chan error, 1)
	go func() {
		_, err := lc.Write([]byte("z"))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, lc.SetWriteDeadline(time.Now()))
	require.ErrorIs(t, <-errc, os.ErrDeadlineExceeded)
	require.NoError(t, lc.SetWriteDeadline(time.Time{}))
	got := make([]byte, 16)
	_, err = io.ReadFull(ls, got)
	require.NoError(t, err)
	_, err = lc.Write([]byte("z"))
	require.NoError(t, err)

	// The control lane has a deadline too.
	ctl, err := c.OpenControl(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, ctl.SetWriteDeadline(time.Now().Add(10*time.Millisecond)))
	_, err = ctl.Write(make([]byte, 100))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}
