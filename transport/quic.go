package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"
)

// QUICConfig sizes the QUIC connection under a bp/1 session. QUIC's own
// flow control must never be the limit that governs: bp/1's windows are.
// The lanes are read eagerly, so QUIC's receive buffers hold only data in
// transit, and the windows here merely need to exceed what bp/1 can have
// in flight.
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
	// this long. Zero means 30 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC handshake. Zero means 10 s.
	HandshakeTimeout time.Duration
}

// quicSlack is added to QUIC's windows for frame headers and control
// frames that travel on lanes besides the bytes bp/1 credit counts.
const quicSlack = 1 << 20

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
	}
}

// withALPN returns a copy of conf that offers bp/1 and requires TLS 1.3.
func withALPN(conf *tls.Config) *tls.Config {
	conf = conf.Clone()
	conf.NextProtos = []string{ALPN}
	conf.MinVersion = tls.VersionTLS13
	return conf
}

// DialQUIC opens a QUIC connection to addr for a bp/1 session.
func DialQUIC(ctx context.Context, addr string, tlsConf *tls.Config, cfg QUICConfig) (Conn, error) {
	c, err := quic.DialAddr(ctx, addr, withALPN(tlsConf), cfg.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	return &quicConn{c: c, client: true}, nil
}

// ListenQUIC listens for bp/1 sessions over QUIC on the UDP address addr.
func ListenQUIC(addr string, tlsConf *tls.Config, cfg QUICConfig) (Listener, error) {
	l, err := quic.ListenAddr(addr, withALPN(tlsConf), cfg.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	return &quicListener{l: l}, nil
}

type quicListener struct{ l *quic.Listener }

func (l *quicListener) Accept(ctx context.Context) (Conn, error) {
	c, err := l.l.Accept(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: accept: %w", err)
	}
	return &quicConn{c: c}, nil
}

func (l *quicListener) Close() error   { return l.l.Close() }
func (l *quicListener) Addr() net.Addr { return l.l.Addr() }

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
func (l quicLane) CancelWrite(code uint64)            { l.s.CancelWrite(quic.StreamErrorCode(code)) }
func (l quicLane) CancelRead(code uint64)             { l.s.CancelRead(quic.StreamErrorCode(code)) }

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
		return fmt.Errorf("transport: lane write: %w", os.ErrDeadlineExceeded)
	}
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) {
		return &ApplicationError{Code: uint64(appErr.ErrorCode), Remote: appErr.Remote, Reason: appErr.ErrorMessage}
	}
	var streamErr *quic.StreamError
	if errors.As(err, &streamErr) {
		return &LaneError{Code: uint64(streamErr.ErrorCode), Remote: streamErr.Remote}
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
