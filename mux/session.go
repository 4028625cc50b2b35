package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/breaker"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/window"
)

// laneReadBuffer is the read buffer of each lane: room for a few frame
// headers and small control frames. DATA payloads bypass it, read straight
// into the stream's buffer, so a small one costs nothing in throughput and
// keeps an idle stream cheap.
const laneReadBuffer = 128

// frameBufSize holds the frames a stream writes at once: a DATA header,
// or its queued control frames (at most one of each kind).
const frameBufSize = 5*framing.MaxHeaderLen + 64

// dataHeadSize is the most a DATA frame's first lane write carries: its
// header and the first bytes of its payload, copied together so that the
// header never goes alone, and a small frame (a request of 1 KiB, say)
// goes in one write. A header written alone is a packet of its own over
// QUIC (quic-go sends a small write as soon as it is made, x/net/quic
// flushes each Write): one more packet per frame, with its cost in both
// processes, and for a small message a second packet that may be lost,
// which doubles its odds of waiting for loss recovery. 1,150 bytes fit
// in one packet of the smallest size QUIC allows (1,200 bytes, which
// x/net/quic keeps to) with QUIC's own headers and the STREAM frame's.
const dataHeadSize = 1150

// Session is one bp/1 session over a transport connection.
//
// A session owns these goroutines, all of which end when it closes: one
// reading the peer's control lane, one writing this side's control lane,
// one accepting the peer's lanes (which also learns first when the
// transport closes, and why), one for timers (keepalive, idle windows,
// rate limits), and one reader per stream lane, which ends when the lane
// ends. Their number is bounded by MaxStreams plus the peer's limit.
type Session struct {
	conn   transport.Conn
	cfg    Config
	client bool
	budget *window.Budget

	ctx    context.Context // done when the session closes
	cancel context.CancelFunc
	done   <-chan struct{}

	closeOnce sync.Once
	closeErr  error // set before done is closed
	wg        sync.WaitGroup

	frameBufs   sync.Pool     // of *[frameBufSize]byte, for frames streams write
	dataHeads   sync.Pool     // of *[dataHeadSize]byte, for DATA frames' first writes
	acceptReady chan struct{} // signalled when acceptQ gains a stream
	ctlSignal   chan struct{} // wakes the control writer
	started     time.Time     // when New ran, for the SETTINGS timeout

	settingsRecvd atomic.Bool  // the peer's SETTINGS arrived
	clock         atomic.Int64 // a coarse now (UnixNano), set by housekeeping each tick
	heard         atomic.Int64 // the coarse time something last arrived from the peer
	smallMu       sync.Mutex   // guards small
	small         tokenBucket  // paces the peer's small DATA frames

	peerInitial      atomic.Uint64 // peer's SETTINGS_INITIAL_WINDOW
	peerMaxFrame     atomic.Uint64 // peer's SETTINGS_MAX_FRAME_PAYLOAD
	peerBudgetSignal atomic.Bool   // peer's SETTINGS_BUDGET_SIGNAL: it takes BUDGET_LIMITED
	uselessCount     atomic.Int64  // frames that did no work, this second
	pingRTT          atomic.Int64  // RTT measured by PING, in ns
	qlog             *qlogRecorder // the connection's qlog trace, or nil
	hooked           bool          // OnEvent or qlog: events are wanted
	thresholds       bool          // Config.Thresholds has a level set
	obs              sessionObs
	compress         sessionCompression
	admission        admission        // the peer's new streams
	breaker          *breaker.Breaker // Config.Breaker's, or nil
	peerRetryAfter   atomic.Bool      // peer's SETTINGS_RETRY_AFTER: it takes RETRY_AFTER
	stats            struct {
		bytesSent, bytesReceived      atomic.Uint64
		updatesSent, updatesReceived  atomic.Uint64
		stalls, pingsSent, pingsRecvd atomic.Uint64
		opened, accepted, refused     atomic.Uint64
		paced                         atomic.Uint64
		receivers                     atomic.Int64 // streams holding a receive window (and StreamOverhead)
	}

	mu       sync.Mutex // guards the fields below
	streams  map[uint64]*Stream
	nextID   uint64
	peerOpen int // open streams the peer opened, against MaxStreams
	// Peer streams not yet accepted, oldest first. Each also counts in
	// peerOpen, so the queue never holds more than MaxStreams: admit
	// refuses a stream past the limit instead of waiting for room.
	acceptQ        []*Stream
	idleSince      time.Time // when the session last had no stream
	goAwaySent     bool
	goAwayLast     uint64 // highest peer stream ID processed after GOAWAY
	lastPeerID     uint64
	goAwayRecvd    bool
	peerGoAwayLast uint64 // Last Stream ID of the peer's latest GOAWAY
	doneSent       bool   // GOAWAY with DONE queued: this side has no stream left
	doneRecvd      bool   // the peer's GOAWAY with DONE arrived
	// Control frames waiting for the control writer: at most one of each,
	// so nothing the peer does can grow a queue of answers.
	pendPingAck bool
	pingAckData [framing.PingDataLen]byte
	pendPing    bool
	pingData    [framing.PingDataLen]byte
	pingSentAt  time.Time
	pingWaiting bool
	pendGoAway  bool
	goAwayCode  framing.ErrorCode
}

// New starts a session over conn. Whether this side is the client (odd
// stream IDs) is conn.IsClient(). cfg may be nil for the defaults.
func New(conn transport.Conn, cfg *Config) (*Session, error) {
	if conn == nil {
		return nil, errors.New("mux: New: nil transport.Conn")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &Session{
		conn:        conn,
		cfg:         c,
		client:      conn.IsClient(),
		budget:      window.NewBudget(c.SessionBudget),
		ctx:         ctx,
		cancel:      cancel,
		done:        ctx.Done(),
		acceptReady: make(chan struct{}, 1),
		ctlSignal:   make(chan struct{}, 1),
		streams:     make(map[uint64]*Stream),
		nextID:      2,
		small:       newTokenBucket(c.MaxSmallFramesPerSecond, c.MaxSmallFramesPerSecond/10+1),
	}
	sess.started = c.Now()
	sess.idleSince = sess.started
	sess.clock.Store(sess.started.UnixNano())
	sess.heard.Store(sess.started.UnixNano())
	if sess.client {
		sess.nextID = 1
	}
	sess.peerInitial.Store(DefaultInitialWindow)
	sess.peerMaxFrame.Store(DefaultMaxFramePayload)
	sess.budget.Charge(SessionOverhead) // withDefaults made room for it
	sess.initCompression()
	if err := sess.initAdmission(); err != nil {
		cancel()
		return nil, err
	}
	sess.startObserving()
	sess.goroutine(sess.controlWriter)
	sess.goroutine(sess.controlReader)
	sess.goroutine(sess.acceptLanes)
	sess.goroutine(sess.housekeeping)
	return sess, nil
}

// frameBuf lends a buffer to encode frames into; give it back with
// putFrameBuf once the lane write has returned. Lanes copy what they are
// given, so the buffers are few and streams need none of their own.
func (sess *Session) frameBuf() *[frameBufSize]byte {
	if b, ok := sess.frameBufs.Get().(*[frameBufSize]byte); ok {
		return b
	}
	return new([frameBufSize]byte)
}

func (sess *Session) putFrameBuf(b *[frameBufSize]byte) { sess.frameBufs.Put(b) }

// dataHead lends a buffer for a DATA frame's first write (dataHeadSize);
// give it back with putDataHead once the lane write has returned.
func (sess *Session) dataHead() *[dataHeadSize]byte {
	if b, ok := sess.dataHeads.Get().(*[dataHeadSize]byte); ok {
		return b
	}
	return new([dataHeadSize]byte)
}

func (sess *Session) putDataHead(b *[dataHeadSize]byte) { sess.dataHeads.Put(b) }

func (sess *Session) goroutine(f func()) {
	sess.wg.Add(1)
	go func() {
		defer sess.wg.Done()
		f()
	}()
}

// Open opens a new stream. It waits while the transport's stream limit is
// reached, until ctx is done. It fails at once, with an error matching
// window.ErrBudgetExhausted, if the session budget cannot hold the new
// stream's initial receive window and its StreamOverhead; with ErrGoAway once either side has
// sent GOAWAY. The stream is compressed as Config.Compression says
// (OpenStream chooses per stream).
func (sess *Session) Open(ctx context.Context) (*Stream, error) {
	return sess.OpenStream(ctx, StreamOptions{Compression: sess.cfg.Compression})
}

func (sess *Session) open(ctx context.Context, opts StreamOptions) (*Stream, error) {
	if err := sess.allowOpen(); err != nil {
		return nil, err
	}
	sess.mu.Lock()
	switch {
	case sess.isClosed():
		sess.mu.Unlock()
		return nil, sess.err()
	case sess.goAwayRecvd || sess.goAwaySent:
		sess.mu.Unlock()
		return nil, ErrGoAway
	}
	id := sess.nextID
	if id > framing.MaxVarint {
		sess.mu.Unlock()
		return nil, errors.New("mux: open: stream IDs exhausted")
	}
	sess.nextID += 2
	sess.mu.Unlock()

	recv, err := sess.newReceiver()
	if err != nil {
		sess.obs.refusals.Add(1)
		sess.emitSession(EventBudgetRefused, func(ev *Event) { ev.Stream, ev.Value = id, sess.cfg.InitialWindow })
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	lane, err := sess.conn.OpenLane(ctx)
	if err != nil {
		sess.closeReceiver(recv)
		if sess.isClosed() {
			return nil, sess.err()
		}
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	s := newStream(sess, id, lane, recv, sess.peerInitial.Load())
	s.accepted = true
	s.setSendCodec(opts.Compression)
	if opts.Priority != nil {
		s.SetPriority(*opts.Priority)
	}
	sess.mu.Lock()
	if sess.isClosed() {
		sess.mu.Unlock()
		sess.closeReceiver(recv)
		lane.CancelWrite(uint64(framing.Cancel))
		return nil, sess.err()
	}
	if sess.goAwayRecvd || sess.goAwaySent {
		// A GOAWAY came or went while the lane opened, and this side may
		// have sent DONE since: the peer never heard of this stream, so
		// abandoning its lane loses nothing.
		sess.mu.Unlock()
		sess.closeReceiver(recv)
		lane.CancelWrite(uint64(framing.RefusedStream))
		lane.CancelRead(uint64(framing.RefusedStream))
		return nil, ErrGoAway
	}
	sess.streams[id] = s
	sess.idleSince = time.Time{}
	// The peer's SETTINGS may have raised the initial window since s was
	// made: applySettings raises only the streams registered when it runs.
	s.send.OnUpdate(sess.peerInitial.Load())
	// Counted under mu, with the session known open: Close waits for the
	// reader (see waitGoroutines).
	sess.wg.Add(1)
	sess.mu.Unlock()
	sess.stats.opened.Add(1)
	go s.laneReader(bufio.NewReaderSize(lane, laneReadBuffer), nil)

	// The opening frame makes the stream known to the peer at once.
	s.laneMu.Lock()
	buf := sess.frameBuf()
	_, err = lane.Write(appendOpening(buf[:0], id, opts.Compression))
	sess.putFrameBuf(buf)
	s.laneMu.Unlock()
	if err != nil {
		err = sess.laneError(err)
		s.laneWriteFailed(err)
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	s.emitLifecycle(EventStreamOpened, 0, false)
	return s, nil
}

// Accept waits for the next stream the peer opens. A stream the peer
// reset before Accept took it is never returned: it was refused.
//
// Streams the application does not accept wait in a queue, bounded by
// Config.MaxStreams (streams past it are refused, SPEC.md 6.2); Shutdown
// refuses those still waiting, so that their openers may retry them.
func (sess *Session) Accept(ctx context.Context) (*Stream, error) {
	for {
		if s := sess.nextAccepted(); s != nil {
			return s, nil
		}
		select {
		case <-sess.acceptReady:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sess.done:
			return nil, sess.err()
		}
	}
}

// nextAccepted takes the oldest queued stream that is not refused and
// marks it accepted, or returns nil.
func (sess *Session) nextAccepted() *Stream {
	for {
		sess.mu.Lock()
		if len(sess.acceptQ) == 0 {
			sess.mu.Unlock()
			return nil
		}
		s := sess.acceptQ[0]
		sess.acceptQ[0] = nil
		sess.acceptQ = sess.acceptQ[1:]
		more := len(sess.acceptQ) > 0
		sess.mu.Unlock()
		if more {
			signal(sess.acceptReady) // for the next Accept
		}
		s.mu.Lock()
		ok := !s.refused
		s.accepted = ok
		s.mu.Unlock()
		if ok {
			return s
		}
	}
}

// GoAway starts a graceful end of the session: neither side opens new
// streams, peer streams opened after it are refused, and streams in
// progress go on. When both sides have no stream left, they tell each
// other so (GOAWAY with DONE), and the session closes with NO_ERROR: only
// then is every frame of every stream known to have arrived (SPEC.md 5.7).
func (sess *Session) GoAway(code framing.ErrorCode) {
	sess.mu.Lock()
	if !sess.goAwaySent {
		sess.goAwaySent = true
		sess.goAwayLast = sess.lastPeerID
		sess.pendGoAway, sess.goAwayCode = true, code
	}
	closeNow := sess.maybeDoneLocked()
	sess.mu.Unlock()
	signal(sess.ctlSignal)
	if closeNow {
		sess.closeGracefully()
	}
}

// maybeDoneLocked queues this side's GOAWAY with DONE once a GOAWAY went
// either way and no stream is left, and reports whether the session can
// now close: both sides are done.
func (sess *Session) maybeDoneLocked() (closeNow bool) {
	if !sess.goAwaySent && !sess.goAwayRecvd || len(sess.streams) > 0 {
		return false
	}
	if !sess.doneSent {
		sess.doneSent = true
		if !sess.goAwaySent { // DONE is this side's GOAWAY too
			sess.goAwaySent, sess.goAwayLast = true, sess.lastPeerID
		}
		sess.pendGoAway = true
	}
	return sess.doneRecvd
}

// closeGracefully closes a session both of whose sides are done.
func (sess *Session) closeGracefully() {
	sess.shutdown(&SessionError{Code: framing.NoError, Err: errGracefulEnd})
}

// errGracefulEnd is the cause of a session that closed after both sides
// sent GOAWAY with DONE.
var errGracefulEnd = errors.New("graceful shutdown: both sides finished all streams")

// Shutdown ends the session gracefully (see GoAway) and waits until it has
// closed: when both sides have finished all their streams, so that nothing
// sent is lost in transit. If ctx ends first, it closes the session at once
// and returns ctx's error. It returns nil after a graceful close, or the
// session's error if it ended otherwise.
func (sess *Session) Shutdown(ctx context.Context) error {
	sess.GoAway(framing.NoError)
	sess.refuseQueued()
	select {
	case <-sess.done:
	case <-ctx.Done():
		n := len(sess.Streams())
		sess.CloseWithError(framing.NoError, fmt.Sprintf("shutdown deadline passed with %d streams unfinished", n))
		return ctx.Err()
	}
	sess.Close()
	var se *SessionError
	if !errors.As(sess.closeErr, &se) || se.Code != framing.NoError {
		return sess.closeErr
	}
	// Graceful only if both sides were done: this side closed after the
	// DONE exchange, or the peer closed with NO_ERROR after this side
	// sent DONE (which may overtake the peer's own DONE, SPEC.md 5.7). A
	// peer's NO_ERROR close before that vouches for nothing.
	sess.mu.Lock()
	doneSent := sess.doneSent
	sess.mu.Unlock()
	if errors.Is(se, errGracefulEnd) || se.Remote && doneSent {
		return nil
	}
	return sess.closeErr
}

// Close closes the session at once with NO_ERROR: every blocked Read,
// Write, Open and Accept returns an error matching ErrSessionClosed, and
// the session's goroutines have ended when Close returns.
func (sess *Session) Close() error {
	sess.shutdown(&SessionError{Code: framing.NoError, Err: errors.New("closed by the application")})
	sess.waitGoroutines()
	return nil
}

// waitGoroutines waits for the session's goroutines once it is closed.
// Open counts a stream's reader under mu after checking the session is
// open, so passing through mu here first means no count can be added
// while Wait runs.
func (sess *Session) waitGoroutines() {
	sess.mu.Lock()
	//lint:ignore SA2001 an empty critical section is the point: a barrier
	sess.mu.Unlock()
	sess.wg.Wait()
}

// CloseWithError closes the session with a bp/1 error code.
func (sess *Session) CloseWithError(code framing.ErrorCode, reason string) error {
	var err error
	if reason != "" {
		err = errors.New(reason)
	}
	sess.shutdown(&SessionError{Code: code, Err: err})
	sess.waitGoroutines()
	return nil
}

// Done is closed when the session has closed.
func (sess *Session) Done() <-chan struct{} { return sess.done }

// Err returns why the session closed, or nil while it is open.
func (sess *Session) Err() error {
	if !sess.isClosed() {
		return nil
	}
	return sess.closeErr
}

func (sess *Session) isClosed() bool { return isClosed(sess.done) }

// err is the error for operations on a closed session.
func (sess *Session) err() error {
	<-sess.done
	return sess.closeErr
}

func (sess *Session) shutdown(e *SessionError) {
	sess.closeOnce.Do(func() {
		sess.closeErr = e
		sess.observeClose(e) // before Done, so that what waits on it sees the log
		sess.cancel()
		sess.compress.pool.Close()
		reason := ""
		if e.Err != nil {
			reason = e.Err.Error()
		}
		sess.conn.CloseWithError(uint64(e.Code), reason)
	})
}

// fail closes the session because of err: a peer's close is recorded as
// such; anything else closes with INTERNAL_ERROR unless it already is a
// *SessionError.
func (sess *Session) fail(err error) {
	var se *SessionError
	var ae *transport.ApplicationError
	switch {
	case errors.As(err, &se):
		sess.shutdown(se)
	case errors.Is(err, transport.ErrIdleTimeout):
		sess.shutdown(&SessionError{Code: framing.KeepaliveTimeout,
			Err: fmt.Errorf("%w: the peer stopped answering: nothing heard for %v (%w)", ErrPeerUnreachable, sess.cfg.DeadPeerTimeout, err)})
	case errors.As(err, &ae):
		sess.shutdown(&SessionError{Code: framing.ErrorCode(ae.Code), Remote: ae.Remote, Err: err})
	default:
		sess.shutdown(&SessionError{Code: framing.InternalError, Err: err})
	}
}

// protocolErr closes the session because the peer broke the protocol, and
// returns the error.
func (sess *Session) protocolErr(code framing.ErrorCode, err error) error {
	se := &SessionError{Code: code, Err: err}
	sess.shutdown(se)
	return se
}

func (sess *Session) protocolError(code framing.ErrorCode, err error) {
	sess.protocolErr(code, err)
}

// laneError turns a lane's write error into what a stream reports.
func (sess *Session) laneError(err error) error {
	if sess.isClosed() {
		return sess.err()
	}
	var ae *transport.ApplicationError
	if errors.As(err, &ae) {
		sess.fail(err)
		return sess.err()
	}
	return err
}

// newReceiver takes a new stream's receive window, and its
// StreamOverhead, from the budget; closeReceiver gives them back.
func (sess *Session) newReceiver() (*window.Receiver, error) {
	r, err := window.NewReceiver(sess.windowConfig(), sess.budget, sess.cfg.Now())
	if err == nil {
		sess.stats.receivers.Add(1)
	}
	return r, err
}

func (sess *Session) closeReceiver(r *window.Receiver) {
	r.Close()
	sess.stats.receivers.Add(-1)
}

func (sess *Session) windowConfig() window.Config {
	idle := sess.cfg.IdleShrinkAfter
	if idle < 0 {
		idle = 0
	}
	return window.Config{Initial: sess.cfg.InitialWindow, Max: sess.cfg.MaxWindow, IdleAfter: idle, Overhead: StreamOverhead}
}

func (sess *Session) rtt() time.Duration {
	if r := sess.conn.RTT(); r > 0 {
		return r
	}
	return time.Duration(sess.pingRTT.Load())
}

func (sess *Session) isPeerID(id uint64) bool { return (id%2 == 1) != sess.client }

// Stats returns a snapshot of the session's counters.
func (sess *Session) Stats() SessionStats {
	rateRefused := sess.obs.rateRefused.Load() // before StreamsRefused: see serveLane
	sess.mu.Lock()
	n, queued := len(sess.streams), len(sess.acceptQ)
	sess.mu.Unlock()
	st := SessionStats{
		Streams:          n,
		AcceptQueue:      queued,
		StreamsOpened:    sess.stats.opened.Load(),
		StreamsAccepted:  sess.stats.accepted.Load(),
		StreamsRefused:   sess.stats.refused.Load(),
		BudgetUsed:       sess.budget.Used(),
		BudgetTotal:      sess.budget.Total(),
		Overhead:         SessionOverhead + uint64(sess.stats.receivers.Load())*StreamOverhead,
		RTT:              sess.rtt(),
		BytesSent:        sess.stats.bytesSent.Load(),
		BytesReceived:    sess.stats.bytesReceived.Load(),
		UpdatesSent:      sess.stats.updatesSent.Load(),
		UpdatesReceived:  sess.stats.updatesReceived.Load(),
		Stalls:           sess.stats.stalls.Load(),
		SmallFramesPaced: sess.stats.paced.Load(),
		PingsSent:        sess.stats.pingsSent.Load(),
		PingsReceived:    sess.stats.pingsRecvd.Load(),
	}
	sess.fillObserved(&st)
	st.StreamsRateRefused = rateRefused
	sess.fillCompression(&st)
	return st
}

// Streams returns the streams open now.
func (sess *Session) Streams() []*Stream {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	out := make([]*Stream, 0, len(sess.streams))
	for _, s := range sess.streams {
		out = append(out, s)
	}
	return out
}

// LocalAddr returns the local network address.
func (sess *Session) LocalAddr() net.Addr { return sess.conn.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (sess *Session) RemoteAddr() net.Addr { return sess.conn.RemoteAddr() }
