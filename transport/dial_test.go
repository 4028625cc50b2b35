package transport

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// closedUDPPort returns a loopback UDP address on which nothing listens.
func closedUDPPort(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	require.NoError(t, c.Close())
	return ap
}

func testListener(t *testing.T) (*QUICListener, string) {
	t.Helper()
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln, Fingerprint(cert.Certificate[0])
}

// TestDialClosedPort: nothing listening on the port is reported as
// refused at once (the kernel's ICMP port unreachable), as nc reports it,
// not after the handshake timeout.
func TestDialClosedPort(t *testing.T) {
	tlsConf, err := PinnedClientConfig("sha256:" + strings.Repeat("00", 32))
	require.NoError(t, err)
	addr := closedUDPPort(t)
	start := time.Now()
	_, err = DialQUIC(context.Background(), addr.String(), tlsConf, QUICConfig{HandshakeTimeout: 10 * time.Second})
	elapsed := time.Since(start)
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, "nothing listening")
	require.ErrorContains(t, err, addr.String())
	require.Less(t, elapsed, 2*time.Second, "a closed port took the handshake timeout: %v", err)
	t.Logf("%v after %v", err, elapsed.Round(time.Millisecond))
}

// TestDialClosedListener: a listener that stopped accepting (as a one-shot
// `bpcat listen` does once it has its session) refuses new clients at
// once, while its accepted connection goes on.
func TestDialClosedListener(t *testing.T) {
	ln, pin := testListener(t)
	tlsConf, err := PinnedClientConfig(pin)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err == nil {
			accepted <- c
		}
	}()
	first, err := DialQUIC(ctx, ln.Addr().String(), tlsConf, QUICConfig{})
	require.NoError(t, err)
	server := <-accepted
	require.NoError(t, ln.Close())
	_, err = ln.Accept(ctx)
	require.ErrorIs(t, err, net.ErrClosed)

	start := time.Now()
	_, err = DialQUIC(ctx, ln.Addr().String(), tlsConf, QUICConfig{HandshakeTimeout: 10 * time.Second})
	require.ErrorIs(t, err, ErrConnRefused)
	require.Less(t, time.Since(start), 2*time.Second)

	// The first connection still carries a lane.
	lane, err := first.OpenLane(ctx)
	require.NoError(t, err)
	_, err = lane.Write([]byte("still here"))
	require.NoError(t, err)
	got, err := server.AcceptLane(ctx)
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = got.Read(buf)
	require.NoError(t, err)
	first.CloseWithError(0, "")
	server.CloseWithError(0, "")
}

// TestDialTriesEveryAddress: of the addresses a name resolves to, the ones
// where nothing listens are passed over, and an error names every one
// tried.
func TestDialTriesEveryAddress(t *testing.T) {
	ln, pin := testListener(t)
	tlsConf, err := PinnedClientConfig(pin)
	require.NoError(t, err)
	live := ln.Addr().(*net.UDPAddr).AddrPort()
	dead1, dead2 := closedUDPPort(t), closedUDPPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		if c, err := ln.Accept(ctx); err == nil {
			c.CloseWithError(0, "")
		}
	}()
	qconf := QUICConfig{HandshakeTimeout: 5 * time.Second}.quicConfig()
	c, err := dialTargets(ctx, "example:1", []netip.AddrPort{dead1, live}, withALPN(tlsConf), qconf)
	require.NoError(t, err)
	c.CloseWithError(0, "")

	_, err = dialTargets(ctx, "example:1", []netip.AddrPort{dead1, dead2}, withALPN(tlsConf), qconf)
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, dead1.String()+": nothing listening")
	require.ErrorContains(t, err, dead2.String()+": nothing listening")
}
