package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	xquic "golang.org/x/net/quic"
	"golang.org/x/net/quic/qlog"
)

// This file is the second QUIC binding, on golang.org/x/net/quic: the
// connection, its lanes, the client's dial and the mapping of x/net/quic's
// errors onto this package's. The listener is in xquic_listen.go.
//
// golang.org/x/net/quic says of itself that it is a work in progress, not
// ready for production use, and that its API may change without notice.
// So is this binding: use DialQUIC and ListenQUIC (quic-go) in production;
// this one exists to show that bp/1 does not depend on one QUIC stack, and
// to test interoperability between two.

// maxVarint is the largest value a QUIC varint holds (2^62-1): the bound
// on error codes x/net/quic accepts.
const maxVarint = 1<<62 - 1

// xquicDrainWait bounds how long closing an endpoint waits for its
// connections to drain.
const xquicDrainWait = 2 * time.Second

// xquicHandshakeMargin is added to x/net/quic's own handshake timeout on
// the client, so that DialXQUIC's timer, which knows what happened, ends a
// handshake that takes too long first.
const xquicHandshakeMargin = time.Second

// XQUICConfig returns the golang.org/x/net/quic configuration that
// DialXQUIC and ListenXQUIC use for cfg, with a copy of tlsConf that
// offers bp/1 by ALPN and requires TLS 1.3.
//
// x/net/quic's windows are fixed, not tuned: a stream buffers at most
// MaxStreamReadBufferSize bytes from the peer and MaxStreamWriteBufferSize
// bytes of its own until the peer acknowledges them, and the connection
// MaxConnReadBufferSize bytes across all streams. They are sized as
// QUICConfig sizes quic-go's windows, above bp/1's per-stream window and
// session budget plus slack for frame headers (with the defaults, 17 MiB
// per stream and 65 MiB for the connection), so that bp/1's flow control,
// never x/net/quic's, is what holds a sender back. The buffers fill only
// as far as bp/1 credit lets them. Callers may inspect the result, or use
// it with x/net/quic directly to compare.
func (c QUICConfig) XQUICConfig(tlsConf *tls.Config) *xquic.Config {
	q := c.quicConfig()
	conf := &xquic.Config{
		TLSConfig:                withALPN(tlsConf),
		MaxBidiRemoteStreams:     q.MaxIncomingStreams,
		MaxUniRemoteStreams:      q.MaxIncomingUniStreams, // the peer's control lane
		MaxStreamReadBufferSize:  int64(q.MaxStreamReceiveWindow),
		MaxStreamWriteBufferSize: int64(q.MaxStreamReceiveWindow),
		MaxConnReadBufferSize:    int64(q.MaxConnectionReceiveWindow),
		HandshakeTimeout:         q.HandshakeIdleTimeout,
		MaxIdleTimeout:           q.MaxIdleTimeout,
		KeepAlivePeriod:          q.KeepAlivePeriod,
	}
	if dir := qlogDir(c.QlogDir); dir != "" {
		conf.QLogLogger = slog.New(qlog.NewJSONHandler(qlog.HandlerOptions{Level: xquic.QLogLevelFrame, Dir: dir}))
	}
	return conf
}

// DialXQUIC is DialQUIC over golang.org/x/net/quic instead of quic-go:
// it opens a QUIC connection to addr (host:port) for a bp/1 session, with
// the same checks of its arguments (ErrInvalidConfig), the same errors
// (ErrConnRefused at once for a port on which nothing listens or a server
// that refuses with QUIC's CONNECTION_REFUSED; ErrIdleTimeout after
// cfg.HandshakeTimeout for a server that never answers), and each address
// of the host tried in turn. QUICConfig.MaxConns and MaxHandshakes do not
// apply to a client. Each connection has a UDP socket of its own, closed
// when the connection has closed.
//
// x/net/quic is not ready for production use (its package says so), and
// it slows down badly when packets are reordered.
func DialXQUIC(ctx context.Context, addr string, tlsConf *tls.Config, cfg QUICConfig) (Conn, error) {
	targets, err := prepareDial(ctx, "udp", addr, tlsConf, cfg.validate)
	if err != nil {
		return nil, err
	}
	conf := cfg.XQUICConfig(tlsConf)
	if host, _, err := net.SplitHostPort(addr); err == nil && conf.TLSConfig.ServerName == "" {
		if _, err := netip.ParseAddr(host); err != nil {
			conf.TLSConfig.ServerName = host // the name, not the address it resolved to
		}
	}
	if cfg.QlogDir != "" {
		os.MkdirAll(cfg.QlogDir, 0o755) // if it fails, connections go untraced
	}
	handshake := conf.HandshakeTimeout
	conf.HandshakeTimeout += xquicHandshakeMargin

	return dialEach(ctx, addr, targets, handshake, func(target netip.AddrPort) (Conn, error) {
		c, err := dialXQUICOne(ctx, target, conf, handshake, nil)
		if err != nil {
			return nil, err
		}
		return c, nil
	})
}

// errXQUICHandshakeTimeout is the cause of a handshake DialXQUIC gave up.
var errXQUICHandshakeTimeout = errors.New("handshake timeout: no answer from the server")

// dialXQUICOne runs a handshake with one address on a socket of its own,
// or on pc if it is not nil (tests use it to lose packets), abandoning it
// when the probe learns that nothing listens there or after handshake.
func dialXQUICOne(ctx context.Context, target netip.AddrPort, conf *xquic.Config, handshake time.Duration, pc net.PacketConn) (*xquicConn, error) {
	if pc == nil {
		network := "udp4"
		if target.Addr().Is6() {
			network = "udp6"
		}
		udp, err := net.ListenUDP(network, nil)
		if err != nil {
			return nil, err
		}
		pc = udp
	}
	ep, err := xquic.NewEndpoint(pc, nil)
	if err != nil {
		pc.Close()
		return nil, err
	}
	tctx, cancelTimeout := context.WithTimeoutCause(ctx, handshake, errXQUICHandshakeTimeout)
	defer cancelTimeout()
	dctx, cancel := context.WithCancelCause(tctx)
	defer cancel(nil)
	startProbe(dctx, target, func() { cancel(errPortUnreachable) }) // its socket made here, in the caller's network namespace
	qc, err := ep.Dial(dctx, "udp", target.String(), conf)
	if err == nil {
		return newXQUICConn(qc, ep, pc.LocalAddr(), true, nil), nil
	}
	// The abandoned connection has a moment to send its CONNECTION_CLOSE,
	// not the drain period: there may be no one to answer.
	closeEndpoint(ep, 100*time.Millisecond)
	cause := context.Cause(dctx)
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case cause == errPortUnreachable:
		return nil, fmt.Errorf("%w: %w", ErrConnRefused, errPortUnreachable)
	case cause == errXQUICHandshakeTimeout:
		return nil, fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrIdleTimeout, errXQUICHandshakeTimeout)
	}
	return nil, xquicConnError(err)
}

// closeEndpoint closes an endpoint, giving a connection still draining
// (RFC 9000 10.2) up to wait to finish.
func closeEndpoint(ep *xquic.Endpoint, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ep.Close(ctx)
}

// xquicConnError turns the error that ended an x/net/quic connection into
// this package's: the peer's application close into *ApplicationError,
// anything else into an error matching ErrConnClosed, and also
// ErrIdleTimeout (the idle or handshake timeout) or ErrConnRefused (the
// peer's CONNECTION_REFUSED) where that is what happened. x/net/quic's
// error stays in the chain. x/net/quic exports no type for these, so
// they are told by their text; the tests pin it.
func xquicConnError(err error) error {
	var cc *xquic.ConnectionCloseError
	switch {
	case err == nil:
		return fmt.Errorf("%w: closed by the peer without an error", ErrConnClosed)
	case errors.As(err, &cc):
		return &ApplicationError{Code: cc.Code, Remote: true, Reason: cc.Reason}
	}
	msg := err.Error()
	switch {
	case msg == "idle timeout", strings.Contains(msg, `"handshake timeout"`):
		return fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrIdleTimeout, err)
	case strings.HasPrefix(msg, "peer closed connection: CONNECTION_REFUSED"):
		return fmt.Errorf("%w: %w: %w", ErrConnClosed, ErrConnRefused, err)
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

// xquicConn is a Conn over an x/net/quic connection.
//
// x/net/quic has one AcceptStream for both kinds of stream; a goroutine
// (pump) sorts them into the peer's control lane and its lanes. Another
// (watch) waits for the connection to end, answers the peer's close, and
// closes a client's endpoint.
type xquicConn struct {
	qc     *xquic.Conn
	ep     *xquic.Endpoint // a client's own, closed with the connection; nil for a server's
	local  net.Addr
	client bool

	lanes   streamQueue        // the peer's lanes, in the order it opened them
	control streamQueue        // the peer's control lane
	stop    context.CancelFunc // ends pump

	done     chan struct{} // closed when the connection is closed, for any reason
	doneOnce sync.Once
	ended    chan struct{} // closed once x/net/quic has finished with the connection
	onEnded  func()        // called then, if set

	gone context.Context // cancelled from the start: Wait with it only peeks

	mu  sync.Mutex
	err error // why the connection closed, once it has
}

// newXQUICConn wraps an established connection and starts its goroutines.
func newXQUICConn(qc *xquic.Conn, ep *xquic.Endpoint, local net.Addr, client bool, onEnded func()) *xquicConn {
	if ap := qc.LocalAddr(); ap.IsValid() && ap.Addr().IsValid() {
		local = net.UDPAddrFromAddrPort(ap)
	}
	c := &xquicConn{
		qc:      qc,
		ep:      ep,
		local:   local,
		client:  client,
		lanes:   newStreamQueue(),
		control: newStreamQueue(),
		done:    make(chan struct{}),
		ended:   make(chan struct{}),
		onEnded: onEnded,
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	c.gone = gone
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go c.pump(ctx)
	go c.watch()
	return c
}

// pump accepts the peer's streams until the connection ends, and never
// blocks otherwise: the peer's lanes do not wait behind its control lane
// or the other way round. The queues hold no more streams than
// x/net/quic lets the peer open (MaxBidiRemoteStreams lanes, one control
// lane), since a stream keeps its slot until it is accepted and closed.
func (c *xquicConn) pump(ctx context.Context) {
	seen := false
	for {
		s, err := c.qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		switch {
		case !s.IsReadOnly():
			c.lanes.put(s)
		case !seen:
			seen = true
			c.control.put(s)
		default:
			// A second control lane, which mux would report as a
			// PROTOCOL_ERROR: x/net/quic lets the peer open it only
			// once the first has finished, so the session is over.
			s.StopSending(0)
			s.CloseRead()
		}
	}
}

// streamQueue is a queue of accepted streams that never blocks put.
type streamQueue struct {
	mu    sync.Mutex
	items []*xquic.Stream
	ready chan struct{} // holds a token while items is not empty
}

func newStreamQueue() streamQueue { return streamQueue{ready: make(chan struct{}, 1)} }

func (q *streamQueue) put(s *xquic.Stream) {
	q.mu.Lock()
	q.items = append(q.items, s)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// get takes the first stream, or returns nil if there is none.
func (q *streamQueue) get() *xquic.Stream {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	s := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	if len(q.items) > 0 {
		select {
		case q.ready <- struct{}{}: // for the next waiter
		default:
		}
	}
	return s
}

// watch waits until x/net/quic reports the connection closed, records
// why, and cleans up once it is.
func (c *xquicConn) watch() {
	err := c.qc.Wait(context.Background())
	c.fail(xquicConnError(err))
	// After the peer's CONNECTION_CLOSE, x/net/quic waits for one of ours
	// before it drains; after our own or a timeout, this does nothing.
	c.qc.Abort(nil)
	c.stop()
	if c.ep != nil {
		closeEndpoint(c.ep, xquicDrainWait)
	}
	close(c.ended)
	if c.onEnded != nil {
		c.onEnded()
	}
}

// fail records err as the reason the connection closed, unless a reason
// is known already, and closes Done.
func (c *xquicConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.doneOnce.Do(func() { close(c.done) })
}

// closedErr returns why the connection closed, or nil while it is open.
// It looks at x/net/quic's state too, so that an operation that failed
// because the peer closed the connection reports that even before watch
// has seen it.
func (c *xquicConn) closedErr() error {
	select {
	case <-c.done:
	default:
		if err := c.qc.Wait(c.gone); errors.Is(err, context.Canceled) {
			return nil // still open
		} else {
			c.fail(xquicConnError(err))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closedDone returns why the connection closed once Done is closed, and
// nil before that, without asking x/net/quic: cheap enough for every
// Write. x/net/quic reports its connection closed (and so Done closes)
// a moment before it fails the connection's streams, so a Write in that
// moment would otherwise succeed after Done.
func (c *xquicConn) closedDone() error {
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	default:
		return nil
	}
}

// opErr maps the error of a connection-level call: the caller's context
// as it is, anything else as the reason the connection closed.
func (c *xquicConn) opErr(ctx context.Context, err error) error {
	if cerr := c.closedErr(); cerr != nil {
		return cerr
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

func (c *xquicConn) OpenControl(ctx context.Context) (SendLane, error) {
	if err := c.closedDone(); err != nil {
		return nil, err
	}
	s, err := c.qc.NewSendOnlyStream(ctx)
	if err != nil {
		return nil, c.opErr(ctx, err)
	}
	return newXQUICLane(c, s), nil
}

func (c *xquicConn) AcceptControl(ctx context.Context) (io.Reader, error) {
	l, err := c.accept(ctx, &c.control)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (c *xquicConn) OpenLane(ctx context.Context) (Lane, error) {
	if err := c.closedDone(); err != nil {
		return nil, err
	}
	s, err := c.qc.NewStream(ctx)
	if err != nil {
		return nil, c.opErr(ctx, err)
	}
	return newXQUICLane(c, s), nil
}

// AcceptLane returns the peer's lanes in the order their first data
// arrives: unlike quic-go, x/net/quic does not hand over a lane that a
// later one opened implicitly until data of its own arrives. bp/1 lets
// lanes arrive in any order (SPEC.md 6.1).
func (c *xquicConn) AcceptLane(ctx context.Context) (Lane, error) {
	l, err := c.accept(ctx, &c.lanes)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// accept waits for the next stream pump puts in q.
func (c *xquicConn) accept(ctx context.Context, q *streamQueue) (*xquicLane, error) {
	for {
		if err := c.closedErr(); err != nil {
			return nil, err
		}
		if s := q.get(); s != nil {
			return newXQUICLane(c, s), nil
		}
		select {
		case <-q.ready:
		case <-c.done:
			return nil, c.closedErr()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// CloseWithError closes the connection with an application CONNECTION_CLOSE
// carrying code (at most 2^62-1; larger codes are sent as that) and
// reason. It returns at once; the connection drains in the background.
// Later calls, and calls after the peer closed the connection, change
// nothing this endpoint reports.
func (c *xquicConn) CloseWithError(code uint64, reason string) error {
	code = min(code, maxVarint)
	if c.closedErr() == nil {
		c.fail(&ApplicationError{Code: code, Reason: reason})
	}
	c.qc.Abort(&xquic.ConnectionCloseError{Code: code, Reason: reason})
	return nil
}

func (c *xquicConn) Done() <-chan struct{} { return c.done }

// RTT returns 0: x/net/quic keeps its RTT estimate to itself. Package mux
// then uses the RTT its own PINGs measure.
func (c *xquicConn) RTT() time.Duration { return 0 }

func (c *xquicConn) LocalAddr() net.Addr  { return c.local }
func (c *xquicConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.qc.RemoteAddr()) }
func (c *xquicConn) IsClient() bool       { return c.client }

// xquicLane is a lane (or a control lane, of which only one half is used)
// over an x/net/quic stream.
//
// x/net/quic buffers what is written until the buffer is full or Flush is
// called, so each Write flushes what it wrote. It cancels a blocked write
// by a context set with SetWriteContext (not concurrently with a Write),
// not by a deadline: each Write takes the current context of wd, which
// SetWriteDeadline and its timer cancel. It keeps a stream's slot among
// the peer's MAX_STREAMS until the application has closed both of its
// halves, even after the end of the data or a reset, so a lane closes
// its reading half once Read has reported the end.
type xquicLane struct {
	s *xquic.Stream
	c *xquicConn
	w writeDeadline

	mu        sync.Mutex
	eof       bool   // Read returned io.EOF
	readStop  bool   // CancelRead was called before the end
	readCode  uint64 // its code
	peerReset bool   // Read reported the peer's RESET_STREAM
	writeStop bool   // CancelWrite was called
	writeCode uint64 // its code
}

func newXQUICLane(c *xquicConn, s *xquic.Stream) *xquicLane {
	return &xquicLane{s: s, c: c}
}

func (l *xquicLane) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // x/net/quic would wait for data
	}
	n, err := l.s.Read(p)
	if err == nil {
		return n, nil
	}
	l.mu.Lock()
	eof, stopped, code := l.eof, l.readStop, l.readCode
	if err == io.EOF {
		l.eof = true
	}
	l.mu.Unlock()
	var se xquic.StreamError
	switch {
	case err == io.EOF:
		if !eof {
			l.s.CloseRead() // frees the stream's slot; nothing is sent
		}
		return n, io.EOF
	case eof:
		return n, io.EOF // after CloseRead, x/net/quic says "closed"
	}
	if cerr := l.c.closedErr(); cerr != nil {
		return n, cerr
	}
	switch {
	case stopped:
		// CancelRead came first: a RESET_STREAM from the peer now is its
		// answer to our STOP_SENDING, and the lane reports our code, as
		// quic-go's does.
		return n, &LaneError{Code: code}
	case errors.As(err, &se) && uint64(se) != math.MaxInt64: // the peer's RESET_STREAM
		l.mu.Lock()
		l.peerReset = true // a CancelRead after this changes nothing
		l.mu.Unlock()
		l.s.CloseRead()
		return n, &LaneError{Code: uint64(se), Remote: true}
	}
	return n, fmt.Errorf("%w: %w", ErrConnClosed, err)
}

func (l *xquicLane) Write(p []byte) (int, error) {
	if err := l.c.closedDone(); err != nil {
		return 0, err
	}
	ctx, err := l.w.begin()
	if err != nil {
		return 0, err
	}
	l.s.SetWriteContext(ctx)
	n, err := l.s.Write(p)
	if ferr := l.s.Flush(); err == nil && len(p) > 0 {
		err = ferr
	}
	if err != nil {
		return n, l.writeErr(ctx, err)
	}
	return n, nil
}

// writeErr maps the error of a Write or CloseWrite.
func (l *xquicLane) writeErr(ctx context.Context, err error) error {
	if cerr := l.c.closedErr(); cerr != nil {
		return cerr
	}
	if ctx != nil && errors.Is(err, context.Canceled) && context.Cause(ctx) == errWriteDeadline {
		return fmt.Errorf("transport: lane write: %w", os.ErrDeadlineExceeded)
	}
	l.mu.Lock()
	stopped, code := l.writeStop, l.writeCode
	l.mu.Unlock()
	var se xquic.StreamError
	if errors.As(err, &se) {
		if stopped && uint64(se) == code {
			return &LaneError{Code: code}
		}
		// The peer's STOP_SENDING: x/net/quic has reset the stream but
		// keeps its slot until the application closes its writing half.
		l.s.Reset(uint64(se))
		return &LaneError{Code: uint64(se), Remote: true}
	}
	if stopped {
		return &LaneError{Code: code}
	}
	return fmt.Errorf("transport: lane write: %w", err)
}

// CloseWrite ends the lane's sending direction (QUIC FIN) after what was
// written. It fails after CancelWrite, as quic-go's does.
func (l *xquicLane) CloseWrite() error {
	l.mu.Lock()
	stopped, code := l.writeStop, l.writeCode
	l.mu.Unlock()
	if stopped {
		return fmt.Errorf("transport: CloseWrite after CancelWrite(0x%x)", code)
	}
	if err := l.c.closedDone(); err != nil {
		return err
	}
	return l.s.CloseWrite()
}

// CancelWrite resets the sending direction (QUIC RESET_STREAM) with code
// (at most 2^62-1); a Write held in x/net/quic returns at once.
func (l *xquicLane) CancelWrite(code uint64) {
	code = min(code, maxVarint)
	l.mu.Lock()
	if !l.writeStop {
		l.writeStop, l.writeCode = true, code
	}
	l.mu.Unlock()
	l.s.Reset(code)
}

// CancelRead asks the peer to stop sending (QUIC STOP_SENDING) with code
// (at most 2^62-1). After Read has reported the end or the peer's reset,
// it does nothing.
func (l *xquicLane) CancelRead(code uint64) {
	code = min(code, maxVarint)
	l.mu.Lock()
	if l.eof || l.readStop || l.peerReset {
		l.mu.Unlock()
		return
	}
	l.readStop, l.readCode = true, code
	l.mu.Unlock()
	l.s.StopSending(code)
}

// SetWriteDeadline makes Writes not done by t fail with an error matching
// os.ErrDeadlineExceeded, a Write held now included.
func (l *xquicLane) SetWriteDeadline(t time.Time) error {
	l.w.set(t)
	return nil
}

// errWriteDeadline is the cause of a write context cancelled by the
// write deadline.
var errWriteDeadline = errors.New("write deadline")

// writeDeadline turns a lane's write deadline into the contexts x/net/quic
// wants. The context stays the same from Write to Write until the
// deadline passes, so that a Write costs no allocation.
type writeDeadline struct {
	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	gen      uint64 // counts set calls, so that a stale timer does nothing
	ctx      context.Context
	cancel   context.CancelCauseFunc
}

// begin returns the context for a Write, or the deadline's error if it
// has passed.
func (w *writeDeadline) begin() (context.Context, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.deadline.IsZero() && !time.Now().Before(w.deadline) {
		return nil, fmt.Errorf("transport: lane write: %w", os.ErrDeadlineExceeded)
	}
	if w.ctx == nil || w.ctx.Err() != nil {
		w.ctx, w.cancel = context.WithCancelCause(context.Background())
		if !w.deadline.IsZero() {
			w.armLocked()
		}
	}
	return w.ctx, nil
}

// set moves the deadline, cancelling the current context at once if t
// has passed.
func (w *writeDeadline) set(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadline = t
	w.gen++
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if t.IsZero() || w.ctx == nil || w.ctx.Err() != nil {
		return // the next Write makes a context for it
	}
	w.armLocked()
}

// armLocked cancels the current context when the deadline passes.
func (w *writeDeadline) armLocked() {
	d := time.Until(w.deadline)
	if d <= 0 {
		w.cancel(errWriteDeadline)
		return
	}
	gen, cancel := w.gen, w.cancel
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.gen == gen {
			cancel(errWriteDeadline)
		}
	})
}
