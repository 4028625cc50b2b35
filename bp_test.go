package bp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// server is a bp/1 listener on 127.0.0.1 with an accept loop that echoes
// every stream and keeps its sessions until they end.
type server struct {
	ln   *bp.Listener
	cert tls.Certificate
	tls  *tls.Config // a client configuration pinning cert
}

func listen(t *testing.T, lc bp.ListenConfig) *server {
	t.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := lc.Listen("127.0.0.1:0", transport.ServerConfig(cert))
	require.NoError(t, err)
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { echo(ctx, sess) })
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return &server{ln: ln, cert: cert, tls: pin}
}

// echo echoes the streams of sess until it ends or ctx does.
func echo(ctx context.Context, sess *mux.Session) {
	defer sess.Close()
	for {
		s, err := sess.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			io.Copy(s, s)
			s.CloseWrite()
		}()
	}
}

// roundTrip sends msg on a new stream of sess and checks the echo.
func roundTrip(ctx context.Context, t *testing.T, sess *mux.Session, msg string) {
	t.Helper()
	s, err := sess.Open(ctx)
	require.NoError(t, err)
	defer s.Close()
	_, err = io.WriteString(s, msg)
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, msg, string(got))
}

// rawDial opens a bare QUIC connection that speaks no bp/1 at all: it
// never opens a control lane nor sends SETTINGS.
func rawDial(ctx context.Context, tr *quic.Transport, addr net.Addr, conf *tls.Config) (*quic.Conn, error) {
	conf = conf.Clone()
	conf.NextProtos = []string{transport.ALPN}
	conf.MinVersion = tls.VersionTLS13
	return tr.Dial(ctx, addr, conf, &quic.Config{MaxIdleTimeout: time.Minute, HandshakeIdleTimeout: 5 * time.Second})
}

func clientTransport(t *testing.T) *quic.Transport {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() {
		tr.Close()
		udp.Close()
	})
	return tr
}

func isRefused(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused && te.Remote
}

func TestInvalidArgumentsReturnErrors(t *testing.T) {
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	srv := transport.ServerConfig(cert)
	cli := &tls.Config{InsecureSkipVerify: true}
	badCfg := &mux.Config{DeadPeerTimeout: time.Second, KeepAliveInterval: 2 * time.Second}
	var nilCtx context.Context
	tests := []struct {
		name string
		call func() (any, error)
	}{
		{"Dial nil tls", func() (any, error) { return bp.Dial(context.Background(), "127.0.0.1:9", nil, nil) }},
		{"Dial nil context", func() (any, error) { return bp.Dial(nilCtx, "127.0.0.1:9", cli, nil) }},
		{"Dial invalid config", func() (any, error) { return bp.Dial(context.Background(), "127.0.0.1:9", cli, badCfg) }},
		{"Listen nil tls", func() (any, error) { return bp.Listen("127.0.0.1:0", nil, nil) }},
		{"Listen invalid config", func() (any, error) { return bp.Listen("127.0.0.1:0", srv, badCfg) }},
		{"ListenConfig nil tls", func() (any, error) { return bp.ListenConfig{}.Listen("127.0.0.1:0", nil) }},
		{"ListenConfig invalid session", func() (any, error) { return bp.ListenConfig{Session: badCfg}.Listen("127.0.0.1:0", srv) }},
		{"ListenConfig no certificate", func() (any, error) { return bp.ListenConfig{}.Listen("127.0.0.1:0", &tls.Config{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			require.NotPanics(t, func() { v, err = tt.call() })
			require.Error(t, err)
			assert.Nil(t, v)
			assert.ErrorIs(t, err, bp.ErrInvalidArgument)
		})
	}

	ln, err := bp.Listen("127.0.0.1:0", srv, nil)
	require.NoError(t, err)
	defer ln.Close()
	require.NotPanics(t, func() { _, err = ln.Accept(nilCtx) })
	assert.ErrorIs(t, err, bp.ErrInvalidArgument)
}

// TestListenerMaxSessions: with MaxSessions N, N+k connections: the extra
// k are refused with CONNECTION_REFUSED (not a timeout), bp.Dial sees
// transport.ErrConnRefused, and once sessions end new ones get in.
func TestListenerMaxSessions(t *testing.T) {
	const n, k = 4, 3
	srv := listen(t, bp.ListenConfig{MaxSessions: n})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr := clientTransport(t)

	var conns []*quic.Conn
	for range n {
		c, err := rawDial(ctx, tr, srv.ln.Addr(), srv.tls)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return srv.ln.Sessions() == n }, 5*time.Second, 10*time.Millisecond)
	for range k {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := rawDial(dctx, tr, srv.ln.Addr(), srv.tls)
		dcancel()
		require.Error(t, err)
		assert.True(t, isRefused(err), "refused, not timed out: %v", err)
	}
	_, err := bp.Dial(ctx, srv.ln.Addr().String(), srv.tls, nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, transport.ErrConnRefused)
	st := srv.ln.Stats()
	assert.Equal(t, n, st.Sessions)
	assert.Zero(t, st.Handshaking)
	assert.GreaterOrEqual(t, st.Refused, uint64(k+1))

	for _, c := range conns {
		require.NoError(t, c.CloseWithError(0, ""))
	}
	require.Eventually(t, func() bool { return srv.ln.Sessions() == 0 }, 5*time.Second, 10*time.Millisecond)
	for i := range n {
		sess, err := bp.Dial(ctx, srv.ln.Addr().String(), srv.tls, nil)
		require.NoError(t, err, "session %d after the others ended", i)
		defer sess.Close()
		roundTrip(ctx, t, sess, "again")
	}
}

// TestListenerSettingsFlood: 500 connections complete the handshake and
// never send SETTINGS. With a 1 s SettingsTimeout they are all closed,
// while an honest session keeps working and new ones are accepted; the
// heap stays bounded.
func TestListenerSettingsFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("500 connections")
	}
	const (
		flood    = 500
		parallel = 25
	)
	srv := listen(t, bp.ListenConfig{Session: &mux.Config{SettingsTimeout: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	honest, err := bp.Dial(ctx, srv.ln.Addr().String(), srv.tls, nil)
	require.NoError(t, err)
	defer honest.Close()
	roundTrip(ctx, t, honest, "before")
	base := heapInUse()

	tr := clientTransport(t)
	var (
		mu    sync.Mutex
		conns []*quic.Conn
		fails atomic.Int64
		peak  int
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	for range flood {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := rawDial(ctx, tr, srv.ln.Addr(), srv.tls)
			if err != nil {
				fails.Add(1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			peak = max(peak, srv.ln.Sessions())
			mu.Unlock()
		})
	}
	wg.Wait()
	assert.Zero(t, fails.Load(), "every flood connection completes its handshake")
	high := heapInUse()
	roundTrip(ctx, t, honest, "during")

	// The server closes every one of them with SETTINGS_ERROR.
	start := time.Now()
	require.Eventually(t, func() bool { return srv.ln.Sessions() == 1 }, 15*time.Second, 50*time.Millisecond,
		"sessions left: %d", srv.ln.Sessions())
	closedIn := time.Since(start)
	for _, c := range conns {
		select {
		case <-c.Context().Done():
		case <-ctx.Done():
			t.Fatal("a flood connection stayed open")
		}
		var ae *quic.ApplicationError
		if assert.ErrorAs(t, context.Cause(c.Context()), &ae) {
			assert.Equal(t, quic.ApplicationErrorCode(framing.SettingsError), ae.ErrorCode)
		}
	}
	conns = nil // let the client ends go before measuring again
	roundTrip(ctx, t, honest, "after")
	fresh, err := bp.Dial(ctx, srv.ln.Addr().String(), srv.tls, nil)
	require.NoError(t, err)
	defer fresh.Close()
	roundTrip(ctx, t, fresh, "fresh")
	after := heapInUse()

	perConn := (int64(high) - int64(base)) / flood
	t.Logf("heap in use: %d KiB before, %d KiB with %d bare connections (%d B each, both ends in this process; peak %d sessions), %d KiB after; closed within %v",
		base>>10, high>>10, flood, perConn, peak, after>>10, closedIn.Round(time.Millisecond))
	// Generous: both ends of every connection live in this process.
	assert.Less(t, perConn, int64(1<<20), "heap per connection")
	assert.Less(t, int64(after)-int64(base), int64(64<<20), "heap after the flood")
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestListenerIdleSessionTimeout: a session with no stream for the
// listener's IdleSessionTimeout is ended gracefully, with NO_ERROR.
func TestListenerIdleSessionTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	srv := listen(t, bp.ListenConfig{IdleSessionTimeout: idle})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := bp.Dial(ctx, srv.ln.Addr().String(), srv.tls, nil)
	require.NoError(t, err)
	defer sess.Close()
	roundTrip(ctx, t, sess, "hello")
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the idle session stayed open (idle timeout %v)", idle)
	}
	var se *mux.SessionError
	require.ErrorAs(t, sess.Err(), &se)
	assert.Equal(t, framing.NoError, se.Code, "a graceful end: %v", sess.Err())
	require.Eventually(t, func() bool { return srv.ln.Sessions() == 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestDialVanishedPeer: a server that vanishes (its packets stop) ends a
// bp.Dial session within DeadPeerTimeout, with mux.ErrPeerUnreachable.
func TestDialVanishedPeer(t *testing.T) {
	const dead = time.Second
	srv := listen(t, bp.ListenConfig{})
	fw := newForwarder(t, srv.ln.Addr().(*net.UDPAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := bp.Dial(ctx, fw.addr().String(), srv.tls, &mux.Config{DeadPeerTimeout: dead})
	require.NoError(t, err)
	defer sess.Close()
	roundTrip(ctx, t, sess, "hello")

	fw.stop.Store(true)
	start := time.Now()
	select {
	case <-sess.Done():
	case <-time.After(dead + 5*time.Second):
		t.Fatalf("the session outlived its peer by %v", time.Since(start))
	}
	gone := time.Since(start)
	t.Logf("noticed the vanished peer after %v (DeadPeerTimeout %v)", gone.Round(time.Millisecond), dead)
	assert.ErrorIs(t, sess.Err(), mux.ErrPeerUnreachable)
	assert.Less(t, gone, dead+2*time.Second)
}

// forwarder relays UDP datagrams between one client and a server until
// stop is set; then it drops everything, as a blackholed path would.
type forwarder struct {
	front *net.UDPConn // the client talks to this
	back  *net.UDPConn // connected to the server
	stop  atomic.Bool
}

func newForwarder(t *testing.T, server *net.UDPAddr) *forwarder {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	back, err := net.DialUDP("udp", nil, server)
	require.NoError(t, err)
	f := &forwarder{front: front, back: back}
	var client atomic.Pointer[net.UDPAddr]
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(from)
			if !f.stop.Load() {
				back.Write(buf[:n])
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			if c := client.Load(); c != nil && !f.stop.Load() {
				front.WriteToUDP(buf[:n], c)
			}
		}
	})
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return f
}

func (f *forwarder) addr() net.Addr { return f.front.LocalAddr() }
