package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bpmux/bp/transport/tcpframe"
)

// tcpBatch is how many bytes of frames the writer hands TLS at once: a few
// lanes' turns (tcpframe.MaxData each) per system call.
const tcpBatch = 4 * tcpframe.MaxData

// tcpReadBuffer is the size of the reader's buffer, which must hold
// tcpframe.MaxFrame. It is small on purpose: the reader reads a
// LANE_DATA payload straight from TLS into its lane's queue once the
// buffer is empty (see receiveData), so the buffer mostly carries frame
// headers and small frames, and what it takes in of a large payload is
// copied twice.
const tcpReadBuffer = 2 << 10

// errBufferExceeded is the cause of a connection closed because the peer
// sent more unread data than MaxLaneBuffer or MaxConnBuffer allow.
var errBufferExceeded = errors.New("peer sent past the receive buffer")

// tcpConn is one connection of the TCP binding. A reader goroutine parses
// frames and files their data into lane buffers without ever waiting for
// a lane's reader; a writer goroutine sends control frames first, then
// takes turns between the lanes with data (see fill); a keepalive
// goroutine sends PINGs and enforces the idle timeout. One mutex guards
// all state but what the goroutines own.
type tcpConn struct {
	raw     net.Conn
	tc      *tls.Conn
	client  bool
	set     tcpSettings
	release func() // the listener's accounting, or nil; called once on close
	// listenerState is the connection's place in its listener's counts
	// (guarded by the listener's mu), nil for a dialled connection.
	listenerState *tcpConnState

	done       chan struct{} // closed when the connection closes
	writeWake  chan struct{} // wakes the writer; capacity 1
	writerDone chan struct{} // closed when the writer has sent what it could
	lastRecv   atomic.Int64  // UnixNano of the last frame received
	srtt       atomic.Int64  // smoothed RTT in ns, 0 before a sample

	mu       sync.Mutex
	closeErr error  // what calls return once closed; nil while open
	final    []byte // CLOSE or ABORT for the writer to send last, or nil
	hard     bool   // close the socket at once, sending nothing more

	lanes      map[uint64]*tcpLane // lanes with a direction still in use, by ID
	nextLocal  uint64              // number of the next bidirectional lane opened here
	peerMax    uint64              // this side may open lanes numbered below it
	openWake   tcpWaker
	nextPeer   uint64 // the peer opened the lanes numbered below it
	incoming   []*tcpLane
	acceptWake tcpWaker
	grant      uint64 // MAX_LANES: the peer may open lanes numbered below it
	grantDirty bool   // grant has not been sent yet
	ctlOpened  bool
	ctlIn      *tcpLane // the peer's control lane, once a frame for it came
	ctlTaken   bool
	ctlWake    tcpWaker
	buffered   int       // bytes received on all lanes and not read yet
	chunks     chunkPool // the lanes' spare chunks

	ring     []*tcpLane // lanes with data or a FIN to send, in turn
	ctrl     []byte     // encoded LANE_RESET and LANE_STOP frames to send
	pong     bool       // a PONG for pongVal is due
	pongVal  uint64
	ping     bool // a PING for pingVal is due
	pingVal  uint64
	pingSent time.Time // when the last PING went to TLS, zero once answered
}

// newTCPConn starts a connection on a completed TLS handshake.
func newTCPConn(raw net.Conn, tc *tls.Conn, client bool, set tcpSettings, release func()) *tcpConn {
	c := &tcpConn{
		raw:        raw,
		tc:         tc,
		client:     client,
		set:        set,
		release:    release,
		done:       make(chan struct{}),
		writeWake:  make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		lanes:      make(map[uint64]*tcpLane),
		grant:      set.maxLanes,
		grantDirty: true, // the first frame each side sends
		ping:       true, // an RTT sample at once
		pingVal:    1,
	}
	c.lastRecv.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.writeLoop()
	go c.keepalive()
	return c
}

var _ Conn = (*tcpConn)(nil)

// kick wakes the writer.
func (c *tcpConn) kick() {
	select {
	case c.writeWake <- struct{}{}:
	default:
	}
}

// waitLocked waits, with c.mu held on entry and on return, until w is
// woken (w may be nil), ctx is done or the connection closes. It returns
// ctx.Err() only if ctx is done and the connection is still open.
func (c *tcpConn) waitLocked(ctx context.Context, w *tcpWaker) error {
	var ch <-chan struct{}
	if w != nil {
		ch = w.wait()
	}
	c.mu.Unlock()
	select {
	case <-ch:
	case <-c.done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	if c.closeErr != nil {
		return nil // the caller reports the close
	}
	return ctx.Err()
}

// OpenControl opens this side's control lane. The binding allows one each
// way: a second call blocks until ctx is done or the connection closes.
func (c *tcpConn) OpenControl(ctx context.Context) (SendLane, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closeErr != nil {
			return nil, c.closeErr
		}
		if !c.ctlOpened {
			c.ctlOpened = true
			l := c.newLane(tcpframe.LaneID(0, !c.client, true), true)
			l.recvDone = true
			return tcpSendLane{l}, nil
		}
		if err := c.waitLocked(ctx, nil); err != nil {
			return nil, err
		}
	}
}

// AcceptControl waits for the peer's control lane, which arrives with
// the first frame sent on it.
func (c *tcpConn) AcceptControl(ctx context.Context) (io.Reader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closeErr != nil {
			return nil, c.closeErr
		}
		if c.ctlIn != nil && !c.ctlTaken {
			c.ctlTaken = true
			return tcpRecvLane{c.ctlIn}, nil
		}
		if err := c.waitLocked(ctx, &c.ctlWake); err != nil {
			return nil, err
		}
	}
}

// OpenLane opens a bidirectional lane, waiting while the peer's MAX_LANES
// allows no more. The peer learns of it with the first frame sent on it.
func (c *tcpConn) OpenLane(ctx context.Context) (Lane, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closeErr != nil {
			return nil, c.closeErr
		}
		if c.nextLocal < c.peerMax {
			break
		}
		if err := c.waitLocked(ctx, &c.openWake); err != nil {
			return nil, err
		}
	}
	l := c.newLane(tcpframe.LaneID(c.nextLocal, !c.client, false), true)
	c.nextLocal++
	return l, nil
}

// AcceptLane waits for the next lane the peer opens, in the order of
// their IDs.
func (c *tcpConn) AcceptLane(ctx context.Context) (Lane, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closeErr != nil {
			return nil, c.closeErr
		}
		if len(c.incoming) > 0 {
			l := c.incoming[0]
			c.incoming[0] = nil
			c.incoming = c.incoming[1:]
			if len(c.incoming) == 0 {
				c.incoming = nil
			}
			return l, nil
		}
		if err := c.waitLocked(ctx, &c.acceptWake); err != nil {
			return nil, err
		}
	}
}

// CloseWithError closes the connection with a bp/1 error code, sent to the
// peer in a CLOSE frame. This side's blocked and later calls fail at once
// with *ApplicationError{Code: code}, the peer's with Remote set. Closing
// again does nothing.
func (c *tcpConn) CloseWithError(code uint64, reason string) error {
	frame := tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeClose, Code: code, Reason: []byte(reason)})
	c.close(&ApplicationError{Code: code, Reason: reason}, frame, false)
	return nil
}

// abort closes the connection with an error of the binding, sent to the
// peer in an ABORT frame.
func (c *tcpConn) abort(code uint64, reason string) {
	frame := tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeAbort, Code: code, Reason: []byte(reason)})
	c.close(fmt.Errorf("%w: closed locally: %s: %s", ErrConnClosed, tcpframe.AbortName(code), reason), frame, false)
}

// close records why the connection ended and wakes every waiter. A soft
// close lets the writer send final and half-close, and the reader drain
// the peer's data until it closes too, both within tcpLinger; a hard
// close shuts the socket at once.
func (c *tcpConn) close(err error, final []byte, hard bool) {
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return
	}
	c.closeErr, c.final, c.hard = err, final, hard
	c.incoming, c.ring, c.ctrl = nil, nil, nil
	// What the lanes hold is of no more use: calls now fail with
	// closeErr. Their chunks go back to the pool.
	for _, l := range c.lanes {
		l.in.Reset()
		l.out.Reset()
	}
	c.buffered = 0
	c.chunks.trim(true)
	c.mu.Unlock()
	if c.release != nil {
		c.release()
	}
	// Done only now, so that whoever waits on it finds the listener's
	// counts without this connection.
	close(c.done)
	if hard {
		c.raw.Close()
	} else {
		linger := min(tcpLinger, c.set.idle)
		c.raw.SetWriteDeadline(time.Now().Add(linger))
		c.raw.SetReadDeadline(time.Now().Add(2 * linger))
	}
	c.kick()
}

// Done is closed when the connection closes, for any reason.
func (c *tcpConn) Done() <-chan struct{} { return c.done }

// RTT returns the smoothed round-trip time of PING and PONG.
func (c *tcpConn) RTT() time.Duration { return time.Duration(c.srtt.Load()) }

func (c *tcpConn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *tcpConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }
func (c *tcpConn) IsClient() bool       { return c.client }

// keepalive queues a PING every third of the idle timeout and closes the
// connection once nothing has been heard for the whole of it.
func (c *tcpConn) keepalive() {
	tick := max(c.set.idle/6, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			if silent := now.Sub(time.Unix(0, c.lastRecv.Load())); silent >= c.set.idle {
				c.close(fmt.Errorf("%w: %w: nothing heard for %v", ErrConnClosed, ErrIdleTimeout, silent.Round(time.Millisecond)), nil, true)
				return
			}
			c.mu.Lock()
			c.chunks.trim(false) // an idle connection keeps no spare chunk
			ping := n%2 == 0
			if ping {
				c.ping = true
				c.pingVal++
			}
			c.mu.Unlock()
			if ping {
				c.kick()
			}
		}
	}
}

// writeLoop sends what is queued until the connection closes, then the
// final frame, and half-closes.
func (c *tcpConn) writeLoop() {
	defer close(c.writerDone)
	// A batch ends past tcpBatch by at most one LANE_DATA.
	buf := make([]byte, 0, tcpBatch+tcpframe.MaxData+2*tcpframe.MaxFrame)
	for {
		c.mu.Lock()
		for c.closeErr == nil && !c.hasWorkLocked() {
			c.mu.Unlock()
			select {
			case <-c.writeWake:
			case <-c.done:
			}
			c.mu.Lock()
		}
		if c.closeErr != nil {
			final, hard := c.final, c.hard
			c.mu.Unlock()
			if !hard {
				if final != nil {
					c.tc.Write(final)
				}
				c.tc.CloseWrite() // TLS close_notify
				if tcp, ok := c.raw.(*net.TCPConn); ok {
					tcp.CloseWrite()
				}
			}
			return
		}
		buf = c.fillLocked(buf[:0], time.Now())
		c.mu.Unlock()
		if _, err := c.tc.Write(buf); err != nil {
			c.close(fmt.Errorf("%w: write: %w", ErrConnClosed, err), nil, true)
		}
	}
}

func (c *tcpConn) hasWorkLocked() bool {
	return len(c.ring) > 0 || len(c.ctrl) > 0 || c.grantDirty || c.pong || c.ping
}

// fillLocked appends the next batch of frames to b: control frames first,
// then up to tcpBatch bytes of lane data, tcpframe.MaxData at most from
// each lane in turn, so that a lane with much to send cannot hold up
// another.
func (c *tcpConn) fillLocked(b []byte, now time.Time) []byte {
	if c.grantDirty {
		b = tcpframe.Append(b, tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: c.grant})
		c.grantDirty = false
	}
	if c.pong {
		b = tcpframe.Append(b, tcpframe.Frame{Type: tcpframe.TypePong, Value: c.pongVal})
		c.pong = false
	}
	if c.ping {
		b = tcpframe.Append(b, tcpframe.Frame{Type: tcpframe.TypePing, Value: c.pingVal})
		c.ping = false
		c.pingSent = now
	}
	b = append(b, c.ctrl...)
	c.ctrl = c.ctrl[:0]
	start := len(b)
	for len(b)-start < tcpBatch && len(c.ring) > 0 {
		l := c.ring[0]
		c.ring[0] = nil
		c.ring = c.ring[1:]
		l.queued = false
		if l.resetErr != nil {
			continue // its data was dropped; LANE_RESET is in ctrl
		}
		if n := min(l.out.Len(), tcpframe.MaxData); n > 0 {
			b = tcpframe.Append(b, tcpframe.Frame{Type: tcpframe.TypeData, Lane: l.id, Length: n})
			b = l.out.AppendTo(b, n)
			l.writeWake.wake()
		}
		switch {
		case l.out.Len() > 0:
			l.queued = true
			c.ring = append(c.ring, l)
		case l.finReq && !l.finSent:
			b = tcpframe.Append(b, tcpframe.Frame{Type: tcpframe.TypeFin, Lane: l.id})
			l.finSent = true
			l.sendDone = true
			c.updateLocked(l)
		}
	}
	if len(c.ring) == 0 {
		c.ring = nil // let the backing array go
	}
	return b
}

// readLoop reads frames until the connection fails or closes, then
// drains what the peer still sends until it closes, and closes the socket
// once the writer is done.
func (c *tcpConn) readLoop() {
	defer func() {
		<-c.writerDone
		c.raw.Close()
	}()
	br := bufio.NewReaderSize(c.tc, tcpReadBuffer)
	pieces := make([][]byte, 0, 3) // a payload's space in its lane's queue
	heard := false                 // a frame arrived
	for {
		f, err := readTCPFrame(br)
		open := false
		if err == nil {
			if f.Type == tcpframe.TypeData {
				open, err = c.receiveData(br, f, pieces)
			} else {
				open = c.handle(f)
			}
		}
		if err != nil {
			if errors.Is(err, tcpframe.ErrMalformed) {
				c.abort(tcpframe.AbortFrameError, err.Error())
			} else {
				c.close(readError(err, c.client && !heard), nil, true)
			}
			break
		}
		heard = true
		c.lastRecv.Store(time.Now().UnixNano())
		if !open {
			break
		}
	}
	io.Copy(io.Discard, br) // until the peer closes, or the linger deadline
}

// receiveData reads the payload of the LANE_DATA frame f, whose header
// came from br, into its lane's queue. A payload br holds whole is copied
// from br under the lock. A longer one is read without the lock into
// space its lane's queue lends out (chunkQueue.Reserve), from br and then
// straight from TLS once br is empty, so that most of it is copied once:
// pieces is the reader's scratch for that space. receiveData returns
// false once the connection is closed, and an error if reading failed.
func (c *tcpConn) receiveData(br *bufio.Reader, f tcpframe.Frame, pieces [][]byte) (bool, error) {
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return false, nil
	}
	l, code, msg := c.laneForLocked(f)
	want := false
	if code == 0 && l != nil {
		want, code, msg = l.admitDataLocked(f.Length)
	}
	switch {
	case code != 0:
		c.mu.Unlock()
		c.abort(code, msg)
		return false, nil
	case !want: // a lane gone, or stopped
		c.mu.Unlock()
		_, err := br.Discard(f.Length)
		return true, midFrameEOF(err)
	case br.Buffered() >= f.Length:
		data, _ := br.Peek(f.Length)
		l.receiveLocked(data)
		c.mu.Unlock()
		br.Discard(f.Length)
		return true, nil
	}
	pieces = l.in.Reserve(f.Length, pieces[:0])
	c.mu.Unlock()
	err := readPieces(br, c.tc, pieces)
	clear(pieces) // let no chunk stay reachable from here
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || c.closeErr != nil || !l.wantsDataLocked() {
		l.in.Commit(0) // dropped meanwhile by CancelRead or the close
		if c.closeErr != nil {
			c.chunks.trim(true)
		}
		return err == nil && c.closeErr == nil, err
	}
	l.in.Commit(f.Length)
	l.receivedLocked(f.Length)
	return true, nil
}

// readPieces fills each of pieces in turn: from what br holds, and once
// br is empty, straight from src, br's own source, so that the bytes do
// not pass through br.
func readPieces(br *bufio.Reader, src io.Reader, pieces [][]byte) error {
	left := 0
	for _, p := range pieces {
		left += len(p)
	}
	for _, p := range pieces {
		for len(p) > 0 {
			var n int
			var err error
			if br.Buffered() > 0 {
				n, err = br.Read(p)
			} else {
				n, err = src.Read(p)
			}
			p = p[n:]
			left -= n
			if err != nil && left > 0 {
				return midFrameEOF(err)
			}
			// An error with the last bytes comes back on the next read.
		}
	}
	return nil
}

// midFrameEOF turns the end of the stream inside a frame into
// io.ErrUnexpectedEOF.
func midFrameEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readError turns an error reading the socket into the connection's. A
// server that hangs up before its first frame (MAX_LANES, sent at once)
// refused the connection: a TCPListener resets handshakes in progress
// when it closes, and TLS 1.3 lets the client finish its handshake before
// the server has.
func readError(err error, refused bool) error {
	if refused && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
		return fmt.Errorf("%w: %w: server hung up before its first frame: %w", ErrConnClosed, ErrConnRefused, err)
	}
	if err == io.EOF {
		return fmt.Errorf("%w: peer closed the TCP connection without CLOSE", ErrConnClosed)
	}
	return fmt.Errorf("%w: read: %w", ErrConnClosed, err)
}

// readTCPFrame reads one frame (for LANE_DATA, its header) from br.
func readTCPFrame(br *bufio.Reader) (tcpframe.Frame, error) {
	need := 1
	for {
		b, err := br.Peek(need)
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF // inside a frame
			}
			return tcpframe.Frame{}, err
		}
		if n := br.Buffered(); n > len(b) {
			b, _ = br.Peek(min(n, tcpframe.MaxFrame))
		}
		f, n, err := tcpframe.Parse(b)
		if err == tcpframe.ErrShort {
			need = len(b) + 1
			continue
		}
		if err != nil {
			return f, err
		}
		if f.Reason != nil {
			f.Reason = append([]byte(nil), f.Reason...) // before Discard lets br reuse it
		}
		br.Discard(n)
		return f, nil
	}
}

// handle applies one frame other than LANE_DATA (see receiveData). It
// returns false once the connection is closed.
func (c *tcpConn) handle(f tcpframe.Frame) bool {
	switch f.Type {
	case tcpframe.TypeClose:
		c.close(&ApplicationError{Code: f.Code, Remote: true, Reason: string(f.Reason)}, nil, false)
		return false
	case tcpframe.TypeAbort:
		err := fmt.Errorf("%w: closed by peer: %s: %s", ErrConnClosed, tcpframe.AbortName(f.Code), f.Reason)
		if f.Code == tcpframe.AbortRefused {
			err = fmt.Errorf("%w: %w: closed by peer: %s: %s", ErrConnClosed, ErrConnRefused, tcpframe.AbortName(f.Code), f.Reason)
		}
		c.close(err, nil, false)
		return false
	}
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return false
	}
	code, msg := c.handleLocked(f)
	c.mu.Unlock()
	if code != 0 {
		c.abort(code, msg)
		return false
	}
	return true
}

// handleLocked applies a frame other than LANE_DATA, CLOSE and ABORT. It
// returns an ABORT code and reason if the frame breaks a rule.
func (c *tcpConn) handleLocked(f tcpframe.Frame) (uint64, string) {
	switch f.Type {
	case tcpframe.TypeMaxLanes:
		if f.Value < c.peerMax {
			return tcpframe.AbortFrameError, fmt.Sprintf("MAX_LANES %d below %d", f.Value, c.peerMax)
		}
		c.peerMax = min(f.Value, 1<<60) // lane numbers that fit a Lane ID
		c.openWake.wake()
		return 0, ""
	case tcpframe.TypePing:
		c.pong, c.pongVal = true, f.Value
		c.kick()
		return 0, ""
	case tcpframe.TypePong:
		if !c.pingSent.IsZero() && f.Value == c.pingVal {
			c.sampleRTT(time.Since(c.pingSent))
			c.pingSent = time.Time{}
		}
		return 0, ""
	}
	l, code, msg := c.laneForLocked(f)
	if code != 0 || l == nil {
		return code, msg
	}
	switch f.Type {
	case tcpframe.TypeFin:
		return l.finLocked()
	case tcpframe.TypeReset:
		l.resetLocked(f.Code)
	case tcpframe.TypeStop:
		l.stopLocked(f.Code)
	}
	return 0, ""
}

func (c *tcpConn) sampleRTT(sample time.Duration) {
	sample = max(sample, time.Nanosecond)
	old := time.Duration(c.srtt.Load())
	if old == 0 {
		c.srtt.Store(int64(sample))
		return
	}
	c.srtt.Store(int64((7*old + sample) / 8))
}

// laneForLocked finds the lane a lane frame is for, opening the peer's
// lanes up to it if it is new, or returns nil for a lane that is gone. It
// returns an ABORT code for a frame no lane may receive.
func (c *tcpConn) laneForLocked(f tcpframe.Frame) (*tcpLane, uint64, string) {
	id := f.Lane
	uni := id&tcpframe.UniBit != 0
	fromPeer := (id&tcpframe.ServerBit != 0) == c.client
	n := id >> 2
	l := c.lanes[id]
	switch {
	case uni && fromPeer:
		if n != 0 {
			return nil, tcpframe.AbortFrameError, fmt.Sprintf("second unidirectional lane %d", id)
		}
		if f.Type == tcpframe.TypeStop {
			return nil, tcpframe.AbortFrameError, fmt.Sprintf("LANE_STOP on the peer's own control lane %d", id)
		}
		if c.ctlIn == nil {
			c.ctlIn = c.newLane(id, false)
			c.ctlIn.sendDone = true
			c.ctlWake.wake()
		}
		return c.ctlIn, 0, ""
	case uni:
		if f.Type != tcpframe.TypeStop || l == nil {
			return nil, tcpframe.AbortFrameError, fmt.Sprintf("%v on this side's control lane %d", f.Type, id)
		}
		return l, 0, ""
	case l != nil:
		return l, 0, ""
	case !fromPeer:
		if n >= c.nextLocal {
			return nil, tcpframe.AbortFrameError, fmt.Sprintf("%v for lane %d, which this side never opened", f.Type, id)
		}
		return nil, 0, "" // gone
	case n < c.nextPeer:
		return nil, 0, "" // gone
	case n >= c.grant:
		return nil, tcpframe.AbortLaneLimit, fmt.Sprintf("lane %d opened beyond MAX_LANES %d", id, c.grant)
	}
	// A new lane opens every lane of the peer's numbered below it, as a
	// QUIC stream does.
	for ; c.nextPeer <= n; c.nextPeer++ {
		nl := c.newLane(tcpframe.LaneID(c.nextPeer, c.client, false), false)
		nl.counted = true
		c.incoming = append(c.incoming, nl)
	}
	c.acceptWake.wake()
	return c.lanes[id], 0, ""
}

// updateLocked retires a bidirectional lane once this side is done with
// both of its directions: it leaves the lane map, and a lane the peer
// opened is credited back to it with MAX_LANES.
func (c *tcpConn) updateLocked(l *tcpLane) {
	if l.uni || !l.sendDone || !l.recvDone || c.lanes[l.id] != l {
		return
	}
	delete(c.lanes, l.id)
	if l.counted {
		l.counted = false
		c.grant++
		c.grantDirty = true
		c.kick()
	}
}
