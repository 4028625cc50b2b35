package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bpmux/bp/transport/tcpframe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Error mapping of the TCP binding: the same sentinels as the QUIC
// binding's, from refusals, closes, timeouts and broken peers. A raw peer
// speaks the frames of SPEC.md section 13 by hand.

// rawPeer is one end of a connection driven by hand.
type rawPeer struct {
	t  *testing.T
	tc *tls.Conn
	br *bufio.Reader
}

func newRawPeer(t *testing.T, tc *tls.Conn) *rawPeer {
	t.Cleanup(func() { tc.NetConn().Close() })
	return &rawPeer{t: t, tc: tc, br: bufio.NewReaderSize(tc, tcpReadBuffer)}
}

// rawClient connects to addr with TLS and ALPN bp/1, and no binding.
func rawClient(t *testing.T, addr string) *rawPeer {
	t.Helper()
	d := tls.Dialer{Config: withALPN(&tls.Config{InsecureSkipVerify: true})}
	c, err := d.DialContext(tcpCtx(t), "tcp", addr)
	require.NoError(t, err)
	return newRawPeer(t, c.(*tls.Conn))
}

// rawServer accepts one TLS connection with ALPN bp/1 and hands it over.
func rawServer(t *testing.T) (string, tcpPin, <-chan *rawPeer) {
	t.Helper()
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", withALPN(ServerConfig(cert)))
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	peers := make(chan *rawPeer, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := c.(*tls.Conn)
		if tc.HandshakeContext(context.Background()) == nil {
			peers <- newRawPeer(t, tc)
		}
	}()
	return ln.Addr().String(), tcpPin(Fingerprint(cert.Certificate[0])), peers
}

func (p *rawPeer) send(frames ...tcpframe.Frame) {
	p.t.Helper()
	var b []byte
	for _, f := range frames {
		b = tcpframe.Append(b, f)
	}
	_, err := p.tc.Write(b)
	require.NoError(p.t, err)
}

func (p *rawPeer) sendRaw(b []byte) {
	p.t.Helper()
	_, err := p.tc.Write(b)
	require.NoError(p.t, err)
}

// expectEnd reads frames until a CLOSE or ABORT and returns it.
func (p *rawPeer) expectEnd() tcpframe.Frame {
	p.t.Helper()
	p.tc.SetReadDeadline(time.Now().Add(tcpTestTimeout))
	for range 100000 {
		f, err := readTCPFrame(p.br)
		require.NoError(p.t, err)
		if f.Type == tcpframe.TypeData {
			_, err = p.br.Discard(f.Length)
			require.NoError(p.t, err)
		}
		if f.Type == tcpframe.TypeClose || f.Type == tcpframe.TypeAbort {
			return f
		}
	}
	p.t.Fatal("no CLOSE or ABORT")
	return tcpframe.Frame{}
}

func closedTCPPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestTCPDialClosedPort(t *testing.T) {
	addr := closedTCPPort(t)
	_, err := tcpPin("sha256:"+strings.Repeat("00", 32)).dial(t, addr, TCPConfig{})
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, "nothing listening")
	require.ErrorContains(t, err, addr)

	// Every address is tried, and each is named.
	live, pin := tcpListen(t, TCPConfig{})
	go func() {
		if c, err := live.Accept(tcpCtx(t)); err == nil {
			c.CloseWithError(0, "")
		}
	}()
	conf, err := PinnedClientConfig(string(pin))
	require.NoError(t, err)
	dead1, dead2 := netip.MustParseAddrPort(closedTCPPort(t)), netip.MustParseAddrPort(closedTCPPort(t))
	c, err := dialTCPTargets(tcpCtx(t), "example:1", []netip.AddrPort{dead1, netip.MustParseAddrPort(live.Addr().String())}, withALPN(conf), TCPConfig{}.settings())
	require.NoError(t, err)
	c.CloseWithError(0, "")
	_, err = dialTCPTargets(tcpCtx(t), "example:1", []netip.AddrPort{dead1, dead2}, withALPN(conf), TCPConfig{}.settings())
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, dead1.String()+": nothing listening")
	require.ErrorContains(t, err, dead2.String()+": nothing listening")
}

func TestTCPInvalidArguments(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	client := &tls.Config{InsecureSkipVerify: true}
	tls12 := ServerConfig(cert)
	tls12.MaxVersion = tls.VersionTLS12
	tests := []struct {
		name   string
		ctx    context.Context
		tls    *tls.Config
		cfg    TCPConfig
		server bool
	}{
		{name: "dial nil tls", ctx: context.Background()},
		{name: "dial nil context", tls: client},
		{name: "dial TLS 1.2 only", ctx: context.Background(), tls: &tls.Config{MaxVersion: tls.VersionTLS12}},
		{name: "dial negative idle", ctx: context.Background(), tls: client, cfg: TCPConfig{IdleTimeout: -1}},
		{name: "dial negative lanes", ctx: context.Background(), tls: client, cfg: TCPConfig{MaxLanes: -1}},
		{name: "dial negative lane buffer", ctx: context.Background(), tls: client, cfg: TCPConfig{MaxLaneBuffer: -1}},
		{name: "dial negative conn buffer", ctx: context.Background(), tls: client, cfg: TCPConfig{MaxConnBuffer: -1}},
		{name: "dial negative send buffer", ctx: context.Background(), tls: client, cfg: TCPConfig{LaneSendBuffer: -1}},
		{name: "listen nil tls", server: true},
		{name: "listen no certificate", server: true, tls: &tls.Config{}},
		{name: "listen empty certificate", server: true, tls: ServerConfig(tls.Certificate{})},
		{name: "listen TLS 1.2 only", server: true, tls: tls12},
		{name: "listen negative handshake timeout", server: true, tls: ServerConfig(cert), cfg: TCPConfig{HandshakeTimeout: -time.Second}},
		{name: "listen negative MaxConns", server: true, tls: ServerConfig(cert), cfg: TCPConfig{MaxConns: -1}},
		{name: "listen negative MaxHandshakes", server: true, tls: ServerConfig(cert), cfg: TCPConfig{MaxHandshakes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() {
				if tt.server {
					var ln *TCPListener
					ln, err = ListenTCP("127.0.0.1:0", tt.tls, tt.cfg)
					assert.Nil(t, ln)
				} else {
					var c Conn
					c, err = DialTCP(tt.ctx, "127.0.0.1:9", tt.tls, tt.cfg)
					assert.Nil(t, c)
				}
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

// TestTCPALPNRequired: a server that does not negotiate bp/1 is refused
// by DialTCP, and a client that does not offer it by the listener.
func TestTCPALPNRequired(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	plain, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	require.NoError(t, err)
	defer plain.Close()
	go func() {
		if c, err := plain.Accept(); err == nil {
			c.(*tls.Conn).Handshake()
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	_, err = tcpPin(Fingerprint(cert.Certificate[0])).dial(t, plain.Addr().String(), TCPConfig{})
	require.ErrorIs(t, err, ErrConnClosed)
	require.ErrorContains(t, err, "ALPN")

	ln, _ := tcpListen(t, TCPConfig{})
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil { // the server saw no ALPN and hangs up
		c.SetReadDeadline(time.Now().Add(tcpTestTimeout))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	require.Error(t, err)
	require.Eventually(t, func() bool { return ln.Stats() == ListenerStats{} }, tcpTestTimeout, time.Millisecond)
}

// TestTCPIdleTimeout: a peer that goes silent ends the connection after
// the idle timeout, with an error matching both ErrConnClosed and
// ErrIdleTimeout, on blocked and later calls alike; on both sides.
func TestTCPIdleTimeout(t *testing.T) {
	tcpCheckNoLeak(t)
	const idle = 300 * time.Millisecond
	t.Run("server", func(t *testing.T) {
		ln, _ := tcpListen(t, TCPConfig{IdleTimeout: idle})
		p := rawClient(t, ln.Addr().String())
		p.send(tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: 4})
		p.sendRaw(tcpframe.AppendData(nil, 0, []byte("x")))
		sc, err := ln.Accept(tcpCtx(t))
		require.NoError(t, err)
		lane, err := sc.AcceptLane(tcpCtx(t))
		require.NoError(t, err)
		buf := make([]byte, 1)
		_, err = io.ReadFull(lane, buf)
		require.NoError(t, err)
		require.Equal(t, 1, ln.Stats().Accepted)

		_, err = lane.Read(buf) // blocks until the idle timeout
		require.ErrorIs(t, err, ErrConnClosed)
		require.ErrorIs(t, err, ErrIdleTimeout)
		_, err = sc.AcceptLane(tcpCtx(t))
		require.ErrorIs(t, err, ErrIdleTimeout)
		_, err = sc.OpenLane(tcpCtx(t))
		require.ErrorIs(t, err, ErrIdleTimeout)
		<-sc.Done()
		require.Equal(t, 0, ln.Stats().Accepted)
	})
	t.Run("client", func(t *testing.T) {
		addr, pin, peers := rawServer(t)
		c, err := pin.dial(t, addr, TCPConfig{IdleTimeout: idle})
		require.NoError(t, err)
		<-peers
		// The silent server never grants a lane: OpenLane waits until
		// the idle timeout ends the connection.
		_, err = c.OpenLane(tcpCtx(t))
		require.ErrorIs(t, err, ErrConnClosed)
		require.ErrorIs(t, err, ErrIdleTimeout)
	})
}

// TestTCPKeepaliveHoldsIdleConn: PINGs keep a connection with nothing to
// say alive well past its idle timeout.
func TestTCPKeepaliveHoldsIdleConn(t *testing.T) {
	const idle = 150 * time.Millisecond
	c, s := tcpPair(t, TCPConfig{IdleTimeout: idle}, TCPConfig{IdleTimeout: idle})
	time.Sleep(5 * idle)
	openAccept(t, tcpCtx(t), c, s, "alive")
}

// TestTCPListenerCaps: over MaxConns, a new connection is refused with an
// error matching ErrConnRefused; once one closes, a new one gets in; after
// Close, new clients are refused and the accepted connection stays open.
func TestTCPListenerCaps(t *testing.T) {
	tcpCheckNoLeak(t)
	ln, pin := tcpListen(t, TCPConfig{MaxConns: 2})
	addr := ln.Addr().String()
	var conns []Conn
	for range 2 {
		c, err := pin.dial(t, addr, TCPConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { c.CloseWithError(0, "") })
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 2 }, tcpTestTimeout, time.Millisecond)
	_, err := pin.dial(t, addr, TCPConfig{})
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, "refused")
	require.Equal(t, uint64(1), ln.Stats().Refused)

	sc, err := ln.Accept(tcpCtx(t))
	require.NoError(t, err)
	assert.Equal(t, ListenerStats{Handshaking: 1, Accepted: 1, Refused: 1}, ln.Stats())
	if conns[0].LocalAddr().String() == sc.RemoteAddr().String() {
		conns[0], conns[1] = conns[1], conns[0]
	}
	require.NoError(t, conns[0].CloseWithError(0, "")) // the one not accepted
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 0 }, tcpTestTimeout, time.Millisecond)
	c3, err := pin.dial(t, addr, TCPConfig{})
	require.NoError(t, err, "a slot is free again")
	defer c3.CloseWithError(0, "")

	// Close: the connection waiting for Accept (its server side running:
	// it answered a PING) is closed with ABORT REFUSED, new clients are
	// refused, the accepted one stays open.
	require.Eventually(t, func() bool { return c3.RTT() > 0 }, tcpTestTimeout, time.Millisecond)
	require.NoError(t, ln.Close())
	_, err = c3.AcceptLane(tcpCtx(t))
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorContains(t, err, "listener closed")
	_, err = pin.dial(t, addr, TCPConfig{})
	require.ErrorIs(t, err, ErrConnRefused)
	_, err = ln.Accept(tcpCtx(t))
	require.ErrorIs(t, err, net.ErrClosed)
	select {
	case <-sc.Done():
		t.Fatal("an accepted connection closed with the listener")
	default:
	}
	openAccept(t, tcpCtx(t), conns[1], sc, "still here")
	require.NoError(t, sc.CloseWithError(0, ""))
	require.Eventually(t, func() bool { return ln.Stats().Accepted == 0 }, tcpTestTimeout, time.Millisecond)
}

// TestTCPListenerMaxHandshakes: connections that never finish their
// handshake hold MaxHandshakes; beyond it a client is refused, and a slot
// frees when one of them goes.
func TestTCPListenerMaxHandshakes(t *testing.T) {
	ln, pin := tcpListen(t, TCPConfig{MaxHandshakes: 1})
	addr := ln.Addr().String()
	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 1 }, tcpTestTimeout, time.Millisecond)
	_, err = pin.dial(t, addr, TCPConfig{})
	require.ErrorIs(t, err, ErrConnRefused)
	require.ErrorIs(t, err, ErrConnClosed)

	require.NoError(t, silent.Close())
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 0 }, tcpTestTimeout, time.Millisecond)
	c, err := pin.dial(t, addr, TCPConfig{})
	require.NoError(t, err)
	c.CloseWithError(0, "")
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 0 }, tcpTestTimeout, time.Millisecond)

	// A handshake in progress when the listener closes is reset.
	silent, err = net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 1 }, tcpTestTimeout, time.Millisecond)
	require.NoError(t, ln.Close())
	silent.SetReadDeadline(time.Now().Add(tcpTestTimeout))
	_, err = silent.Read(make([]byte, 1))
	require.Error(t, err)
	require.Eventually(t, func() bool { return ln.Stats().Handshaking == 0 }, tcpTestTimeout, time.Millisecond)
}

// TestTCPBufferBounds: a peer that sends past MaxLaneBuffer on one lane,
// or past MaxConnBuffer in all, has its connection closed with ABORT
// BUFFER_EXCEEDED; both sides see ErrConnClosed.
func TestTCPBufferBounds(t *testing.T) {
	tcpCheckNoLeak(t)
	for _, tt := range []struct {
		name   string
		cfg    TCPConfig
		lanes  int
		perLan int
		want   string
	}{
		{name: "lane", cfg: TCPConfig{MaxLaneBuffer: 64 << 10}, lanes: 1, perLan: 1 << 20, want: "lane 0 would hold"},
		{name: "connection", cfg: TCPConfig{MaxLaneBuffer: 64 << 10, MaxConnBuffer: 100 << 10}, lanes: 3, perLan: 48 << 10, want: "the lanes would hold"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, s := tcpPair(t, TCPConfig{}, tt.cfg)
			for range tt.lanes {
				l, err := c.OpenLane(tcpCtx(t))
				require.NoError(t, err)
				go l.Write(make([]byte, tt.perLan)) // never read by the server
			}
			<-s.Done()
			_, err := s.AcceptLane(tcpCtx(t))
			require.ErrorIs(t, err, ErrConnClosed)
			require.ErrorContains(t, err, "BUFFER_EXCEEDED")
			require.ErrorContains(t, err, tt.want)
			<-c.Done()
			_, err = c.AcceptLane(tcpCtx(t))
			require.ErrorIs(t, err, ErrConnClosed)
			require.ErrorContains(t, err, "closed by peer: BUFFER_EXCEEDED")
		})
	}
}

// TestTCPHeldWrite: with a peer that reads nothing, Writes block once the
// socket and the lane's send buffer are full; the write deadline,
// CancelWrite, the peer's LANE_STOP and CloseWithError each unblock one at
// once.
func TestTCPHeldWrite(t *testing.T) {
	tcpCheckNoLeak(t)
	addr, pin, peers := rawServer(t)
	c, err := pin.dial(t, addr, TCPConfig{LaneSendBuffer: 64 << 10})
	require.NoError(t, err)
	defer c.CloseWithError(0, "")
	p := <-peers
	p.send(tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: 8})
	ctx := tcpCtx(t)
	huge := make([]byte, 256<<20)

	// The deadline.
	l0, err := c.OpenLane(ctx)
	require.NoError(t, err)
	errc := make(chan error, 1)
	ns := make(chan int, 1)
	go func() {
		n, err := l0.Write(huge)
		ns <- n
		errc <- err
	}()
	waitHeld(t, c)
	require.NoError(t, l0.SetWriteDeadline(time.Now()))
	require.ErrorIs(t, <-errc, os.ErrDeadlineExceeded)
	require.Less(t, <-ns, len(huge))

	// CancelWrite, from another goroutine.
	l1, err := c.OpenLane(ctx)
	require.NoError(t, err)
	go func() { _, err := l1.Write(huge); errc <- err }()
	waitQueued(t, c, l1)
	l1.CancelWrite(5)
	requireLaneError(t, <-errc, 5, false)

	// The peer's LANE_STOP (sent by a peer that still reads nothing).
	l2, err := c.OpenLane(ctx)
	require.NoError(t, err)
	go func() { _, err := l2.Write(huge); errc <- err }()
	waitQueued(t, c, l2)
	p.send(tcpframe.Frame{Type: tcpframe.TypeStop, Lane: l2.(*tcpLane).id, Code: 6})
	requireLaneError(t, <-errc, 6, true)

	// CloseWithError.
	l3, err := c.OpenLane(ctx)
	require.NoError(t, err)
	go func() { _, err := l3.Write(huge); errc <- err }()
	waitQueued(t, c, l3)
	require.NoError(t, c.CloseWithError(9, "done"))
	requireAppError(t, <-errc, 9, false)
}

// waitHeld waits until the writer of c is stuck: some lane's send buffer
// stays full.
func waitHeld(t *testing.T, c Conn) {
	t.Helper()
	tc := c.(*tcpConn)
	require.Eventually(t, func() bool {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		for _, l := range tc.lanes {
			if l.out.Len() == tc.set.sendBuf {
				return true
			}
		}
		return false
	}, tcpTestTimeout, time.Millisecond)
}

// waitQueued waits until l's send buffer is full.
func waitQueued(t *testing.T, c Conn, l Lane) {
	t.Helper()
	tc, tl := c.(*tcpConn), l.(*tcpLane)
	require.Eventually(t, func() bool {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return tl.out.Len() == tc.set.sendBuf
	}, tcpTestTimeout, time.Millisecond)
}

// TestTCPBrokenPeer: frames that break the binding's rules close the
// connection with the ABORT code SPEC.md section 13 gives.
func TestTCPBrokenPeer(t *testing.T) {
	tcpCheckNoLeak(t)
	tests := []struct {
		name string
		send []byte
		code uint64
	}{
		{"unknown frame type", []byte{0x3f, 0, 0}, tcpframe.AbortFrameError},
		{"LANE_DATA above 16384 bytes", []byte{0x00, 0x00, 0x80, 0x00, 0x40, 0x01}, tcpframe.AbortFrameError},
		{"lane beyond MAX_LANES", tcpframe.AppendData(nil, tcpframe.LaneID(4, false, false), []byte("x")), tcpframe.AbortLaneLimit},
		{"lane of the server's that it never opened", tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeFin, Lane: 1}), tcpframe.AbortFrameError},
		{"second control lane", tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeFin, Lane: 6}), tcpframe.AbortFrameError},
		{"LANE_STOP on its own control lane", tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeStop, Lane: 2}), tcpframe.AbortFrameError},
		{"LANE_DATA on the server's control lane", tcpframe.AppendData(nil, 3, []byte("x")), tcpframe.AbortFrameError},
		{"LANE_DATA after LANE_FIN", append(tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeFin, Lane: 0}), tcpframe.AppendData(nil, 0, []byte("x"))...), tcpframe.AbortFrameError},
		{"MAX_LANES lowered", append(tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: 5}), tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: 4})...), tcpframe.AbortFrameError},
	}
	ln, _ := tcpListen(t, TCPConfig{MaxLanes: 4})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := rawClient(t, ln.Addr().String())
			sc, err := ln.Accept(tcpCtx(t))
			require.NoError(t, err)
			p.sendRaw(tt.send)
			f := p.expectEnd()
			require.Equal(t, tcpframe.TypeAbort, f.Type)
			require.Equal(t, tt.code, f.Code, "reason: %s", f.Reason)
			<-sc.Done()
			_, err = sc.AcceptControl(tcpCtx(t))
			require.ErrorIs(t, err, ErrConnClosed)
		})
	}
}
