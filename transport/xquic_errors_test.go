package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestXQUICInvalidArguments(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	client := &tls.Config{InsecureSkipVerify: true}
	tls12 := ServerConfig(cert)
	tls12.MaxVersion = tls.VersionTLS12
	tests := []struct {
		name   string
		ctx    context.Context
		tls    *tls.Config
		cfg    QUICConfig
		server bool
	}{
		{name: "dial nil tls", ctx: context.Background()},
		{name: "dial nil context", tls: client},
		{name: "dial TLS 1.2 only", ctx: context.Background(), tls: &tls.Config{MaxVersion: tls.VersionTLS12}},
		{name: "dial negative idle", ctx: context.Background(), tls: client, cfg: QUICConfig{IdleTimeout: -1}},
		{name: "dial negative streams", ctx: context.Background(), tls: client, cfg: QUICConfig{MaxStreams: -1}},
		{name: "listen nil tls", server: true},
		{name: "listen no certificate", server: true, tls: &tls.Config{}},
		{name: "listen empty certificate", server: true, tls: ServerConfig(tls.Certificate{})},
		{name: "listen TLS 1.2 only", server: true, tls: tls12},
		{name: "listen negative handshake timeout", server: true, tls: ServerConfig(cert), cfg: QUICConfig{HandshakeTimeout: -time.Second}},
		{name: "listen negative MaxConns", server: true, tls: ServerConfig(cert), cfg: QUICConfig{MaxConns: -1}},
		{name: "listen negative MaxHandshakes", server: true, tls: ServerConfig(cert), cfg: QUICConfig{MaxHandshakes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() {
				if tt.server {
					var ln *XQUICListener
					ln, err = ListenXQUIC("127.0.0.1:0", tt.tls, tt.cfg)
					assert.Nil(t, ln)
				} else {
					var c Conn
					c, err = DialXQUIC(tt.ctx, "127.0.0.1:9", tt.tls, tt.cfg)
					assert.Nil(t, c)
				}
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

// TestXQUICConfigWindows: with bp/1's defaults (a 16 MiB stream window, a
// 64 MiB session budget) and with others, x/net/quic's fixed buffers
// exceed what bp/1 can have in flight.
func TestXQUICConfigWindows(t *testing.T) {
	for _, tt := range []struct {
		cfg            QUICConfig
		window, budget int64
	}{
		{QUICConfig{}, 16 << 20, 64 << 20},
		{QUICConfig{MaxStreamWindow: 1 << 20, SessionBudget: 4 << 20}, 1 << 20, 4 << 20},
		{QUICConfig{MaxStreamWindow: 32 << 20, SessionBudget: 8 << 20}, 32 << 20, 32 << 20},
	} {
		conf := tt.cfg.XQUICConfig(&tls.Config{})
		assert.Greater(t, conf.MaxStreamReadBufferSize, tt.window)
		assert.Greater(t, conf.MaxStreamWriteBufferSize, tt.window)
		assert.Greater(t, conf.MaxConnReadBufferSize, tt.budget)
	}
	conf := QUICConfig{}.XQUICConfig(&tls.Config{})
	assert.EqualValues(t, 17<<20, conf.MaxStreamReadBufferSize)
	assert.EqualValues(t, 65<<20, conf.MaxConnReadBufferSize)
	assert.EqualValues(t, 256, conf.MaxBidiRemoteStreams)
	assert.EqualValues(t, 1, conf.MaxUniRemoteStreams)
	assert.Equal(t, 30*time.Second, conf.MaxIdleTimeout)
	assert.Equal(t, 10*time.Second, conf.KeepAlivePeriod)
	assert.Equal(t, []string{ALPN}, conf.TLSConfig.NextProtos)
	assert.EqualValues(t, tls.VersionTLS13, conf.TLSConfig.MinVersion)
}

// TestXQUICWindowsDoNotGovern: a peer that does not read at all can be
// sent a whole bp/1 stream window on each of four lanes, the default
// session budget in all, before QUIC holds the writer back.
func TestXQUICWindowsDoNotGovern(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB per pairing")
	}
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{})
		ctx := xctx(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			l, err := c.OpenLane(ctx)
			require.NoError(t, err)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				for range 16 {
					if _, err := l.Write(buf); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("QUIC's windows held back writes within bp/1's budget")
		}
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		_ = s
	})
}

// xqLossyConn is a socket that can stop sending and receiving: the peer
// vanishes without a CONNECTION_CLOSE.
type xqLossyConn struct {
	net.PacketConn
	drop atomic.Bool
}

func (c *xqLossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *xqLossyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
	}
}

// TestXQUICIdleTimeoutServer: a quic-go client that vanishes ends an
// x/net/quic server's connection after its idle timeout, with an error
// matching both ErrConnClosed and ErrIdleTimeout.
func TestXQUICIdleTimeoutServer(t *testing.T) {
	const idle = 500 * time.Millisecond
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenXQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{IdleTimeout: idle})
	require.NoError(t, err)
	defer ln.Close()
	ctx := xctx(t)

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	dc := &dropConn{PacketConn: udp}
	tr := &quic.Transport{Conn: dc}
	defer udp.Close()
	defer tr.Close()
	cc, err := tr.Dial(ctx, ln.Addr(), withALPN(&tls.Config{InsecureSkipVerify: true}), &quic.Config{MaxIdleTimeout: time.Minute})
	require.NoError(t, err)
	defer cc.CloseWithError(0, "")
	s, err := cc.OpenStreamSync(ctx)
	require.NoError(t, err)
	_, err = s.Write([]byte("x"))
	require.NoError(t, err)

	sc, err := ln.Accept(ctx)
	require.NoError(t, err)
	lane, err := sc.AcceptLane(ctx)
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = io.ReadFull(lane, buf)
	require.NoError(t, err)
	assert.Equal(t, 1, ln.Stats().Accepted)

	dc.drop.Store(true)
	_, err = lane.Read(buf) // blocks until the idle timeout
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConnClosed)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	_, err = sc.AcceptLane(ctx)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	_, err = sc.OpenLane(ctx)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	<-sc.Done()
	require.Eventually(t, func() bool { return ln.Stats().Accepted == 0 }, xTestTimeout, 10*time.Millisecond)
}

// TestXQUICIdleTimeoutClient: an x/net/quic client whose server vanishes
// (here, all its packets are lost both ways) ends its connection after
// its idle timeout, with an error matching ErrConnClosed and
// ErrIdleTimeout.
func TestXQUICIdleTimeoutClient(t *testing.T) {
	const idle = 500 * time.Millisecond
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
	require.NoError(t, err)
	defer ln.Close()
	ctx := xctx(t)
	go func() { // echoes one byte, then holds the connection open
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		defer c.CloseWithError(0, "")
		if l, err := c.AcceptLane(ctx); err == nil {
			io.CopyN(l, l, 1)
		}
		<-ctx.Done()
	}()

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	lc := &xqLossyConn{PacketConn: udp}
	cfg := QUICConfig{IdleTimeout: idle}
	conf := cfg.XQUICConfig(&tls.Config{InsecureSkipVerify: true})
	target := ln.Addr().(*net.UDPAddr).AddrPort()
	c, err := dialXQUICOne(ctx, target, conf, 5*time.Second, lc)
	require.NoError(t, err)
	lane, err := c.OpenLane(ctx)
	require.NoError(t, err)
	_, err = lane.Write([]byte("x"))
	require.NoError(t, err)
	// After a round trip the handshake is confirmed (x/net/quic applies
	// the handshake timeout, not the idle timeout, until it is).
	_, err = io.ReadFull(lane, make([]byte, 1))
	require.NoError(t, err)

	lc.drop.Store(true)
	_, err = lane.Read(make([]byte, 1))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConnClosed)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	<-c.Done()
	_, err = c.OpenLane(ctx)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	select {
	case <-c.ended:
	case <-ctx.Done():
		t.Fatal("the connection did not finish")
	}
}

// TestXQUICDialClosedPort: nothing listening is reported as refused at
// once (ICMP port unreachable), not after the handshake timeout.
func TestXQUICDialClosedPort(t *testing.T) {
	conf, err := PinnedClientConfig("sha256:" + strings.Repeat("00", 32))
	require.NoError(t, err)
	addr := closedUDPPort(t)
	start := time.Now()
	_, err = DialXQUIC(context.Background(), addr.String(), conf, QUICConfig{HandshakeTimeout: 10 * time.Second})
	elapsed := time.Since(start)
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, "nothing listening")
	require.Less(t, elapsed, 5*time.Second, "a closed port took the handshake timeout: %v", err)
	t.Logf("%v after %v", err, elapsed.Round(time.Millisecond))
}

// TestXQUICDialSilentPort: a server that never answers gives an error
// matching ErrIdleTimeout after the handshake timeout.
func TestXQUICDialSilentPort(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer udp.Close()
	conf, err := PinnedClientConfig("sha256:" + strings.Repeat("00", 32))
	require.NoError(t, err)
	_, err = DialXQUIC(xctx(t), udp.LocalAddr().String(), conf, QUICConfig{HandshakeTimeout: 300 * time.Millisecond})
	require.ErrorIs(t, err, ErrIdleTimeout)
	require.ErrorIs(t, err, ErrConnClosed)
	require.NotErrorIs(t, err, ErrConnRefused)

	// The caller's context ends a dial as it is.
	ctx, cancel := context.WithTimeout(xctx(t), 100*time.Millisecond)
	defer cancel()
	_, err = DialXQUIC(ctx, udp.LocalAddr().String(), conf, QUICConfig{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, ErrIdleTimeout)
}

// TestXQUICDialRefusedByQUICGo: quic-go's listener over its MaxConns cap
// refuses with QUIC's CONNECTION_REFUSED, which DialXQUIC reports as
// ErrConnRefused.
func TestXQUICDialRefusedByQUICGo(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{MaxConns: 1, IdleTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer ln.Close()
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	first, err := DialXQUIC(xctx(t), ln.Addr().String(), conf, QUICConfig{})
	require.NoError(t, err)
	defer first.CloseWithError(0, "")
	_, err = DialXQUIC(xctx(t), ln.Addr().String(), conf, QUICConfig{})
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorIs(t, err, ErrConnClosed)
	t.Log(err)
}

func TestXQUICPinMismatch(t *testing.T) {
	for _, listen := range []func(string, *tls.Config, QUICConfig) (Listener, error){xqListenX, xqListenQ} {
		cert, err := SelfSigned("127.0.0.1")
		require.NoError(t, err)
		ln, err := listen("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
		require.NoError(t, err)
		other, err := SelfSigned("127.0.0.1")
		require.NoError(t, err)
		conf, err := PinnedClientConfig(Fingerprint(other.Certificate[0]))
		require.NoError(t, err)
		_, err = DialXQUIC(xctx(t), ln.Addr().String(), conf, QUICConfig{})
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrPinMismatch)
		ln.Close()
	}
}

// TestXQUICRequiresALPN: the listener completes no handshake in which
// bp/1 was not negotiated (SPEC.md 3.1).
func TestXQUICRequiresALPN(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenXQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(xctx(t), 3*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}, nil)
	if err == nil {
		c.CloseWithError(0, "")
	}
	require.Error(t, err)
	t.Log(err)
}

// TestXQUICListenerCaps: over MaxConns, a connection is closed as soon as
// its handshake completes (code 0 and a reason); Close keeps accepted
// connections open, closes the rest, and the socket goes with the last
// accepted connection, after which a dial is refused.
func TestXQUICListenerCaps(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenXQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{MaxConns: 1})
	require.NoError(t, err)
	defer ln.Close()
	ctx := xctx(t)
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	addr := ln.Addr().String()

	first, err := DialXQUIC(ctx, addr, conf, QUICConfig{})
	require.NoError(t, err)
	defer first.CloseWithError(0, "")
	sc, err := ln.Accept(ctx)
	require.NoError(t, err)
	assert.Equal(t, ListenerStats{Accepted: 1}, ln.Stats())

	for _, dial := range []func(context.Context, string, *tls.Config, QUICConfig) (Conn, error){DialXQUIC, DialQUIC} {
		second, err := dial(ctx, addr, conf, QUICConfig{})
		if err == nil {
			<-second.Done()
			_, err = second.AcceptLane(ctx)
		}
		var ae *ApplicationError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, uint64(0), ae.Code)
		assert.True(t, ae.Remote)
		assert.Contains(t, ae.Reason, "cap of 1")
	}
	assert.Equal(t, uint64(2), ln.Stats().Refused)

	require.NoError(t, ln.Close())
	_, err = ln.Accept(ctx)
	require.ErrorIs(t, err, net.ErrClosed)
	openAccept(t, xctx(t), first, sc, "still open")
	require.NoError(t, first.CloseWithError(0, ""))
	require.Eventually(t, func() bool { return ln.Stats().Accepted == 0 }, xTestTimeout, 10*time.Millisecond)

	// The socket is closed now (at once or after the last connection
	// drained): nothing listens.
	var last error
	for range 20 {
		_, last = DialXQUIC(ctx, addr, conf, QUICConfig{HandshakeTimeout: time.Second})
		if errors.Is(last, ErrConnRefused) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.ErrorIs(t, last, ErrConnRefused)
}

// TestXQUICKeepaliveHoldsIdleConn: a connection with nothing to say
// outlives several idle timeouts, kept alive by QUIC's PINGs every third
// of it.
func TestXQUICKeepaliveHoldsIdleConn(t *testing.T) {
	const idle = 300 * time.Millisecond
	xqEachPair(t, func(t *testing.T, p xqStackPair) {
		c, s := p.connect(t, QUICConfig{IdleTimeout: idle})
		lc, ls := openAccept(t, xctx(t), c, s, "x")
		time.Sleep(4 * idle)
		select {
		case <-c.Done():
			t.Fatal("the client's connection closed while idle")
		case <-s.Done():
			t.Fatal("the server's connection closed while idle")
		default:
		}
		_, err := lc.Write([]byte("y"))
		require.NoError(t, err)
		_, err = io.ReadFull(ls, make([]byte, 1))
		require.NoError(t, err)
	})
}

// TestXQUICRetry: with MaxHandshakes set, which turns on x/net/quic's
// address validation (a Retry for every client), clients of both stacks
// still connect.
func TestXQUICRetry(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenXQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{MaxHandshakes: 4})
	require.NoError(t, err)
	defer ln.Close()
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx := xctx(t)
	for _, dial := range []func(context.Context, string, *tls.Config, QUICConfig) (Conn, error){DialXQUIC, DialQUIC} {
		c, err := dial(ctx, ln.Addr().String(), conf, QUICConfig{})
		require.NoError(t, err)
		s, err := ln.Accept(ctx)
		require.NoError(t, err)
		openAccept(t, xctx(t), c, s, "after a Retry")
		c.CloseWithError(0, "")
		s.CloseWithError(0, "")
	}
}

// TestXQUICQlogDir: QlogDir makes x/net/quic write a trace per
// connection there.
func TestXQUICQlogDir(t *testing.T) {
	dir := t.TempDir() + "/qlog"
	c, s := xqStackPairs[0].connect(t, QUICConfig{QlogDir: dir})
	openAccept(t, xctx(t), c, s, "traced")
	require.NoError(t, c.CloseWithError(0, ""))
	<-s.Done()
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(dir)
		return err == nil && len(entries) >= 2 // client and server
	}, xTestTimeout, 10*time.Millisecond)
}
