package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConvertError(t *testing.T) {
	tests := []struct {
		name               string
		in                 error
		closed, idle, refu bool
		deadline           bool
	}{
		{name: "idle timeout", in: &quic.IdleTimeoutError{}, closed: true, idle: true},
		{name: "wrapped idle timeout", in: fmt.Errorf("read: %w", &quic.IdleTimeoutError{}), closed: true, idle: true},
		{name: "handshake timeout", in: &quic.HandshakeTimeoutError{}, closed: true, idle: true},
		{name: "refused by peer", in: &quic.TransportError{ErrorCode: quic.ConnectionRefused, Remote: true}, closed: true, refu: true},
		{name: "refused locally", in: &quic.TransportError{ErrorCode: quic.ConnectionRefused}, closed: true},
		{name: "other transport error", in: &quic.TransportError{ErrorCode: quic.ProtocolViolation, Remote: true}, closed: true},
		{name: "stateless reset", in: &quic.StatelessResetError{}, closed: true},
		{name: "write deadline", in: os.ErrDeadlineExceeded, deadline: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := convertError(tt.in)
			assert.Equal(t, tt.closed, errors.Is(err, ErrConnClosed), "ErrConnClosed: %v", err)
			assert.Equal(t, tt.idle, errors.Is(err, ErrIdleTimeout), "ErrIdleTimeout: %v", err)
			assert.Equal(t, tt.refu, errors.Is(err, ErrConnRefused), "ErrConnRefused: %v", err)
			assert.Equal(t, tt.deadline, errors.Is(err, os.ErrDeadlineExceeded), "deadline: %v", err)
			if tt.closed {
				assert.ErrorIs(t, err, tt.in, "the quic-go error stays in the chain")
			}
		})
	}
	assert.Equal(t, io.EOF, convertError(io.EOF))
	var ae *ApplicationError
	require.ErrorAs(t, convertError(&quic.ApplicationError{ErrorCode: 7, Remote: true}), &ae)
	assert.Equal(t, uint64(7), ae.Code)
	assert.NotErrorIs(t, ae, ErrIdleTimeout)
}

func TestQUICInvalidArguments(t *testing.T) {
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
					var ln *QUICListener
					ln, err = ListenQUIC("127.0.0.1:0", tt.tls, tt.cfg)
					assert.Nil(t, ln)
				} else {
					var c Conn
					c, err = DialQUIC(tt.ctx, "127.0.0.1:9", tt.tls, tt.cfg)
					assert.Nil(t, c)
				}
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

// dropConn is a client socket that can stop sending: the peer sees the
// client vanish, without a CONNECTION_CLOSE.
type dropConn struct {
	net.PacketConn // an interface, so that quic-go cannot bypass WriteTo
	drop           atomic.Bool
}

func (c *dropConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// TestQUICIdleTimeoutVanishedPeer: a client that vanishes ends the
// server's connection after its idle timeout with an error matching both
// ErrConnClosed and ErrIdleTimeout, on blocked and later calls alike.
func TestQUICIdleTimeoutVanishedPeer(t *testing.T) {
	const idle = 500 * time.Millisecond
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{IdleTimeout: idle})
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

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
	start := time.Now()
	_, err = lane.Read(buf) // blocks until the idle timeout
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConnClosed)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	assert.Less(t, elapsed, 5*time.Second, "the idle timeout is %v", idle)
	_, err = sc.AcceptLane(ctx)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	_, err = sc.OpenLane(ctx)
	assert.ErrorIs(t, err, ErrIdleTimeout)
	select {
	case <-sc.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
	require.Eventually(t, func() bool { return ln.Stats().Accepted == 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestQUICListenerCaps: over MaxConns, a new connection is refused with
// an error matching ErrConnRefused; once one closes, a new one gets in;
// after Close the socket is released with the last connection.
func TestQUICListenerCaps(t *testing.T) {
	// A short idle timeout (with keepalive at a third of it) on both
	// sides: a CONNECTION_CLOSE lost under load (quic-go drops packets
	// when its receive queue is full) then costs 1.5 s, not 30.
	const idle = 1500 * time.Millisecond
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{MaxConns: 2, IdleTimeout: idle})
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	addr := ln.Addr().String()

	var conns []Conn
	for range 2 {
		c, err := DialQUIC(ctx, addr, conf, QUICConfig{IdleTimeout: idle})
		require.NoError(t, err)
		conns = append(conns, c)
	}
	st := ln.Stats()
	assert.Equal(t, 2, st.Handshaking+st.Accepted)
	_, err = DialQUIC(ctx, addr, conf, QUICConfig{IdleTimeout: idle})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConnRefused)
	assert.ErrorIs(t, err, ErrConnClosed)
	assert.Positive(t, ln.Stats().Refused)

	sc, err := ln.Accept(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, ln.Stats().Accepted)
	if conns[0].LocalAddr().(*net.UDPAddr).Port == sc.RemoteAddr().(*net.UDPAddr).Port {
		conns[0], conns[1] = conns[1], conns[0]
	}
	require.NoError(t, conns[0].CloseWithError(0, "")) // the one not accepted
	require.Eventually(t, func() bool { st := ln.Stats(); return st.Handshaking+st.Accepted < 2 }, 10*time.Second, 10*time.Millisecond)
	c, err := DialQUIC(ctx, addr, conf, QUICConfig{IdleTimeout: idle})
	require.NoError(t, err, "a slot is free again")
	defer c.CloseWithError(0, "")

	// Close refuses new connections and closes those never accepted; the
	// accepted one stays open.
	require.NoError(t, ln.Close())
	_, err = DialQUIC(ctx, addr, conf, QUICConfig{HandshakeTimeout: time.Second})
	require.Error(t, err)
	select {
	case <-sc.Done():
		t.Fatalf("an accepted connection closed with the listener: %v", context.Cause(QUICConn(sc).Context()))
	default:
	}
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 0 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, sc.CloseWithError(0, ""))
	require.Eventually(t, func() bool { return ln.Stats().Accepted == 0 }, 10*time.Second, 10*time.Millisecond)
	for _, c := range conns[1:] {
		c.CloseWithError(0, "")
	}
}

// TestQUICListenerAdmission drives the admission hooks quic-go calls for
// every new connection: the handshake cap, the Retry threshold, the
// connection cap, and release when a connection's context ends.
func TestQUICListenerAdmission(t *testing.T) {
	l := &QUICListener{maxConns: 3, maxPending: 2}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	assert.False(t, l.verifySource(addr), "no Retry while idle")

	ctx1, cancel1 := context.WithCancel(context.Background())
	c1, err := l.admit(ctx1, nil)
	require.NoError(t, err)
	assert.True(t, l.verifySource(addr), "Retry once half the handshake cap is used")
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	_, err = l.admit(ctx2, nil)
	require.NoError(t, err)
	_, err = l.admit(context.Background(), nil)
	require.Error(t, err, "over MaxHandshakes")
	assert.Equal(t, ListenerStats{Handshaking: 2, Refused: 1}, l.Stats())

	// An accepted connection leaves the handshake count but not the
	// connection count.
	st := c1.Value(connStateKey{}).(*connState)
	l.mu.Lock()
	st.accepted, l.pending, l.accepted = true, l.pending-1, l.accepted+1
	l.mu.Unlock()
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	_, err = l.admit(ctx3, nil)
	require.NoError(t, err)
	_, err = l.admit(context.Background(), nil)
	require.Error(t, err, "over MaxConns")
	assert.Equal(t, ListenerStats{Handshaking: 2, Accepted: 1, Refused: 2}, l.Stats())

	cancel1() // the accepted connection closes
	require.Eventually(t, func() bool { return l.Stats().Accepted == 0 }, 5*time.Second, time.Millisecond)
	cancel2() // a handshake fails
	require.Eventually(t, func() bool { return l.Stats().Handshaking == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, ListenerStats{Handshaking: 1, Refused: 2}, l.Stats())
}
