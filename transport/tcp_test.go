package transport

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The TCP binding's conformance with the contract of package memconn
// (whose tests these mirror): lanes, control lanes, lane ends and aborts,
// the lane limit, and closing.

const tcpTestTimeout = 10 * time.Second

func tcpCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), tcpTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// tcpCheckNoLeak fails the test if, a bounded time after it ends, more
// goroutines run than when it started.
func tcpCheckNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2*tcpLinger + 3*time.Second)
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

// tcpListen starts a TCP listener with a fresh self-signed certificate
// and returns it with a client TLS configuration pinned to it.
func tcpListen(t testing.TB, cfg TCPConfig) (*TCPListener, tcpPin) {
	t.Helper()
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenTCP("127.0.0.1:0", ServerConfig(cert), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln, tcpPin(Fingerprint(cert.Certificate[0]))
}

// tcpPin is a certificate fingerprint.
type tcpPin string

func (p tcpPin) dial(t testing.TB, addr string, cfg TCPConfig) (Conn, error) {
	t.Helper()
	conf, err := PinnedClientConfig(string(p))
	require.NoError(t, err)
	return DialTCP(tcpCtx(t), addr, conf, cfg)
}

// tcpPair returns a connected client and server.
func tcpPair(t testing.TB, client, server TCPConfig) (Conn, Conn) {
	t.Helper()
	ln, pin := tcpListen(t, server)
	accepted := make(chan Conn, 1)
	go func() {
		c, err := ln.Accept(tcpCtx(t))
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := pin.dial(t, ln.Addr().String(), client)
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	t.Cleanup(func() {
		c.CloseWithError(0, "")
		s.CloseWithError(0, "")
	})
	return c, s
}

func TestTCPBasics(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	require.True(t, c.IsClient())
	require.False(t, s.IsClient())
	require.Equal(t, "tcp", c.LocalAddr().Network())
	require.Equal(t, c.LocalAddr().String(), s.RemoteAddr().String())
	require.Equal(t, s.LocalAddr().String(), c.RemoteAddr().String())
	openAccept(t, tcpCtx(t), c, s, "hello")
	// The first PING's answer gives an RTT sample.
	require.Eventually(t, func() bool { return c.RTT() > 0 && s.RTT() > 0 }, tcpTestTimeout, time.Millisecond)
}

func TestTCPLaneIO(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	lc, ls := openAccept(t, tcpCtx(t), c, s, "hello")

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

	// A write larger than the send buffer and many frames arrives whole.
	big := make([]byte, 3*tcpDefaultSendBuffer+12345)
	for i := range big {
		big[i] = byte(i * 13)
	}
	go lc.Write(big)
	got = make([]byte, len(big))
	_, err = io.ReadFull(ls, got)
	require.NoError(t, err)
	require.Equal(t, big, got)
}

func TestTCPEOFAfterCloseWrite(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	lc, ls := openAccept(t, tcpCtx(t), c, s, "x")
	_, err := lc.Write([]byte("buffered data"))
	require.NoError(t, err)
	require.NoError(t, lc.CloseWrite())
	require.NoError(t, lc.CloseWrite(), "a second CloseWrite is harmless")
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
	l2, err := c.OpenLane(tcpCtx(t))
	require.NoError(t, err)
	require.NoError(t, l2.CloseWrite())
	a2, err := s.AcceptLane(tcpCtx(t))
	require.NoError(t, err)
	n, err = a2.Read(make([]byte, 4))
	require.Equal(t, io.EOF, err)
	require.Zero(t, n)
}

func TestTCPCancelWrite(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	lc, ls := openAccept(t, tcpCtx(t), c, s, "x")
	_, err := lc.Write([]byte("never read"))
	require.NoError(t, err)

	// A blocked Read is woken by the reset, and unread data is discarded.
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := ls.Read(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	lc.CancelWrite(7)
	requireLaneError(t, <-errc, 7, true)
	_, err = ls.Read(make([]byte, 1))
	requireLaneError(t, err, 7, true)

	_, err = lc.Write([]byte("more"))
	requireLaneError(t, err, 7, false)
	require.Error(t, lc.CloseWrite(), "CloseWrite after CancelWrite fails, as in quic-go")
	lc.CancelWrite(8) // no effect
	_, err = ls.Read(make([]byte, 1))
	requireLaneError(t, err, 7, true)

	// The other direction is unaffected.
	_, err = ls.Write([]byte("ok"))
	require.NoError(t, err)
	got := make([]byte, 2)
	_, err = io.ReadFull(lc, got)
	require.NoError(t, err)

	// The server resets its direction: the client's reader learns it.
	ls.CancelWrite(11)
	_, err = lc.Read(make([]byte, 1))
	requireLaneError(t, err, 11, true)
}

func TestTCPCancelRead(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	lc, ls := openAccept(t, tcpCtx(t), c, s, "x")

	// The peer's CancelRead makes this side's Writes fail, once the
	// LANE_STOP has arrived.
	ls.CancelRead(9)
	var err error
	for range 1000 {
		if _, err = lc.Write(make([]byte, 1000)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	requireLaneError(t, err, 9, true)
	_, err = lc.Write([]byte("more"))
	requireLaneError(t, err, 9, true)
	_, err = ls.Read(make([]byte, 1))
	requireLaneError(t, err, 9, false)
	ls.CancelRead(10) // no effect
	_, err = ls.Read(make([]byte, 1))
	requireLaneError(t, err, 9, false)

	// CancelRead after the peer's reset keeps the peer's code.
	ls.CancelWrite(3)
	_, err = lc.Read(make([]byte, 1))
	requireLaneError(t, err, 3, true)
	lc.CancelRead(4)
	_, err = lc.Read(make([]byte, 1))
	requireLaneError(t, err, 3, true)

	// CancelRead after EOF changes nothing.
	lc2, ls2 := openAccept(t, tcpCtx(t), c, s, "y")
	require.NoError(t, lc2.CloseWrite())
	_, err = io.ReadAll(ls2)
	require.NoError(t, err)
	ls2.CancelRead(5)
	_, err = ls2.Read(make([]byte, 1))
	require.Equal(t, io.EOF, err)
}

func TestTCPControlLane(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	ctx := tcpCtx(t)
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
	requireLaneError(t, err, 1, true)

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

func TestTCPAcceptOrder(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	ctx := tcpCtx(t)
	var lanes []Lane
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

	// A lane opened by CancelRead (LANE_STOP) is visible too.
	l, err := s.OpenLane(ctx)
	require.NoError(t, err)
	l.CancelRead(2)
	a, err := c.AcceptLane(ctx)
	require.NoError(t, err)
	_, err = a.Write([]byte("x"))
	requireLaneError(t, err, 2, true)
}

func TestTCPMaxLanes(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{MaxLanes: 2})
	ctx := tcpCtx(t)
	c1, s1 := openAccept(t, tcpCtx(t), c, s, "1")
	c2, s2 := openAccept(t, tcpCtx(t), c, s, "2")

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := c.OpenLane(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// The limit is per side: the server may still open its own.
	openAccept(t, tcpCtx(t), s, c, "from server")

	// A lane is finished once the acceptor has ended its sending direction
	// and read to the end of its receiving direction.
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
	_, err = s.AcceptLane(ctx)
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
	requireLaneError(t, err, 1, true)
}

// TestTCPCloseWakesEverything blocks every kind of call on both sides,
// closes the connection, and checks that each returns the right error.
func TestTCPCloseWakesEverything(t *testing.T) {
	tcpCheckNoLeak(t)
	for _, closer := range []string{"client", "server"} {
		t.Run(closer, func(t *testing.T) {
			c, s := tcpPair(t, TCPConfig{}, TCPConfig{MaxLanes: 1})
			ctx := tcpCtx(t)
			lc, ls := openAccept(t, tcpCtx(t), c, s, "x")
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
				conn Conn
				lane Lane
			}{{"client", c, lc}, {"server", s, ls}} {
				block(e.side, func() error { _, err := e.lane.Read(make([]byte, 1)); return err })
				block(e.side, func() error { _, err := e.conn.AcceptLane(ctx); return err })
				block(e.side, func() error { _, err := e.conn.AcceptControl(ctx); return err })
				block(e.side, func() error { _, err := e.conn.OpenControl(ctx); return err })
			}
			block("client", func() error { _, err := c.OpenLane(ctx); return err })
			time.Sleep(20 * time.Millisecond)

			closing, other := c, s
			if closer == "server" {
				closing, other = s, c
			}
			require.NoError(t, closing.CloseWithError(42, "bye"))
			select {
			case <-closing.Done():
			default:
				t.Fatal("Done not closed by CloseWithError")
			}
			select {
			case <-other.Done():
			case <-ctx.Done():
				t.Fatal("the peer's Done not closed")
			}
			require.NoError(t, other.CloseWithError(43, "ignored"))
			waited := make(chan struct{})
			go func() { wg.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-ctx.Done():
				t.Fatal("blocked calls did not return after CloseWithError")
			}
			close(results)
			for r := range results {
				requireAppError(t, r.err, 42, r.side != closer)
				if r.side != closer {
					require.ErrorContains(t, r.err, "bye", "the reason reaches the peer")
				}
			}
			// Later calls fail the same way.
			_, err = c.OpenLane(ctx)
			requireAppError(t, err, 42, closer != "client")
			_, err = s.AcceptLane(ctx)
			requireAppError(t, err, 42, closer != "server")
			_, err = lc.Write([]byte("x"))
			requireAppError(t, err, 42, closer != "client")
			_, err = ls.Read(make([]byte, 1))
			requireAppError(t, err, 42, closer != "server")
			require.NoError(t, lc.CloseWrite())
			lc.CancelWrite(1)
			lc.CancelRead(1)
		})
	}
}

// TestTCPContextCancel checks that ctx ends waits without closing
// anything.
func TestTCPContextCancel(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.AcceptLane(ctx)
		errc <- err
	}()
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConnClosed)
	openAccept(t, tcpCtx(t), c, s, "still works")
}

// TestTCPAddrs: the addresses are the TCP socket's.
func TestTCPAddrs(t *testing.T) {
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	_, ok := c.LocalAddr().(*net.TCPAddr)
	require.True(t, ok)
	require.True(t, strings.HasPrefix(s.LocalAddr().String(), "127.0.0.1:"))
}

// TestTCPConfigFromQUICConfig: the TCP binding holds what QUIC's windows
// would for the same bp/1 windows, budget and limits.
func TestTCPConfigFromQUICConfig(t *testing.T) {
	q := QUICConfig{MaxStreamWindow: 1 << 20, SessionBudget: 4 << 20, MaxStreams: 7, IdleTimeout: 3 * time.Second, MaxConns: 5, MaxHandshakes: 2}
	require.Equal(t, TCPConfig{
		MaxLanes: 7, MaxLaneBuffer: 1<<20 + quicSlack, MaxConnBuffer: 4<<20 + quicSlack,
		IdleTimeout: 3 * time.Second, HandshakeTimeout: 10 * time.Second, MaxConns: 5, MaxHandshakes: 2,
	}, q.TCPConfig())
	d := QUICConfig{}.TCPConfig()
	require.Equal(t, tcpDefaultLaneBuffer, d.MaxLaneBuffer, "the defaults agree")
	require.Equal(t, tcpDefaultConnBuffer, d.MaxConnBuffer)
}
