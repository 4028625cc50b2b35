package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bpmux/bp/transport/tcpframe"
)

// tcpLane is one lane of the TCP binding, or one control lane (uni), whose
// state its connection's mutex guards. It follows the QUIC binding's
// rules, as package memconn describes them: a lane the peer stopped
// (LANE_STOP) fails its writer with a remote *LaneError, a lane the peer
// reset (LANE_RESET) drops the data not yet read and fails its reader
// with one, and a lane is done with when both of its directions are.
type tcpLane struct {
	c     *tcpConn
	id    uint64
	uni   bool
	local bool // opened by this side

	// Sending direction.
	out       chunkQueue // written, not yet sent; at most set.sendBuf bytes
	queued    bool       // in c.ring
	finReq    bool       // CloseWrite: a FIN follows the data
	finSent   bool       // the FIN went to the writer
	resetErr  *LaneError // the direction is cancelled (CancelWrite, or the peer's LANE_STOP): what Write returns
	deadline  time.Time  // SetWriteDeadline; zero for none
	writeWake tcpWaker   // room in out, a new deadline, or the direction ended
	sendDone  bool       // nothing more is sent, and the application knows it

	// Receiving direction.
	in          chunkQueue // received, not yet read; at most set.laneBuf bytes
	fin         bool       // the peer's LANE_FIN arrived
	remoteReset *LaneError // the peer's LANE_RESET arrived: what Read returns
	readErr     *LaneError // CancelRead: what Read returns
	doneRead    bool       // Read returned io.EOF or the reset error
	readWake    tcpWaker   // data, FIN or reset arrived, or CancelRead
	recvDone    bool       // this side reads nothing more

	counted bool // a lane the peer opened, not yet credited back
}

var _ Lane = (*tcpLane)(nil)

// newLane registers a lane under id.
func (c *tcpConn) newLane(id uint64, local bool) *tcpLane {
	l := &tcpLane{c: c, id: id, uni: id&tcpframe.UniBit != 0, local: local}
	l.in.pool, l.out.pool = &c.chunks, &c.chunks
	c.lanes[id] = l
	return l
}

// errTCPDeadline is what a Write past its deadline returns, as the QUIC
// binding's does.
var errTCPDeadline = fmt.Errorf("transport: lane write: %w", os.ErrDeadlineExceeded)

// Write queues all of b for sending, waiting while the lane's send buffer
// is full. It fails with the lane's *LaneError once either side cancelled
// the direction, with the connection's error once it closed, and with an
// error matching os.ErrDeadlineExceeded past the write deadline, having
// queued part of b perhaps.
func (l *tcpLane) Write(b []byte) (int, error) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for {
		if l.resetErr != nil {
			l.seenResetLocked()
			return written, l.resetErr
		}
		if c.closeErr != nil {
			return written, c.closeErr
		}
		if l.finReq {
			return written, errors.New("transport: write on a lane closed for writing")
		}
		if !l.deadline.IsZero() && !time.Now().Before(l.deadline) {
			return written, errTCPDeadline
		}
		if len(b) == 0 {
			return written, nil
		}
		if free := c.set.sendBuf - l.out.Len(); free > 0 {
			n := min(free, len(b))
			l.out.Write(b[:n])
			b = b[n:]
			written += n
			l.scheduleLocked()
			continue
		}
		ch := l.writeWake.wait()
		var timer *time.Timer
		var timeout <-chan time.Time
		if !l.deadline.IsZero() {
			timer = time.NewTimer(time.Until(l.deadline))
			timeout = timer.C
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.done:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		c.mu.Lock()
	}
}

// scheduleLocked puts the lane in the writer's turn.
func (l *tcpLane) scheduleLocked() {
	if !l.queued {
		l.queued = true
		l.c.ring = append(l.c.ring, l)
	}
	l.c.kick()
}

// seenResetLocked records that the application learnt that the sending
// direction is cancelled: for a direction the peer stopped, that is when
// it is done with.
func (l *tcpLane) seenResetLocked() {
	if !l.sendDone {
		l.sendDone = true
		l.c.updateLocked(l)
	}
}

// CloseWrite ends the sending direction: a LANE_FIN follows the data
// already written. A second call, or one after the connection closed,
// does nothing; one after the direction was cancelled fails.
func (l *tcpLane) CloseWrite() error {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil || l.finReq {
		return nil
	}
	if l.resetErr != nil {
		l.seenResetLocked()
		return fmt.Errorf("transport: CloseWrite on a cancelled lane: %w", l.resetErr)
	}
	l.finReq = true
	l.scheduleLocked()
	return nil
}

// CancelWrite abandons the sending direction with code: data not yet sent
// is dropped, a LANE_RESET goes to the peer, whose Read fails with
// *LaneError{Code: code, Remote: true}, and this side's Writes, a blocked
// one included, fail with *LaneError{Code: code}.
func (l *tcpLane) CancelWrite(code uint64) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return
	}
	if l.resetErr != nil {
		l.seenResetLocked()
		return
	}
	l.resetErr = &LaneError{Code: code}
	l.out.Reset()
	c.ctrl = tcpframe.Append(c.ctrl, tcpframe.Frame{Type: tcpframe.TypeReset, Lane: l.id, Code: code})
	c.kick()
	l.writeWake.wake()
	l.sendDone = true
	c.updateLocked(l)
}

// SetWriteDeadline makes Writes that have not completed by t fail with an
// error matching os.ErrDeadlineExceeded; a blocked Write looks at the new
// deadline at once. Zero means no deadline.
func (l *tcpLane) SetWriteDeadline(t time.Time) error {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.deadline = t
	l.writeWake.wake()
	return nil
}

// stopLocked applies the peer's LANE_STOP: the sending direction ends,
// with the data not yet sent dropped.
func (l *tcpLane) stopLocked(code uint64) {
	if l.resetErr != nil || l.finSent {
		return
	}
	l.out.Reset()
	l.writeWake.wake()
	if l.finReq {
		// The application has finished writing: nothing waits for the
		// error, and no FIN is needed.
		l.finSent = true
		l.sendDone = true
		l.c.updateLocked(l)
		return
	}
	l.resetErr = &LaneError{Code: code, Remote: true}
}

// Read reads the peer's data. It returns io.EOF (possibly with the last
// bytes) after the peer's LANE_FIN and all its data, a *LaneError after
// either side cancelled the direction, and the connection's error once it
// closed.
func (l *tcpLane) Read(b []byte) (int, error) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case l.doneRead && l.remoteReset == nil:
			return 0, io.EOF
		case l.readErr != nil:
			return 0, l.readErr
		case l.remoteReset != nil:
			l.finishReadLocked()
			return 0, l.remoteReset
		case c.closeErr != nil:
			return 0, c.closeErr
		}
		if l.in.Len() > 0 {
			n := l.in.Read(b)
			c.buffered -= n
			if l.in.Len() == 0 && l.fin {
				l.finishReadLocked()
				return n, io.EOF
			}
			return n, nil
		}
		if l.fin {
			l.finishReadLocked()
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		ch := l.readWake.wait()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.done:
		}
		c.mu.Lock()
	}
}

func (l *tcpLane) finishReadLocked() {
	l.doneRead = true
	l.in.Reset()
	if !l.recvDone {
		l.recvDone = true
		l.c.updateLocked(l)
	}
}

// CancelRead stops the receiving direction with code: data not yet read
// is dropped, and so is what still arrives; unless the peer's direction
// had ended, a LANE_STOP makes the peer's Writes fail with
// *LaneError{Code: code, Remote: true}. This side's Read fails with
// *LaneError{Code: code}, or keeps the peer's error if it had reset the
// direction.
func (l *tcpLane) CancelRead(code uint64) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil || l.readErr != nil || l.doneRead {
		return
	}
	if l.remoteReset != nil {
		l.readErr = l.remoteReset
	} else {
		l.readErr = &LaneError{Code: code}
	}
	c.buffered -= l.in.Len()
	l.in.Reset()
	if l.remoteReset == nil && !l.fin {
		c.ctrl = tcpframe.Append(c.ctrl, tcpframe.Frame{Type: tcpframe.TypeStop, Lane: l.id, Code: code})
		c.kick()
	}
	l.readWake.wake()
	l.recvDone = true
	c.updateLocked(l)
}

// admitDataLocked checks a LANE_DATA frame whose payload of n bytes is
// still to be read against the lane's rules and the buffer limits. It
// reports whether the payload is wanted (not if this side stopped
// reading: it is dropped), and returns an ABORT code if the peer broke a
// rule.
func (l *tcpLane) admitDataLocked(n int) (bool, uint64, string) {
	c := l.c
	switch {
	case l.fin || l.remoteReset != nil:
		return false, tcpframe.AbortFrameError, fmt.Sprintf("LANE_DATA on lane %d after its end", l.id)
	case !l.wantsDataLocked():
		return false, 0, "" // stopped: dropped
	case l.in.Len()+n > c.set.laneBuf:
		return false, tcpframe.AbortBufferExceeded, fmt.Sprintf("%v: lane %d would hold %d bytes unread, above %d", errBufferExceeded, l.id, l.in.Len()+n, c.set.laneBuf)
	case c.buffered+n > c.set.connBuf:
		return false, tcpframe.AbortBufferExceeded, fmt.Sprintf("%v: the lanes would hold %d bytes unread, above %d", errBufferExceeded, c.buffered+n, c.set.connBuf)
	}
	return true, 0, ""
}

// wantsDataLocked reports whether data that arrives is kept for Read:
// not once this side stopped reading or read to the end.
func (l *tcpLane) wantsDataLocked() bool {
	return l.readErr == nil && !l.doneRead
}

// receiveLocked files the payload of a LANE_DATA frame admitDataLocked
// let in.
func (l *tcpLane) receiveLocked(data []byte) {
	l.in.Write(data)
	l.receivedLocked(len(data))
}

// receivedLocked accounts for n bytes the lane's queue just took in, and
// wakes its reader.
func (l *tcpLane) receivedLocked(n int) {
	l.c.buffered += n
	l.readWake.wake()
}

// finLocked applies the peer's LANE_FIN.
func (l *tcpLane) finLocked() (uint64, string) {
	if l.fin || l.remoteReset != nil {
		return tcpframe.AbortFrameError, fmt.Sprintf("LANE_FIN on lane %d after its end", l.id)
	}
	l.fin = true
	l.readWake.wake()
	return 0, ""
}

// resetLocked applies the peer's LANE_RESET: data not yet read is
// dropped.
func (l *tcpLane) resetLocked(code uint64) {
	if l.remoteReset != nil || l.readErr != nil || l.doneRead {
		return
	}
	l.remoteReset = &LaneError{Code: code, Remote: true}
	l.c.buffered -= l.in.Len()
	l.in.Reset()
	l.readWake.wake()
}

// tcpSendLane is this side's control lane.
type tcpSendLane struct{ l *tcpLane }

func (s tcpSendLane) Write(b []byte) (int, error)        { return s.l.Write(b) }
func (s tcpSendLane) CloseWrite() error                  { return s.l.CloseWrite() }
func (s tcpSendLane) CancelWrite(code uint64)            { s.l.CancelWrite(code) }
func (s tcpSendLane) SetWriteDeadline(t time.Time) error { return s.l.SetWriteDeadline(t) }

// tcpRecvLane is the peer's control lane.
type tcpRecvLane struct{ l *tcpLane }

func (r tcpRecvLane) Read(b []byte) (int, error) { return r.l.Read(b) }

// tcpWaker wakes the goroutines waiting for a change: they take the
// channel under the connection's lock and wait on it without the lock;
// wake closes it. The channel is made only when someone waits.
type tcpWaker struct{ ch chan struct{} }

func (w *tcpWaker) wait() <-chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *tcpWaker) wake() {
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}
