package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The x/net/quic binding's conformance: the lane contract of
// transport/memconn's tests, run with an x/net/quic endpoint on each side
// and with x/net/quic on one side and quic-go on the other. Every wait is
// bounded by the test context.

const xTestTimeout = 10 * time.Second

func xctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), xTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// xqStackPair names which QUIC stack dials and which listens.
type xqStackPair struct {
	name   string
	dial   func(context.Context, string, *tls.Config, QUICConfig) (Conn, error)
	listen func(string, *tls.Config, QUICConfig) (Listener, error)
}

func xqListenX(addr string, conf *tls.Config, cfg QUICConfig) (Listener, error) {
	return ListenXQUIC(addr, conf, cfg)
}

func xqListenQ(addr string, conf *tls.Config, cfg QUICConfig) (Listener, error) {
	return ListenQUIC(addr, conf, cfg)
}

// xqStackPairs are the pairings with x/net/quic on at least one side.
var xqStackPairs = []xqStackPair{
	{"xquic-xquic", DialXQUIC, xqListenX},
	{"xquic-to-quicgo", DialXQUIC, xqListenQ},
	{"quicgo-to-xquic", DialQUIC, xqListenX},
}

// xqEachPair runs f as a subtest for every stack pairing.
func xqEachPair(t *testing.T, f func(t *testing.T, p xqStackPair)) {
	for _, p := range xqStackPairs {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}

// connect dials a fresh listener of p with cfg on both sides and returns
// both ends; both close when the test ends.
func (p xqStackPair) connect(t testing.TB, cfg QUICConfig) (client, server Conn) {
	t.Helper()
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := p.listen("127.0.0.1:0", ServerConfig(cert), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ctx := xctx(t)
	accepted := make(chan Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	client, err = p.dial(ctx, ln.Addr().String(), conf, cfg)
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
	})
	return client, server
}

// xqSmallWindow makes QUIC's windows small (bp/1's window plus the 1 MiB
// slack), so that a writer whose peer does not read blocks soon.
var xqSmallWindow = QUICConfig{MaxStreamWindow: 64 << 10, SessionBudget: 64 << 10}

// xqFillUntilBlocked writes to l from a goroutine until a Write has not
// returned for a while (QUIC's window is full), and returns the channel
// on which that Write's result arrives.
func xqFillUntilBlocked(t *testing.T, l Lane) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	progress := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for range 1000 { // 64 MiB at most: far more than any window here
			if _, err := l.Write(buf); err != nil {
				errc <- err
				return
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		errc <- errors.New("never blocked")
	}()
	for {
		select {
		case <-progress:
		case err := <-errc:
			t.Fatalf("writer ended before it blocked: %v", err)
		case <-time.After(200 * time.Millisecond):
			return errc // no progress for a while: blocked
		}
	}
}

func TestXQUICConnBasics(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		assert.True(t, c.IsClient())
		assert.False(t, s.IsClient())
		assert.Equal(t, c.LocalAddr().(*net.UDPAddr).Port, s.RemoteAddr().(*net.UDPAddr).Port)
		assert.Equal(t, s.LocalAddr().(*net.UDPAddr).Port, c.RemoteAddr().(*net.UDPAddr).Port)
		for _, conn := range []Conn{c, s} {
			if _, ok := conn.(*xquicConn); ok {
				assert.Zero(t, conn.RTT(), "x/net/quic exposes no RTT")
			}
		}
	})
}

func TestXQUICLaneIO(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		lc, ls := openAccept(t, xctx(t), c, s, "hello")
		_, err := ls.Write([]byte("world"))
		require.NoError(t, err)
		buf := make([]byte, 16)
		n, err := io.ReadAtLeast(lc, buf, 5)
		require.NoError(t, err)
		require.Equal(t, "world", string(buf[:n]))

		n, err = lc.Read(nil)
		require.NoError(t, err)
		require.Zero(t, n)
		n, err = lc.Write(nil)
		require.NoError(t, err)
		require.Zero(t, n)

		// Small writes each reach the peer without a Flush by the caller.
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
	})
}

func TestXQUICEOFAfterCloseWrite(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		lc, ls := openAccept(t, xctx(t), c, s, "x")
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

		_, err = ls.Write([]byte("reply"))
		require.NoError(t, err)
		require.NoError(t, ls.CloseWrite())
		got, err = io.ReadAll(lc)
		require.NoError(t, err)
		require.Equal(t, "reply", string(got))

		// A lane ended by an empty CloseWrite is visible to the peer.
		l2, err := c.OpenLane(xctx(t))
		require.NoError(t, err)
		require.NoError(t, l2.CloseWrite())
		a2, err := s.AcceptLane(xctx(t))
		require.NoError(t, err)
		n, err = a2.Read(make([]byte, 4))
		require.Equal(t, io.EOF, err)
		require.Zero(t, n)
	})
}

func TestXQUICCancelWrite(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		lc, ls := openAccept(t, xctx(t), c, s, "x")

		// A blocked Read is woken by the reset.
		errc := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(ls)
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		lc.CancelWrite(7)
		requireLaneError(t, <-errc, 7, true)
		_, err := ls.Read(make([]byte, 1))
		requireLaneError(t, err, 7, true)

		_, err = lc.Write([]byte("more"))
		requireLaneError(t, err, 7, false)
		if _, ok := lc.(*xquicLane); ok {
			require.Error(t, lc.CloseWrite(), "CloseWrite after CancelWrite fails, as in quic-go")
		}
		lc.CancelWrite(8) // no effect
		_, err = ls.Read(make([]byte, 1))
		requireLaneError(t, err, 7, true)

		// The other direction is unaffected.
		_, err = ls.Write([]byte("ok"))
		require.NoError(t, err)
		got := make([]byte, 2)
		_, err = io.ReadFull(lc, got)
		require.NoError(t, err)
	})
}

// TestXQUICCancelWriteUnblocks: a Write held by a full QUIC window returns
// as soon as CancelWrite is called from another goroutine.
func TestXQUICCancelWriteUnblocks(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, xqSmallWindow)
		lc, _ := openAccept(t, xctx(t), c, s, "x")
		errc := xqFillUntilBlocked(t, lc)
		lc.CancelWrite(5)
		select {
		case err := <-errc:
			requireLaneError(t, err, 5, false)
		case <-time.After(xTestTimeout):
			t.Fatal("CancelWrite did not unblock the Write")
		}
	})
}

func TestXQUICCancelRead(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, xqSmallWindow)
		lc, ls := openAccept(t, xctx(t), c, s, "x")

		// A Write blocked on a full window is woken by the peer's
		// CancelRead.
		errc := xqFillUntilBlocked(t, lc)
		ls.CancelRead(9)
		requireLaneError(t, <-errc, 9, true)
		_, err := lc.Write([]byte("more"))
		requireLaneError(t, err, 9, true)
		// The peer answered the STOP_SENDING with RESET_STREAM(9); let it
		// arrive. Read still reports our own CancelRead, as over quic-go
		// (it once said Remote when the reset had come first).
		time.Sleep(20 * time.Millisecond)
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
		lc2, ls2 := openAccept(t, xctx(t), c, s, "y")
		require.NoError(t, lc2.CloseWrite())
		_, err = io.ReadAll(ls2)
		require.NoError(t, err)
		ls2.CancelRead(5)
		_, err = ls2.Read(make([]byte, 1))
		require.Equal(t, io.EOF, err)
	})
}

func TestXQUICControlLane(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		ctx := xctx(t)
		ctl, err := c.OpenControl(ctx)
		require.NoError(t, err)
		_, err = ctl.Write([]byte("settings"))
		require.NoError(t, err)
		r, err := s.AcceptControl(ctx)
		require.NoError(t, err)
		got := make([]byte, 8)
		_, err = io.ReadFull(r, got)
		require.NoError(t, err)
		require.Equal(t, "settings", string(got))

		// Only one control lane each way: further calls wait.
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = c.OpenControl(short)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		_, err = s.AcceptControl(short)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		cancel()

		ctl.CancelWrite(1)
		_, err = r.Read(got)
		requireLaneError(t, err, 1, true)

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
	})
}

func TestXQUICAcceptOrder(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		ctx := xctx(t)
		var lanes []Lane
		for range 3 {
			l, err := c.OpenLane(ctx)
			require.NoError(t, err)
			lanes = append(lanes, l)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := s.AcceptLane(short)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "nothing sent yet: nothing to accept")

		for i := 2; i >= 0; i-- {
			_, err := lanes[i].Write([]byte{byte(i)})
			require.NoError(t, err)
		}
		// quic-go hands lanes over in the order they were opened (a QUIC
		// stream opens those below it); x/net/quic in the order their
		// first data arrives, which bp/1 allows (SPEC.md 6.1).
		var got []byte
		for range 3 {
			l, err := s.AcceptLane(ctx)
			require.NoError(t, err)
			b := make([]byte, 1)
			_, err = io.ReadFull(l, b)
			require.NoError(t, err)
			got = append(got, b[0])
		}
		if _, ok := s.(*xquicConn); ok {
			require.ElementsMatch(t, []byte{0, 1, 2}, got)
		} else {
			require.Equal(t, []byte{0, 1, 2}, got)
		}
	})
}

// TestXQUICMaxLanes: the peer's limit on concurrent lanes holds OpenLane,
// and a lane gives its slot back once both its halves are finished:
// read to the end and closed for writing, or cancelled both ways.
func TestXQUICMaxLanes(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{MaxStreams: 2})
		ctx := xctx(t)
		c1, s1 := openAccept(t, xctx(t), c, s, "1")
		c2, s2 := openAccept(t, xctx(t), c, s, "2")

		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := c.OpenLane(short)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)

		// The limit is per side.
		openAccept(t, xctx(t), s, c, "from server")

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
		require.NoError(t, s1.CloseWrite())
		_, err = io.ReadAll(c1)
		require.NoError(t, err)
		require.NoError(t, <-errc)
		_, err = s.AcceptLane(ctx)
		require.NoError(t, err)

		go func() {
			_, err := c.OpenLane(ctx)
			errc <- err
		}()
		s2.CancelRead(1)
		s2.CancelWrite(1)
		_, err = c2.Read(make([]byte, 1))
		requireLaneError(t, err, 1, true)
		c2.CancelWrite(1)
		require.NoError(t, <-errc)
	})
}

func TestXQUICWriteDeadline(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, xqSmallWindow)
		lc, ls := openAccept(t, xctx(t), c, s, "x")

		// A Write blocked on a full window fails at the deadline.
		require.NoError(t, lc.SetWriteDeadline(time.Now().Add(100*time.Millisecond)))
		var err error
		for range 1000 {
			if _, err = lc.Write(make([]byte, 64<<10)); err != nil {
				break
			}
		}
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// Past the deadline, Writes fail at once.
		n, err := lc.Write([]byte("y"))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Zero(t, n)

		// Moving the deadline wakes a blocked Write.
		require.NoError(t, lc.SetWriteDeadline(time.Time{}))
		errc := xqFillUntilBlocked(t, lc)
		require.NoError(t, lc.SetWriteDeadline(time.Now()))
		require.ErrorIs(t, <-errc, os.ErrDeadlineExceeded)

		// Cleared, it lets Writes through again once the reader reads.
		require.NoError(t, lc.SetWriteDeadline(time.Time{}))
		go io.Copy(io.Discard, ls)
		_, err = lc.Write(make([]byte, 4<<20))
		require.NoError(t, err)

		// The control lane has a deadline too.
		ctl, err := c.OpenControl(xctx(t))
		require.NoError(t, err)
		require.NoError(t, ctl.SetWriteDeadline(time.Now().Add(-time.Second)))
		_, err = ctl.Write([]byte("x"))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})
}

// TestXQUICCloseWakesEverything blocks every kind of call on both sides,
// closes the connection with a code, and checks that each returns an
// *ApplicationError with that code, Remote on the side that did not
// close.
func TestXQUICCloseWakesEverything(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		for _, closer := range []string{"client", "server"} {
			t.Run(closer, func(t *testing.T) {
				c, s := p.connect(t, QUICConfig{MaxStreams: 1})
				ctx := xctx(t)
				lc, ls := openAccept(t, xctx(t), c, s, "x")
				_, err := c.OpenControl(ctx)
				require.NoError(t, err)
				_, err = s.OpenControl(ctx)
				require.NoError(t, err)

				type result struct {
					side, what string
					err        error
				}
				var wg sync.WaitGroup
				results := make(chan result, 32)
				block := func(side, what string, f func() error) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						results <- result{side, what, f()}
					}()
				}
				for _, e := range []struct {
					side string
					conn Conn
					lane Lane
				}{{"client", c, lc}, {"server", s, ls}} {
					block(e.side, "read", func() error { _, err := e.lane.Read(make([]byte, 1)); return err })
					block(e.side, "accept lane", func() error { _, err := e.conn.AcceptLane(ctx); return err })
					block(e.side, "accept control", func() error { _, err := e.conn.AcceptControl(ctx); return err })
				}
				block("client", "open lane", func() error { _, err := c.OpenLane(ctx); return err })
				time.Sleep(50 * time.Millisecond)

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
					t.Run(r.side+" "+r.what, func(t *testing.T) {
						requireAppError(t, r.err, 42, r.side != closer)
					})
				}
				_, err = c.OpenLane(ctx)
				requireAppError(t, err, 42, closer != "client")
				_, err = s.AcceptLane(ctx)
				requireAppError(t, err, 42, closer != "server")
				_, err = lc.Write([]byte("x"))
				requireAppError(t, err, 42, closer != "client")
				_, err = ls.Read(make([]byte, 1))
				requireAppError(t, err, 42, closer != "server")
				lc.CancelWrite(1)
				lc.CancelRead(1)
			})
		}
	})
}

// TestXQUICPeerCloseReason: the peer's code and reason arrive.
func TestXQUICPeerCloseReason(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		l, err := c.OpenLane(xctx(t))
		require.NoError(t, err)
		require.NoError(t, s.CloseWithError(8, "no SETTINGS from the peer within 10s"))
		<-c.Done()
		_, err = l.Write([]byte("x"))
		var ae *ApplicationError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, &ApplicationError{Code: 8, Remote: true, Reason: "no SETTINGS from the peer within 10s"}, ae)
		assert.NotErrorIs(t, err, ErrConnClosed)
	})
}

func TestXQUICContextCancel(t *testing.T) {
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		ctx, cancel := context.WithCancel(xctx(t))
		errc := make(chan error, 1)
		go func() {
			_, err := s.AcceptLane(ctx)
			errc <- err
		}()
		time.Sleep(5 * time.Millisecond)
		cancel()
		err := <-errc
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, ErrConnClosed)
		openAccept(t, xctx(t), c, s, "still works")
	})
}

// TestXQUICNoGoroutineLeak: once both ends of connections have closed,
// the binding's goroutines end (within x/net/quic's drain period).
func TestXQUICNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		cert, err := SelfSigned("127.0.0.1")
		require.NoError(t, err)
		ln, err := ListenXQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
		require.NoError(t, err)
		defer ln.Close()
		conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
		require.NoError(t, err)
		for range 3 {
			c, err := DialXQUIC(xctx(t), ln.Addr().String(), conf, QUICConfig{})
			require.NoError(t, err)
			sc, err := ln.Accept(xctx(t))
			require.NoError(t, err)
			openAccept(t, xctx(t), c, sc, "x")
			require.NoError(t, c.CloseWithError(0, ""))
			<-sc.Done()
			sc.CloseWithError(0, "")
		}
	}()
	deadline := time.Now().Add(xTestTimeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
