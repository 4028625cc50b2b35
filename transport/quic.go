package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// QUICConfig sizes the QUIC connection under a bp/1 session. QUIC's own
// flow control must never be the limit that governs: bp/1's windows are.
// The lanes are read eagerly, so QUIC's receive buffers hold only data in
// transit, and the windows here merely need to exceed what bp/1 can have
// in flight. No field may be negative.
type QUICConfig struct {
	// MaxStreamWindow bounds the bp/1 window of one stream (the mux's
	// MaxWindow). Zero means 16 MiB.
	MaxStreamWindow uint64
	// SessionBudget bounds the sum of bp/1 windows (the mux's budget).
	// Zero means 64 MiB.
	SessionBudget uint64
	// MaxStreams is the number of concurrent lanes the peer may open. Zero
	// means 256.
	MaxStreams int64
	// IdleTimeout closes a connection that hears nothing from the peer for
	// this long; lanes then fail with an error matching both ErrConnClosed
	// and ErrIdleTimeout. QUIC sends its own keepalive every third of it.
	// Zero means 30 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC handshake. Zero means 10 s.
	HandshakeTimeout time.Duration
	// MaxConns (listeners only) caps the connections a listener holds at
	// once, counted from the first packet of a connection's handshake
	// until the connection closes. At the cap, a new connection is
	// refused with QUIC's CONNECTION_REFUSED before quic-go builds any
	// state for it. Zero means no cap.
	MaxConns int
	// MaxHandshakes (listeners only) caps the connections not yet returned
	// by Accept: those in the QUIC handshake (each bounded in time by
	// HandshakeTimeout) and those waiting in quic-go's accept queue (at
	// most 32). quic-go itself bounds neither the number of handshakes in
	// progress nor their memory. Once half the cap is in use, a client
	// must first prove its address with a QUIC Retry, so that spoofed
	// packets cannot take the other half; at the cap, new connections are
	// refused like those over MaxConns. Zero means no cap.
	MaxHandshakes int
	// SessionRate (listeners only) is the number of new connections a
	// second the listener admits, on average: a token bucket that holds
	// up to SessionBurst tokens, each new connection under the caps
	// taking one. A connection that finds none is refused like one over
	// MaxConns, before quic-go builds any state for it, and counted in
	// ListenerStats.RefusedRate; so is the rest of its first flight
	// (a second Initial packet from the same address within a few
	// milliseconds), which would otherwise take a token for a connection
	// whose client has given up. QUIC's CONNECTION_REFUSED carries no
	// reason and so no retry-after hint: the client sees ErrConnRefused
	// and must back off by its own policy. Zero means no rate limit.
	SessionRate float64
	// SessionBurst (listeners only) is how many new connections the
	// listener admits at once, above SessionRate, after a quiet spell.
	// Zero means one second's worth of SessionRate (at least 1).
	SessionBurst int
	// QlogDir, if set, makes QUIC write a qlog trace of every connection
	// into this directory (created if missing), one JSON-SEQ file named
	// <odcid>_<client|server>.sqlog per connection; the bp/1 session adds
	// its own events to it (see QlogConn). Empty means $QLOGDIR, and no
	// trace if that is unset too.
	QlogDir string
}

// quicSlack is added to QUIC's windows for frame headers and control
// frames that travel on lanes besides the bytes bp/1 credit counts.
const quicSlack = 1 << 20

// validate reports a field that quic-go would reject or misread.
func (c QUICConfig) validate() error {
	switch {
	case c.MaxStreams < 0:
		return fmt.Errorf("transport: QUICConfig.MaxStreams %d is negative", c.MaxStreams)
	case c.IdleTimeout < 0:
		return fmt.Errorf("transport: QUICConfig.IdleTimeout %v is negative", c.IdleTimeout)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("transport: QUICConfig.HandshakeTimeout %v is negative", c.HandshakeTimeout)
	case c.MaxConns < 0:
		return fmt.Errorf("transport: QUICConfig.MaxConns %d is negative", c.MaxConns)
	case c.MaxHandshakes < 0:
		return fmt.Errorf("transport: QUICConfig.MaxHandshakes %d is negative", c.MaxHandshakes)
	}
	if err := validateRate("QUICConfig", c.SessionRate, c.SessionBurst); err != nil {
		return err
	}
	if fi, err := os.Stat(c.QlogDir); c.QlogDir != "" && err == nil && !fi.IsDir() {
		return fmt.Errorf("transport: QUICConfig.QlogDir %s is not a directory", c.QlogDir)
	}
	return nil
}

func (c QUICConfig) quicConfig() *quic.Config {
	win := c.MaxStreamWindow
	if win == 0 {
		win = 16 << 20
	}
	budget := c.SessionBudget
	if budget == 0 {
		budget = 64 << 20
	}
	streams := c.MaxStreams
	if streams == 0 {
		streams = 256
	}
	idle := c.IdleTimeout
	if idle == 0 {
		idle = 30 * time.Second
	}
	hs := c.HandshakeTimeout
	if hs == 0 {
		hs = 10 * time.Second
	}
	// Both QUIC windows start at their maximum: auto-tuning them would only
	// add a second, slower ramp under ours.
	streamWin := win + quicSlack
	connWin := max(budget, win) + quicSlack
	return &quic.Config{
		HandshakeIdleTimeout:           hs,
		MaxIdleTimeout:                 idle,
		InitialStreamReceiveWindow:     streamWin,
		MaxStreamReceiveWindow:         streamWin,
		InitialConnectionReceiveWindow: connWin,
		MaxConnectionReceiveWindow:     connWin,
		MaxIncomingStreams:             streams,
		MaxIncomingUniStreams:          1, // the peer's control lane
		KeepAlivePeriod:                idle / 3,
		Tracer:                         qlogTracer(qlogDir(c.QlogDir)),
	}
}

// ErrInvalidConfig is returned (wrapped) by the Dial and Listen functions
// of every binding (DialQUIC, DialXQUIC, DialTCP, ...) for arguments they
// cannot use: a nil context or TLS configuration, a server configuration
// without a certificate, a TLS version cap below 1.3, or a negative
// QUICConfig or TCPConfig field.
var ErrInvalidConfig = errors.New("transport: invalid configuration")

// checkTLS reports whether conf can carry bp/1, which needs TLS 1.3.
func checkTLS(conf *tls.Config, server bool) error {
	switch {
	case conf == nil:
		return fmt.Errorf("%w: nil *tls.Config", ErrInvalidConfig)
	case conf.MaxVersion != 0 && conf.MaxVersion < tls.VersionTLS13:
		return fmt.Errorf("%w: tls.Config.MaxVersion 0x%x is below TLS 1.3", ErrInvalidConfig, conf.MaxVersion)
	case server && conf.GetCertificate == nil && conf.GetConfigForClient == nil:
		if len(conf.Certificates) == 0 {
			return fmt.Errorf("%w: server tls.Config has no certificate", ErrInvalidConfig)
		}
		for i, c := range conf.Certificates {
			if len(c.Certificate) == 0 || c.PrivateKey == nil {
				return fmt.Errorf("%w: server tls.Config.Certificates[%d] is empty", ErrInvalidConfig, i)
			}
		}
	}
	return nil
}

// withALPN returns a copy of conf that offers bp/1 and requires TLS 1.3.
func withALPN(conf *tls.Config) *tls.Config {
	conf = conf.Clone()
	conf.NextProtos = []string{ALPN}
	conf.MinVersion = tls.VersionTLS13
	return conf
}

// ListenQUIC listens for bp/1 sessions over QUIC on the UDP address addr.
// tlsConf must not be nil and must carry a certificate (see
// ServerConfig). cfg.MaxConns and cfg.MaxHandshakes bound what the
// listener holds, cfg.SessionRate and cfg.SessionBurst how fast it takes
// new connections in; Stats counts it.
func ListenQUIC(addr string, tlsConf *tls.Config, cfg QUICConfig) (*QUICListener, error) {
	if err := checkTLS(tlsConf, true); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w: %w", addr, ErrInvalidConfig, err)
	}
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	ql := &QUICListener{
		udp:        udp,
		maxConns:   cfg.MaxConns,
		maxPending: cfg.MaxHandshakes,
		rate:       newAdmission(cfg.SessionRate, cfg.SessionBurst),
		now:        time.Now,
	}
	ql.closing, ql.stopAccepts = context.WithCancel(context.Background())
	ql.tr = &quic.Transport{
		Conn:                udp,
		ConnContext:         ql.admit,
		VerifySourceAddress: ql.verifySource,
	}
	l, err := ql.tr.Listen(withALPN(tlsConf), cfg.quicConfig())
	if err != nil {
		ql.tr.Close()
		udp.Close()
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	ql.l = l
	return ql, nil
}

// QUICListener is a Listener for bp/1 over QUIC that bounds and counts the
// connections it holds (QUICConfig.MaxConns, QUICConfig.MaxHandshakes)
// and the rate at which it takes new ones in (QUICConfig.SessionRate).
type QUICListener struct {
	l          *quic.Listener
	tr         *quic.Transport
	udp        *net.UDPConn
	maxConns   int
	maxPending int
	now        func() time.Time // the admission bucket's clock
	closeOnce  sync.Once
	// closing ends when Close is called: it wakes Accept callers, while
	// the quic-go listener itself stays open until the last connection
	// ends, so that new clients are refused at once (CONNECTION_REFUSED)
	// rather than left unanswered.
	closing     context.Context
	stopAccepts context.CancelFunc

	mu       sync.Mutex
	pending  int    // admitted, not yet returned by Accept
	accepted int    // returned by Accept, not yet closed
	refused  uint64 // refused at a cap or after Close
	rate     admission
	echoes   recentRefusals // refused by rate just now
	refusedR uint64         // refused by rate
	closed   bool
}

// ListenerStats counts what a listener holds (QUICListener, XQUICListener,
// TCPListener: each says how its counts differ).
type ListenerStats struct {
	// Handshaking is the number of connections admitted but not yet
	// returned by Accept: in the QUIC handshake or in quic-go's accept
	// queue.
	Handshaking int
	// Accepted is the number of connections returned by Accept that have
	// not closed yet.
	Accepted int
	// Refused is the number of connection attempts refused so far, at a
	// cap or after Close. It counts Initial packets: a client whose first
	// flight takes two packets counts twice.
	Refused uint64
	// RefusedRate is the number of connection attempts refused so far
	// because they came faster than the listener's SessionRate, counted
	// as Refused is and apart from it: Refused + RefusedRate is every
	// refusal.
	RefusedRate uint64
}

// connState is a connection's place in the listener's counts, guarded by
// the listener's mu.
type connState struct{ accepted, closed bool }

type connStateKey struct{}

// errRefused tells quic-go to refuse a connection with CONNECTION_REFUSED.
var errRefused = errors.New("transport: listener full")

// admit is quic-go's ConnContext: it runs for every new connection before
// quic-go builds any state for it, and ctx ends when the connection closes
// or its handshake fails.
func (l *QUICListener) admit(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || (l.maxConns > 0 && l.pending+l.accepted >= l.maxConns) || (l.maxPending > 0 && l.pending >= l.maxPending) {
		l.refused++
		return nil, errRefused
	}
	now, from := clockNow(l.now), netip.AddrPort{}
	if info != nil {
		from = addrPort(info.RemoteAddr)
	}
	if l.echoes.has(from, now) { // the rest of a first flight just refused
		l.refusedR++
		return nil, errRefused
	}
	if ok, _ := l.rate.admit(now); !ok {
		l.refusedR++ // CONNECTION_REFUSED has no room for the wait
		l.echoes.add(from, now)
		return nil, errRefused
	}
	l.pending++
	st := &connState{}
	context.AfterFunc(ctx, func() { l.release(st) })
	return context.WithValue(ctx, connStateKey{}, st), nil
}

// verifySource asks for a Retry once half of MaxHandshakes is in use.
func (l *QUICListener) verifySource(net.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxPending > 0 && 2*l.pending >= l.maxPending
}

// release forgets a closed connection; the last one after Close closes
// the UDP socket.
func (l *QUICListener) release(st *connState) {
	l.mu.Lock()
	st.closed = true
	if st.accepted {
		l.accepted--
	} else {
		l.pending--
	}
	last := l.closed && l.pending+l.accepted == 0
	l.mu.Unlock()
	if last {
		l.closeTransport()
	}
}

func (l *QUICListener) closeTransport() {
	l.closeOnce.Do(func() {
		l.l.Close()
		l.tr.Close()
		l.udp.Close()
	})
}

// Accept waits for the next connection that has completed its handshake.
func (l *QUICListener) Accept(ctx context.Context) (Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("transport: accept: %w: nil context", ErrInvalidConfig)
	}
	if l.closing.Err() != nil {
		return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.closing, cancel)
	defer stop()
	c, err := l.l.Accept(actx)
	if err != nil {
		if l.closing.Err() != nil && ctx.Err() == nil {
			err = net.ErrClosed
		}
		return nil, fmt.Errorf("transport: accept: %w", err)
	}
	if st, ok := c.Context().Value(connStateKey{}).(*connState); ok {
		l.mu.Lock()
		if !st.closed && !st.accepted {
			st.accepted = true
			l.pending--
			l.accepted++
		}
		l.mu.Unlock()
	}
	return &quicConn{c: c}, nil
}

// Stats returns the listener's counts.
func (l *QUICListener) Stats() ListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ListenerStats{Handshaking: l.pending, Accepted: l.accepted, Refused: l.refused, RefusedRate: l.refusedR}
}

// Close stops listening: Accept returns net.ErrClosed, new connections
// and handshakes in progress are refused with CONNECTION_REFUSED (so a
// client learns at once that the listener is gone), connections waiting
// to be accepted are closed, and connections already accepted stay open.
// The UDP socket closes with the last of them.
func (l *QUICListener) Close() error {
	l.mu.Lock()
	again := l.closed
	l.closed = true
	last := l.pending+l.accepted == 0
	l.mu.Unlock()
	if again {
		return nil
	}
	l.stopAccepts()
	if last {
		l.closeTransport()
		return nil
	}
	// Until then, connections that complete a handshake begun before
	// Close are closed as they come; this goroutine ends with the
	// quic-go listener, when the last connection ends.
	go func() {
		for {
			c, err := l.l.Accept(context.Background())
			if err != nil {
				return
			}
			c.CloseWithError(quic.ApplicationErrorCode(0), "listener closed")
		}
	}()
	return nil
}

// Addr returns the UDP address the listener is bound to.
func (l *QUICListener) Addr() net.Addr { return l.l.Addr() }

type quicConn struct {
	c      *quic.Conn
	client bool
}

func (c *quicConn) OpenControl(ctx context.Context) (SendLane, error) {
	s, err := c.c.OpenUniStreamSync(ctx)
	if err != nil {
		return nil, convertError(err)
	}
	return quicSendLane{s}, nil
}

func (c *quicConn) AcceptControl(ctx context.Context) (io.Reader, error) {
	s, err := c.c.AcceptUniStream(ctx)
	if err != nil {
		return nil, convertError(err)
	}
	return quicRecvLane{s}, nil
}

func (c *quicConn) OpenLane(ctx context.Context) (Lane, error) {
	s, err := c.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, convertError(err)
	}
	return quicLane{s}, nil
}

func (c *quicConn) AcceptLane(ctx context.Context) (Lane, error) {
	s, err := c.c.AcceptStream(ctx)
	if err != nil {
		return nil, convertError(err)
	}
	return quicLane{s}, nil
}

func (c *quicConn) CloseWithError(code uint64, reason string) error {
	return c.c.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

func (c *quicConn) Done() <-chan struct{} { return c.c.Context().Done() }
func (c *quicConn) RTT() time.Duration    { return c.c.ConnectionStats().SmoothedRTT }
func (c *quicConn) LocalAddr() net.Addr   { return c.c.LocalAddr() }
func (c *quicConn) RemoteAddr() net.Addr  { return c.c.RemoteAddr() }
func (c *quicConn) IsClient() bool        { return c.client }

// QUICConn returns the quic-go connection under c, for statistics and
// tracing, or nil if c is not a QUIC binding.
func QUICConn(c Conn) *quic.Conn {
	if qc, ok := c.(*quicConn); ok {
		return qc.c
	}
	return nil
}

type quicLane struct{ s *quic.Stream }

func (l quicLane) Read(p []byte) (int, error) {
	n, err := l.s.Read(p)
	if err != nil {
		err = convertError(err)
	}
	return n, err
}

func (l quicLane) Write(p []byte) (int, error) {
	n, err := l.s.Write(p)
	if err != nil {
		err = convertError(err)
	}
	return n, err
}

func (l quicLane) CloseWrite() error                  { return l.s.Close() }
func (l quicLane) SetWriteDeadline(t time.Time) error { return l.s.SetWriteDeadline(t) }
func (l quicLane) SetReadDeadline(t time.Time) error  { return l.s.SetReadDeadline(t) }
func (l quicLane) CancelWrite(code uint64)            { l.s.CancelWrite(quic.StreamErrorCode(code)) }
func (l quicLane) CancelRead(code uint64)             { l.s.CancelRead(quic.StreamErrorCode(code)) }

// SetPriority sets the lane's send priority in quic-go's scheduler.
func (l quicLane) SetPriority(urgency uint8, incremental bool) {
	l.s.SetPriority(int8(min(urgency, 7)), incremental)
}

type quicSendLane struct{ s *quic.SendStream }

func (l quicSendLane) Write(p []byte) (int, error) {
	n, err := l.s.Write(p)
	if err != nil {
		err = convertError(err)
	}
	return n, err
}

func (l quicSendLane) CloseWrite() error                  { return l.s.Close() }
func (l quicSendLane) SetWriteDeadline(t time.Time) error { return l.s.SetWriteDeadline(t) }
func (l quicSendLane) CancelWrite(code uint64)            { l.s.CancelWrite(quic.StreamErrorCode(code)) }

type quicRecvLane struct{ s *quic.ReceiveStream }

func (l quicRecvLane) Read(p []byte) (int, error) {
	n, err := l.s.Read(p)
	if err != nil {
		err = convertError(err)
	}
	return n, err
}

// convertError turns quic-go's connection errors into the transport's own,
// so that mux never sees a quic-go type. io.EOF and stream errors pass
// through unchanged (wrapped in the latter case).
func convertError(err error) error {
	if err == io.EOF || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // end of lane, or the caller's context
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !isConnError(err) {
		return fmt.Errorf("transport: lane: %w", os.ErrDeadlineExceeded)
	}
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) {
		return &ApplicationError{Code: uint64(appErr.ErrorCode), Remote: appErr.Remote, Reason: appErr.ErrorMessage}
	}
	var streamErr *quic.StreamError
	if errors.As(err, &streamErr) {
		return &LaneError{Code: uint64(streamErr.ErrorCode), Remote: streamErr.Remote}
	}
	return connError(err)
}

// connError wraps an error that ended a connection without an application
// code in ErrConnClosed, and in ErrIdleTimeout when nothing was heard from
// the peer in time (QUIC's idle timeout, or its handshake timeout) or
// ErrConnRefused when the server refused the connection. The quic-go error
// stays in the chain.
func connError(err error) error {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var te *quic.TransportError
	switch {
	case errors.As(err, &idle), errors.As(err, &hs):
		return fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrIdleTimeout, err)
	case errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused:
		return fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrConnRefused, err)
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

// isConnError reports whether err ended the whole connection (an idle
// timeout is a timeout too, but of the connection).
func isConnError(err error) bool {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	return errors.As(err, &idle) || errors.As(err, &hs)
}

// LaneError is a lane cancelled by the peer (Remote) or locally, with the
// code given to CancelRead or CancelWrite.
type LaneError struct {
	Code   uint64
	Remote bool
}

func (e *LaneError) Error() string {
	if e.Remote {
		return fmt.Sprintf("lane cancelled by peer with code 0x%x", e.Code)
	}
	return fmt.Sprintf("lane cancelled locally with code 0x%x", e.Code)
}
