package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/bpmux/bp/transport/tcpframe"
)

// This file is the TCP binding's configuration, its dialler and its
// listener; tcp_conn.go is the connection, tcp_lane.go its lanes. SPEC.md,
// section 13, defines the wire format.
//
// One TLS 1.3 connection over TCP carries every lane, so the binding works
// where UDP is blocked, at a price QUIC does not pay: TCP delivers bytes in
// order, so one lost segment delays every lane behind it until it is
// retransmitted (head-of-line blocking). The binding keeps lanes
// independent in everything else: a fair send scheduler takes at most
// tcpframe.MaxData bytes from each lane with data in turn, and the reader
// never waits for one lane's reader.

// TCPConfig sizes a TCP binding connection under a bp/1 session. As with
// QUICConfig, bp/1's windows must govern: the lane buffers here merely
// bound what a peer may make this endpoint hold, and a well-behaved peer,
// held back by bp/1 credit, never fills them. No field may be negative.
type TCPConfig struct {
	// MaxLanes is the number of concurrent bidirectional lanes the peer
	// may open (as QUICConfig.MaxStreams); a lane the peer opened is
	// credited back once this endpoint is done with both of its
	// directions. Zero means 256.
	MaxLanes int64
	// MaxLaneBuffer is how many bytes one lane may hold received but not
	// yet read; a peer that sends more closes the connection with an
	// error (ABORT BUFFER_EXCEEDED). Size it as QUIC's stream window: the
	// mux's MaxWindow plus slack for frame headers. Zero means 17 MiB (the
	// default MaxWindow of 16 MiB plus 1 MiB).
	MaxLaneBuffer int
	// MaxConnBuffer is how many bytes all lanes together may hold
	// received but not yet read, as QUIC's connection window. Zero means
	// 65 MiB (the default session budget of 64 MiB plus 1 MiB).
	MaxConnBuffer int
	// LaneSendBuffer is how many bytes one lane may hold written but not
	// yet sent; a Write waits while it is full. Zero means 256 KiB.
	LaneSendBuffer int
	// IdleTimeout closes a connection that hears nothing from the peer for
	// this long; lanes then fail with an error matching both ErrConnClosed
	// and ErrIdleTimeout. A PING goes out every third of it. Zero means
	// 30 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TCP connect and the TLS handshake
	// together. Zero means 10 s.
	HandshakeTimeout time.Duration
	// MaxConns (listeners only) caps the connections a listener holds at
	// once, from the TCP accept until the connection closes. Over the
	// cap, a new connection is reset before the TLS handshake, and the
	// client's DialTCP fails with an error matching ErrConnRefused. Zero
	// means no cap.
	MaxConns int
	// MaxHandshakes (listeners only) caps the connections not yet returned
	// by Accept: those in the TLS handshake (each bounded in time by
	// HandshakeTimeout) and those waiting in the accept queue (at most
	// 32). Over it, new connections are refused like those over MaxConns.
	// Zero means no cap.
	MaxHandshakes int
	// SessionRate (listeners only) is the number of new connections a
	// second the listener admits, on average: a token bucket that holds
	// up to SessionBurst tokens, each new connection under the caps
	// taking one. A connection that finds none is reset before the TLS
	// handshake, like one over MaxConns, and counted in
	// ListenerStats.RefusedRate. A reset carries nothing, so there is no
	// retry-after hint: the client sees ErrConnRefused and must back off
	// by its own policy. Zero means no rate limit.
	SessionRate float64
	// SessionBurst (listeners only) is how many new connections the
	// listener admits at once, above SessionRate, after a quiet spell.
	// Zero means one second's worth of SessionRate (at least 1).
	SessionBurst int
}

// TCPConfig returns the TCP binding's configuration that matches c, as
// XQUICConfig does for x/net/quic: lane and connection buffers that hold
// what bp/1's window and budget allow (as QUIC's windows do, with the
// same slack), c's lane limit, idle and handshake timeouts, and listener
// caps and rate.
func (c QUICConfig) TCPConfig() TCPConfig {
	q := c.quicConfig()
	return TCPConfig{
		MaxLanes:         q.MaxIncomingStreams,
		MaxLaneBuffer:    int(q.MaxStreamReceiveWindow),
		MaxConnBuffer:    int(q.MaxConnectionReceiveWindow),
		IdleTimeout:      q.MaxIdleTimeout,
		HandshakeTimeout: q.HandshakeIdleTimeout,
		MaxConns:         c.MaxConns,
		MaxHandshakes:    c.MaxHandshakes,
		SessionRate:      c.SessionRate,
		SessionBurst:     c.SessionBurst,
	}
}

// Defaults of TCPConfig.
const (
	tcpDefaultLaneBuffer = 16<<20 + 1<<20
	tcpDefaultConnBuffer = 64<<20 + 1<<20
	tcpDefaultSendBuffer = 256 << 10
	// tcpAcceptQueue bounds the handshaken connections waiting for
	// Accept, as quic-go's accept queue does.
	tcpAcceptQueue = 32
	// tcpLinger bounds how long a closing connection tries to deliver
	// its CLOSE and waits for the peer to close in turn.
	tcpLinger = 2 * time.Second
)

func (c TCPConfig) validate() error {
	switch {
	case c.MaxLanes < 0:
		return fmt.Errorf("transport: TCPConfig.MaxLanes %d is negative", c.MaxLanes)
	case c.MaxLaneBuffer < 0:
		return fmt.Errorf("transport: TCPConfig.MaxLaneBuffer %d is negative", c.MaxLaneBuffer)
	case c.MaxConnBuffer < 0:
		return fmt.Errorf("transport: TCPConfig.MaxConnBuffer %d is negative", c.MaxConnBuffer)
	case c.LaneSendBuffer < 0:
		return fmt.Errorf("transport: TCPConfig.LaneSendBuffer %d is negative", c.LaneSendBuffer)
	case c.IdleTimeout < 0:
		return fmt.Errorf("transport: TCPConfig.IdleTimeout %v is negative", c.IdleTimeout)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("transport: TCPConfig.HandshakeTimeout %v is negative", c.HandshakeTimeout)
	case c.MaxConns < 0:
		return fmt.Errorf("transport: TCPConfig.MaxConns %d is negative", c.MaxConns)
	case c.MaxHandshakes < 0:
		return fmt.Errorf("transport: TCPConfig.MaxHandshakes %d is negative", c.MaxHandshakes)
	}
	return validateRate("TCPConfig", c.SessionRate, c.SessionBurst)
}

// tcpSettings is a TCPConfig with its defaults filled in.
type tcpSettings struct {
	maxLanes  uint64
	laneBuf   int
	connBuf   int
	sendBuf   int
	idle      time.Duration
	handshake time.Duration
}

func (c TCPConfig) settings() tcpSettings {
	s := tcpSettings{
		maxLanes:  uint64(c.MaxLanes),
		laneBuf:   c.MaxLaneBuffer,
		connBuf:   c.MaxConnBuffer,
		sendBuf:   c.LaneSendBuffer,
		idle:      c.IdleTimeout,
		handshake: c.HandshakeTimeout,
	}
	if s.maxLanes == 0 {
		s.maxLanes = 256
	}
	if s.laneBuf == 0 {
		s.laneBuf = tcpDefaultLaneBuffer
	}
	if s.connBuf == 0 {
		s.connBuf = tcpDefaultConnBuffer
	}
	if s.sendBuf == 0 {
		s.sendBuf = tcpDefaultSendBuffer
	}
	if s.idle == 0 {
		s.idle = 30 * time.Second
	}
	if s.handshake == 0 {
		s.handshake = 10 * time.Second
	}
	return s
}

// errNothingListening is the cause of a TCP connect the host refused.
var errNothingListening = errors.New("nothing listening (TCP connection refused)")

// errServerReset is the cause of a connection the server cut short with a
// TCP reset before the TLS handshake completed, as a TCPListener does over
// its caps or once closed.
var errServerReset = errors.New("server reset the connection before the TLS handshake completed")

// DialTCP opens a TLS 1.3 connection over TCP to addr (host:port) for a
// bp/1 session, for networks where QUIC's UDP does not pass. tlsConf must
// not be nil; ALPN and TLS 1.3 are set on a copy of it, and the server
// must negotiate bp/1. When the host has several addresses, each is tried
// in turn until one answers. A port on which nothing listens, or a server
// that refuses the connection (over its cap, or closed), gives an error
// matching ErrConnRefused; a server that does not answer within
// cfg.HandshakeTimeout, one matching ErrIdleTimeout, unless ctx ends
// first. The error names every address tried and what happened there.
func DialTCP(ctx context.Context, addr string, tlsConf *tls.Config, cfg TCPConfig) (Conn, error) {
	targets, err := prepareDial(ctx, "tcp", addr, tlsConf, cfg.validate)
	if err != nil {
		return nil, err
	}
	return dialTCPTargets(ctx, addr, targets, withALPN(tlsConf), cfg.settings())
}

// dialTCPTargets dials each of targets in turn (dialEach) over TCP.
func dialTCPTargets(ctx context.Context, addr string, targets []netip.AddrPort, conf *tls.Config, set tcpSettings) (Conn, error) {
	return dialEach(ctx, addr, targets, set.handshake, func(target netip.AddrPort) (Conn, error) {
		c, err := dialTCPOne(ctx, target, conf, set)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return c, nil
	})
}

// dialTCPOne connects to one address and runs the TLS handshake, both
// within set.handshake.
func dialTCPOne(ctx context.Context, target netip.AddrPort, conf *tls.Config, set tcpSettings) (*tcpConn, error) {
	hctx, cancel := context.WithTimeout(ctx, set.handshake)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(hctx, "tcp", target.String())
	if err != nil {
		return nil, dialError(ctx, hctx, err)
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, dialError(ctx, hctx, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		raw.Close()
		return nil, fmt.Errorf("%w: server negotiated ALPN %q, not %q", ErrConnClosed, p, ALPN)
	}
	return newTCPConn(raw, tc, true, set, nil), nil
}

// dialError classifies a failed connect or handshake: the caller's
// context, nothing listening, a refusal by the server, a timeout, or
// another failure.
func dialError(ctx, hctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: %w: %w", ErrConnRefused, errNothingListening, err)
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %w: %w: %w", ErrConnClosed, ErrConnRefused, errServerReset, err)
	case hctx.Err() != nil:
		return fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrIdleTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

// ListenTCP listens for bp/1 sessions over TLS 1.3 on the TCP address
// addr. tlsConf must not be nil and must carry a certificate (see
// ServerConfig); a client that does not negotiate bp/1 is turned away.
// cfg.MaxConns and cfg.MaxHandshakes bound what the listener holds,
// cfg.SessionRate and cfg.SessionBurst how fast it takes new connections
// in; Stats counts it.
func ListenTCP(addr string, tlsConf *tls.Config, cfg TCPConfig) (*TCPListener, error) {
	if err := checkTLS(tlsConf, true); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w: %w", addr, ErrInvalidConfig, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	l := &TCPListener{
		ln:         ln,
		conf:       withALPN(tlsConf),
		set:        cfg.settings(),
		maxConns:   cfg.MaxConns,
		maxPending: cfg.MaxHandshakes,
		rate:       newAdmission(cfg.SessionRate, cfg.SessionBurst),
		now:        time.Now,
		queue:      make(chan *tcpConn, tcpAcceptQueue),
		closing:    make(chan struct{}),
		shaking:    make(map[net.Conn]struct{}),
	}
	go l.acceptLoop()
	return l, nil
}

// TCPListener is a Listener for bp/1 over TLS and TCP that bounds and
// counts the connections it holds (TCPConfig.MaxConns,
// TCPConfig.MaxHandshakes) and limits the rate at which it takes new ones
// in (TCPConfig.SessionRate).
type TCPListener struct {
	ln         net.Listener
	conf       *tls.Config
	set        tcpSettings
	maxConns   int
	maxPending int
	now        func() time.Time // the admission bucket's clock
	queue      chan *tcpConn    // handshaken, waiting for Accept
	closing    chan struct{}    // closed by Close

	mu       sync.Mutex
	pending  int                   // admitted, not yet returned by Accept
	accepted int                   // returned by Accept, not yet closed
	refused  uint64                // refused at a cap or after Close
	rate     admission             // new connections a second
	refusedR uint64                // refused by rate
	closed   bool                  // Close was called
	shaking  map[net.Conn]struct{} // in the TLS handshake
}

// tcpConnState is a connection's place in the listener's counts, guarded
// by the listener's mu.
type tcpConnState struct{ accepted, closed bool }

func (l *TCPListener) acceptLoop() {
	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.closing:
				}
			}
			return // the listener is closed
		}
		backoff = 0
		if !l.admit(raw) {
			resetConn(raw)
			continue
		}
		go l.handshake(raw)
	}
}

// resetConn closes raw with a TCP reset: the client's handshake fails at
// once with ECONNRESET, which DialTCP reports as ErrConnRefused.
func resetConn(raw net.Conn) {
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	raw.Close()
}

// admit counts a new TCP connection in, or refuses it over a cap, over
// the rate or after Close.
func (l *TCPListener) admit(raw net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || (l.maxConns > 0 && l.pending+l.accepted >= l.maxConns) || (l.maxPending > 0 && l.pending >= l.maxPending) {
		l.refused++
		return false
	}
	if ok, _ := l.rate.admit(clockNow(l.now)); !ok {
		l.refusedR++ // a reset has no room for the wait
		return false
	}
	l.pending++
	l.shaking[raw] = struct{}{}
	return true
}

// handshake runs the TLS handshake of an admitted connection and queues
// the connection for Accept.
func (l *TCPListener) handshake(raw net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), l.set.handshake)
	defer cancel()
	tc := tls.Server(raw, l.conf)
	err := tc.HandshakeContext(ctx)
	if err == nil && tc.ConnectionState().NegotiatedProtocol != ALPN {
		err = errors.New("client did not offer ALPN bp/1")
	}
	l.mu.Lock()
	delete(l.shaking, raw)
	if err != nil {
		l.pending--
		l.mu.Unlock()
		raw.Close()
		return
	}
	st := &tcpConnState{}
	c := newTCPConn(raw, tc, false, l.set, func() { l.release(st) })
	c.listenerState = st
	full := false
	if !l.closed {
		select {
		case l.queue <- c:
		default:
			full = true
		}
	}
	closed := l.closed
	l.mu.Unlock()
	switch {
	case closed:
		c.abort(tcpframe.AbortRefused, "listener closed")
	case full:
		c.abort(tcpframe.AbortRefused, "accept queue full")
	}
}

// release forgets a closed connection.
func (l *TCPListener) release(st *tcpConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.closed {
		return
	}
	st.closed = true
	if st.accepted {
		l.accepted--
	} else {
		l.pending--
	}
}

// Accept waits for the next connection that has completed its handshake.
func (l *TCPListener) Accept(ctx context.Context) (Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("transport: accept: %w: nil context", ErrInvalidConfig)
	}
	for {
		select {
		case <-l.closing:
			return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
		default:
		}
		select {
		case c := <-l.queue:
			l.mu.Lock()
			st := c.listenerState
			ok := !st.closed && !l.closed
			if l.closed {
				l.mu.Unlock()
				c.abort(tcpframe.AbortRefused, "listener closed")
				return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
			}
			if ok {
				st.accepted = true
				l.pending--
				l.accepted++
			}
			l.mu.Unlock()
			if ok {
				return c, nil
			}
			// It closed while it waited: take the next.
		case <-ctx.Done():
			return nil, fmt.Errorf("transport: accept: %w", ctx.Err())
		case <-l.closing:
			return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
		}
	}
}

// Stats returns the listener's counts.
func (l *TCPListener) Stats() ListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ListenerStats{Handshaking: l.pending, Accepted: l.accepted, Refused: l.refused, RefusedRate: l.refusedR}
}

// Close stops listening: Accept returns net.ErrClosed, the TCP listener
// closes (so new clients are refused at once), handshakes in progress are
// reset, and connections waiting to be accepted are closed with ABORT
// REFUSED; their clients see errors matching ErrConnRefused. Connections
// already accepted stay open.
func (l *TCPListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	shaking := make([]net.Conn, 0, len(l.shaking))
	for raw := range l.shaking {
		shaking = append(shaking, raw)
	}
	l.mu.Unlock()
	close(l.closing)
	err := l.ln.Close()
	for _, raw := range shaking {
		resetConn(raw)
	}
	for {
		select {
		case c := <-l.queue:
			c.abort(tcpframe.AbortRefused, "listener closed")
		default:
			return err
		}
	}
}

// Addr returns the TCP address the listener is bound to.
func (l *TCPListener) Addr() net.Addr { return l.ln.Addr() }
