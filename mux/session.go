// Package mux runs bp/1 sessions: many logical streams over one transport
// connection, each with an application-level receive window in each
// direction, so that a slow reader stalls its writer end to end and every
// buffer on the way is bounded.
//
// A Session is made from a transport.Conn with New. Streams are opened
// with Open and accepted with Accept; each is a net.Conn whose Read returns
// credit to the peer as the application consumes data. SPEC.md describes
// the wire protocol.
package mux

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

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

	frameBufs sync.Pool     // of *[frameBufSize]byte, for frames streams write
	accept    chan *Stream  // peer streams not yet accepted; cap MaxStreams
	ctlSignal chan struct{} // wakes the control writer

	peerInitial  atomic.Uint64 // peer's SETTINGS_INITIAL_WINDOW
	peerMaxFrame atomic.Uint64 // peer's SETTINGS_MAX_FRAME_PAYLOAD
	uselessCount atomic.Int64  // frames that did no work, this second
	pingRTT      atomic.Int64  // RTT measured by PING, in ns
	stats        struct {
		bytesSent, bytesReceived      atomic.Uint64
		updatesSent, updatesReceived  atomic.Uint64
		stalls, pingsSent, pingsRecvd atomic.Uint64
		opened, accepted, refused     atomic.Uint64
	}

	mu             sync.Mutex // guards the fields below
	streams        map[uint64]*Stream
	nextID         uint64
	peerOpen       int // open streams the peer opened, against MaxStreams
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
		conn:      conn,
		cfg:       c,
		client:    conn.IsClient(),
		budget:    window.NewBudget(c.SessionBudget),
		ctx:       ctx,
		cancel:    cancel,
		done:      ctx.Done(),
		accept:    make(chan *Stream, c.MaxStreams),
		ctlSignal: make(chan struct{}, 1),
		streams:   make(map[uint64]*Stream),
		nextID:    2,
	}
	if sess.client {
		sess.nextID = 1
	}
	sess.peerInitial.Store(DefaultInitialWindow)
	sess.peerMaxFrame.Store(DefaultMaxFramePayload)
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
// stream's initial receive window; with ErrGoAway once either side has
// sent GOAWAY.
func (sess *Session) Open(ctx context.Context) (*Stream, error) {
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

	recv, err := window.NewReceiver(sess.windowConfig(), sess.budget, sess.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	lane, err := sess.conn.OpenLane(ctx)
	if err != nil {
		recv.Close()
		if sess.isClosed() {
			return nil, sess.err()
		}
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	s := newStream(sess, id, lane, recv, sess.peerInitial.Load())
	s.accepted = true
	sess.mu.Lock()
	if sess.isClosed() {
		sess.mu.Unlock()
		recv.Close()
		lane.CancelWrite(uint64(framing.Cancel))
		return nil, sess.err()
	}
	sess.streams[id] = s
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
	_, err = lane.Write(framing.AppendDataHeader(buf[:0], id, 0, false))
	sess.putFrameBuf(buf)
	s.laneMu.Unlock()
	if err != nil {
		err = sess.laneError(err)
		s.laneWriteFailed(err)
		return nil, fmt.Errorf("mux: open: %w", err)
	}
	return s, nil
}

// Accept waits for the next stream the peer opens.
func (sess *Session) Accept(ctx context.Context) (*Stream, error) {
	select {
	case s := <-sess.accept:
		s.mu.Lock()
		s.accepted = true
		s.mu.Unlock()
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-sess.done:
		return nil, sess.err()
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
	sess.shutdown(&SessionError{Code: framing.NoError, Err: errors.New("graceful shutdown: both sides finished all streams")})
}

// Shutdown ends the session gracefully (see GoAway) and waits until it has
// closed: when both sides have finished all their streams, so that nothing
// sent is lost in transit. If ctx ends first, it closes the session at once
// and returns ctx's error. It returns nil after a graceful close, or the
// session's error if it ended otherwise.
func (sess *Session) Shutdown(ctx context.Context) error {
	sess.GoAway(framing.NoError)
	select {
	case <-sess.done:
	case <-ctx.Done():
		sess.Close()
		return ctx.Err()
	}
	sess.Close()
	var se *SessionError
	if errors.As(sess.closeErr, &se) && se.Code == framing.NoError {
		return nil
	}
	return sess.closeErr
}

// Close closes the session at once with NO_ERROR: every blocked Read,
// Write, Open and Accept returns an error matching ErrSessionClosed, and
// the session's goroutines have ended when Close returns.
func (sess *Session) Close() error {
	sess.shutdown(&SessionError{Code: framing.NoError})
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
		sess.cancel()
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

// useless counts a frame that did no work, and closes the session with
// ENHANCE_YOUR_CALM when the peer sends too many of them.
func (sess *Session) useless() error {
	if sess.uselessCount.Add(1) > int64(sess.cfg.MaxUselessFramesPerSecond) {
		return sess.protocolErr(framing.EnhanceYourCalm, fmt.Errorf("more than %d useless frames in a second", sess.cfg.MaxUselessFramesPerSecond))
	}
	return nil
}

func (sess *Session) windowConfig() window.Config {
	idle := sess.cfg.IdleShrinkAfter
	if idle < 0 {
		idle = 0
	}
	return window.Config{Initial: sess.cfg.InitialWindow, Max: sess.cfg.MaxWindow, IdleAfter: idle}
}

func (sess *Session) rtt() time.Duration {
	if r := sess.conn.RTT(); r > 0 {
		return r
	}
	return time.Duration(sess.pingRTT.Load())
}

func (sess *Session) hasHook() bool { return sess.cfg.OnEvent != nil }

func (sess *Session) emit(ev Event) {
	if sess.cfg.OnEvent != nil {
		sess.cfg.OnEvent(ev)
	}
}

func (sess *Session) emitAll(evs []Event) {
	for _, ev := range evs {
		sess.emit(ev)
	}
}

func (sess *Session) removeStream(s *Stream) {
	sess.mu.Lock()
	if sess.streams[s.id] == s {
		delete(sess.streams, s.id)
		if sess.isPeerID(s.id) {
			sess.peerOpen--
		}
	}
	empty := len(sess.streams) == 0
	closeNow := sess.maybeDoneLocked()
	sess.mu.Unlock()
	if empty {
		signal(sess.ctlSignal)
	}
	if closeNow {
		sess.closeGracefully()
	}
}

func (sess *Session) isPeerID(id uint64) bool { return (id%2 == 1) != sess.client }

// acceptLanes accepts the peer's lanes, each served by its own goroutine
// until the lane ends. Their number is bounded by the transport's stream
// limit, which is MaxStreams.
func (sess *Session) acceptLanes() {
	for {
		lane, err := sess.conn.AcceptLane(sess.ctx)
		if err != nil {
			sess.fail(err)
			return
		}
		sess.goroutine(func() { sess.serveLane(lane) })
	}
}

// serveLane reads a peer lane's opening frame, admits or refuses the
// stream, and then runs the stream's reader.
func (sess *Session) serveLane(lane transport.Lane) {
	br := bufio.NewReaderSize(lane, laneReadBuffer)
	h, err := framing.ReadHeader(br)
	if err != nil {
		if !sess.isClosed() {
			if errors.Is(err, framing.ErrMalformed) || errors.Is(err, framing.ErrFrameSize) {
				sess.protocolError(codeFor(err), err)
				return
			}
			if errors.Is(err, io.ErrUnexpectedEOF) { // FIN inside the first frame
				sess.protocolError(framing.ProtocolError, errors.New("lane ended inside its first frame"))
				return
			}
			lane.CancelRead(uint64(framing.ProtocolError))
			lane.CancelWrite(uint64(framing.ProtocolError))
		}
		return
	}
	if !h.Type.Known() || !h.Type.IsStreamFrame() {
		sess.protocolError(framing.ProtocolError, fmt.Errorf("lane opened with %v", h.Type))
		return
	}
	s, err := sess.admit(h.StreamID, lane)
	if err != nil {
		sess.fail(err)
		return
	}
	if s == nil {
		sess.refuse(lane, h.StreamID)
		return
	}
	// The stream's own reader takes over in a goroutine of its own, whose
	// stack starts small (see laneReader); this one ends.
	sess.wg.Add(1)
	go s.laneReader(br, &h)
}

// admit registers a stream the peer opened, or returns nil to refuse it.
func (sess *Session) admit(id uint64, lane transport.Lane) (*Stream, error) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	switch {
	case sess.isClosed():
		return nil, sess.closeErr
	case !sess.isPeerID(id):
		return nil, sess.protocolErr(framing.ProtocolError, fmt.Errorf("peer opened stream %d with this side's parity", id))
	case sess.streams[id] != nil:
		return nil, sess.protocolErr(framing.ProtocolError, fmt.Errorf("peer opened stream %d, which is already open", id))
	}
	sess.lastPeerID = max(sess.lastPeerID, id)
	if (sess.goAwaySent && id > sess.goAwayLast) || sess.peerOpen >= sess.cfg.MaxStreams {
		return nil, nil
	}
	recv, err := window.NewReceiver(sess.windowConfig(), sess.budget, sess.cfg.Now())
	if err != nil {
		return nil, nil // no budget for its floor: refused, never given zero credit
	}
	s := newStream(sess, id, lane, recv, sess.peerInitial.Load())
	sess.streams[id] = s
	sess.peerOpen++
	sess.stats.accepted.Add(1)
	sess.accept <- s // never blocks: at most MaxStreams peer streams exist
	return s, nil
}

// refuse answers a peer stream with STOP_SENDING and RESET, both
// REFUSED_STREAM, and abandons its lane.
func (sess *Session) refuse(lane transport.Lane, id uint64) {
	sess.stats.refused.Add(1)
	var b [2 * (framing.MaxHeaderLen + 8)]byte
	out := appendFrame(b[:0], &framing.Frame{Header: framing.Header{Type: framing.TypeStopSending, StreamID: id}, ErrorCode: framing.RefusedStream})
	out = appendFrame(out, &framing.Frame{Header: framing.Header{Type: framing.TypeReset, StreamID: id}, ErrorCode: framing.RefusedStream})
	lane.Write(out)
	lane.CloseWrite()
	lane.CancelRead(uint64(framing.RefusedStream))
	sess.useless()
}

// controlWriter owns this side's control lane: SETTINGS first, then the
// session frames queued in the pend* fields.
func (sess *Session) controlWriter() {
	ctl, err := sess.conn.OpenControl(sess.ctx)
	if err != nil {
		sess.fail(err)
		return
	}
	b := make([]byte, 0, 256)
	b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeSettings}, Settings: framing.Settings{
		InitialWindow:   sess.cfg.InitialWindow,
		MaxFramePayload: sess.cfg.MaxFramePayload,
		MaxStreams:      uint64(sess.cfg.MaxStreams),
	}})
	for {
		if len(b) > 0 {
			if _, err := ctl.Write(b); err != nil {
				sess.fail(err)
				return
			}
		}
		select {
		case <-sess.ctlSignal:
		case <-sess.done:
			return
		}
		b = b[:0]
		sess.mu.Lock()
		if sess.pendPingAck {
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypePing, Flags: framing.FlagACK}, PingData: sess.pingAckData})
			sess.pendPingAck = false
		}
		if sess.pendPing {
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypePing}, PingData: sess.pingData})
			sess.pendPing = false
			sess.stats.pingsSent.Add(1)
		}
		if sess.pendGoAway {
			var flags framing.Flags
			if sess.doneSent {
				flags = framing.FlagDone
			}
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeGoAway, Flags: flags}, LastStreamID: sess.goAwayLast, ErrorCode: sess.goAwayCode})
			sess.pendGoAway = false
		}
		sess.mu.Unlock()
	}
}

// controlReader owns the peer's control lane.
func (sess *Session) controlReader() {
	r, err := sess.conn.AcceptControl(sess.ctx)
	if err != nil {
		sess.fail(err)
		return
	}
	br := bufio.NewReaderSize(r, laneReadBuffer)
	var payload [framing.MaxControlPayload]byte
	var f framing.Frame
	for first := true; ; first = false {
		h, err := framing.ReadHeader(br)
		if err == nil && h.Type.Known() && h.Type.IsStreamFrame() {
			err = sess.protocolErr(framing.ProtocolError, fmt.Errorf("%v on the control lane", h.Type))
		}
		if err == nil {
			_, err = io.ReadFull(br, payload[:h.Length])
		}
		if err != nil {
			sess.controlEnded(err)
			return
		}
		if !h.Type.Known() {
			if sess.useless() != nil {
				return
			}
			continue
		}
		if err := framing.DecodePayload(&f, h, payload[:h.Length]); err != nil {
			sess.protocolError(codeFor(err), err)
			return
		}
		if first != (f.Type == framing.TypeSettings) {
			sess.protocolError(framing.SettingsError, fmt.Errorf("%v where SETTINGS must come first and once", f.Type))
			return
		}
		if err := sess.onControl(&f); err != nil {
			return
		}
	}
}

func (sess *Session) controlEnded(err error) {
	if sess.isClosed() {
		return
	}
	switch {
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		sess.protocolError(framing.ProtocolError, errors.New("peer ended its control lane"))
	case errors.Is(err, framing.ErrMalformed) || errors.Is(err, framing.ErrFrameSize):
		sess.protocolError(codeFor(err), err)
	default:
		sess.fail(err)
	}
}

func (sess *Session) onControl(f *framing.Frame) error {
	switch f.Type {
	case framing.TypeSettings:
		return sess.applySettings(f.Settings)
	case framing.TypePing:
		if f.Flags&framing.FlagACK != 0 {
			sess.mu.Lock()
			match := sess.pingWaiting && f.PingData == sess.pingData
			if match {
				sess.pingWaiting = false
				sess.pingRTT.Store(int64(sess.cfg.Now().Sub(sess.pingSentAt)))
			}
			sess.mu.Unlock()
			if !match {
				return sess.useless()
			}
			return nil
		}
		sess.stats.pingsRecvd.Add(1)
		if err := sess.useless(); err != nil {
			return err
		}
		sess.mu.Lock()
		sess.pendPingAck, sess.pingAckData = true, f.PingData
		sess.mu.Unlock()
		signal(sess.ctlSignal)
	case framing.TypeGoAway:
		last := f.LastStreamID
		sess.mu.Lock()
		var err error
		switch {
		case last != 0 && sess.isPeerID(last):
			err = fmt.Errorf("GOAWAY names stream %d, which this side did not open", last)
		case sess.goAwayRecvd && last > sess.peerGoAwayLast:
			err = fmt.Errorf("GOAWAY raised Last Stream ID from %d to %d", sess.peerGoAwayLast, last)
		}
		sess.goAwayRecvd, sess.peerGoAwayLast = true, last
		sess.doneRecvd = sess.doneRecvd || f.Flags&framing.FlagDone != 0
		closeNow := err == nil && sess.maybeDoneLocked()
		sess.mu.Unlock()
		if err != nil {
			return sess.protocolErr(framing.ProtocolError, err)
		}
		signal(sess.ctlSignal)
		if closeNow {
			sess.closeGracefully()
		}
	}
	return nil
}

func (sess *Session) applySettings(st framing.Settings) error {
	if st.InitialWindow != 0 && st.InitialWindow < DefaultInitialWindow {
		return sess.protocolErr(framing.SettingsError, fmt.Errorf("SETTINGS_INITIAL_WINDOW %d below %d", st.InitialWindow, DefaultInitialWindow))
	}
	if st.MaxFramePayload != 0 && st.MaxFramePayload < DefaultMaxFramePayload {
		return sess.protocolErr(framing.SettingsError, fmt.Errorf("SETTINGS_MAX_FRAME_PAYLOAD %d below %d", st.MaxFramePayload, DefaultMaxFramePayload))
	}
	if st.MaxFramePayload != 0 {
		sess.peerMaxFrame.Store(st.MaxFramePayload)
	}
	if st.InitialWindow == 0 {
		return nil
	}
	sess.peerInitial.Store(st.InitialWindow)
	sess.mu.Lock()
	streams := make([]*Stream, 0, len(sess.streams))
	for _, s := range sess.streams {
		streams = append(streams, s)
	}
	sess.mu.Unlock()
	for _, s := range streams { // the initial window applies to streams already open
		s.mu.Lock()
		s.send.OnUpdate(st.InitialWindow)
		s.mu.Unlock()
		signal(s.writeReady)
	}
	return nil
}

// housekeeping runs the session's timers: the useless-frame rate limit,
// idle window shrink, and keepalive.
func (sess *Session) housekeeping() {
	const period = time.Second
	t := time.NewTicker(period)
	defer t.Stop()
	var lastPing time.Time
	var seq uint64
	var streams []*Stream
	for {
		select {
		case <-t.C:
		case <-sess.done:
			return
		}
		sess.uselessCount.Store(0)
		now := sess.cfg.Now()
		sess.mu.Lock()
		streams = streams[:0] // reused from tick to tick
		for _, s := range sess.streams {
			streams = append(streams, s)
		}
		timedOut := sess.pingWaiting && now.Sub(sess.pingSentAt) > sess.cfg.DeadPeerTimeout-sess.cfg.KeepAliveInterval
		sendPing := sess.cfg.KeepAliveInterval > 0 && !sess.pingWaiting && now.Sub(lastPing) >= sess.cfg.KeepAliveInterval
		if sendPing {
			seq++
			binary.BigEndian.PutUint64(sess.pingData[:], seq)
			sess.pendPing, sess.pingWaiting, sess.pingSentAt = true, true, now
			lastPing = now
		}
		sess.mu.Unlock()
		if timedOut && sess.cfg.KeepAliveInterval > 0 {
			sess.protocolError(framing.KeepaliveTimeout, fmt.Errorf("%w: no PING answer in %v", ErrPeerUnreachable, sess.cfg.DeadPeerTimeout-sess.cfg.KeepAliveInterval))
			return
		}
		if sendPing {
			signal(sess.ctlSignal)
		}
		for i, s := range streams {
			s.tick(now, 2*period)
			streams[i] = nil // let retired streams go
		}
	}
}

// Stats returns a snapshot of the session's counters.
func (sess *Session) Stats() SessionStats {
	sess.mu.Lock()
	n := len(sess.streams)
	sess.mu.Unlock()
	return SessionStats{
		Streams:         n,
		StreamsOpened:   sess.stats.opened.Load(),
		StreamsAccepted: sess.stats.accepted.Load(),
		StreamsRefused:  sess.stats.refused.Load(),
		BudgetUsed:      sess.budget.Used(),
		BudgetTotal:     sess.budget.Total(),
		RTT:             sess.rtt(),
		BytesSent:       sess.stats.bytesSent.Load(),
		BytesReceived:   sess.stats.bytesReceived.Load(),
		UpdatesSent:     sess.stats.updatesSent.Load(),
		UpdatesReceived: sess.stats.updatesReceived.Load(),
		Stalls:          sess.stats.stalls.Load(),
		PingsSent:       sess.stats.pingsSent.Load(),
		PingsReceived:   sess.stats.pingsRecvd.Load(),
	}
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
