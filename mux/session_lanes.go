package mux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
)

// This file is how a session learns of the peer's streams: accepting
// lanes, admitting or refusing streams, the accept queue, and retiring
// streams.

func (sess *Session) removeStream(s *Stream) {
	sess.mu.Lock()
	if sess.streams[s.id] == s {
		delete(sess.streams, s.id)
		if sess.isPeerID(s.id) {
			sess.peerOpen--
			sess.dequeueLocked(s)
		}
	}
	empty := len(sess.streams) == 0
	if empty {
		sess.idleSince = sess.cfg.Now()
	}
	closeNow := sess.maybeDoneLocked()
	sess.mu.Unlock()
	if empty {
		signal(sess.ctlSignal)
	}
	if closeNow {
		sess.closeGracefully()
	}
}

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
			// A lane that ends or is aborted before its first frame did
			// no work: churn at the QUIC level counts like a reset stream.
			if sess.useless() != nil {
				return
			}
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
	s, why, err := sess.admit(h.StreamID, lane)
	if err != nil {
		sess.fail(err)
		return
	}
	if s == nil {
		if why.noBudget {
			sess.obs.refusals.Add(1)
			sess.emitSession(EventBudgetRefused, func(ev *Event) {
				ev.Stream, ev.Value = h.StreamID, sess.cfg.InitialWindow
			})
		}
		sess.refuse(lane, h.StreamID, why.retryAfter)
		if why.rate {
			// Counted after refuse counts it in StreamsRefused, and read
			// before it (Stats): no snapshot has more rate refusals than
			// refusals.
			sess.obs.rateRefused.Add(1)
		}
		return
	}
	s.emitLifecycle(EventStreamOpened, 0, true)
	// The stream's own reader takes over in a goroutine of its own, whose
	// stack starts small (see laneReader); this one ends.
	sess.wg.Add(1)
	go s.laneReader(br, &h)
}

// refusal says why admit refused a stream.
type refusal struct {
	noBudget   bool          // the session budget could not hold its floor
	rate       bool          // over the admission rate
	retryAfter time.Duration // over the admission rate: when a token is due
}

// admit registers a stream the peer opened, or returns nil to refuse it,
// and why.
func (sess *Session) admit(id uint64, lane transport.Lane) (_ *Stream, _ refusal, _ error) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	switch {
	case sess.isClosed():
		return nil, refusal{}, sess.closeErr
	case !sess.isPeerID(id):
		return nil, refusal{}, sess.protocolErr(framing.ProtocolError, fmt.Errorf("peer opened stream %d with this side's parity", id))
	case sess.streams[id] != nil:
		return nil, refusal{}, sess.protocolErr(framing.ProtocolError, fmt.Errorf("peer opened stream %d, which is already open", id))
	}
	sess.lastPeerID = max(sess.lastPeerID, id)
	if (sess.goAwaySent && id > sess.goAwayLast) || sess.peerOpen >= sess.cfg.MaxStreams {
		return nil, refusal{}, nil
	}
	if ok, wait := sess.admission.admit(sess.cfg.Now()); !ok {
		return nil, refusal{rate: true, retryAfter: wait}, nil
	}
	recv, err := sess.newReceiver()
	if err != nil {
		return nil, refusal{noBudget: true}, nil // no budget for its floor: refused, never given zero credit
	}
	s := newStream(sess, id, lane, recv, sess.peerInitial.Load())
	sess.streams[id] = s
	sess.peerOpen++
	sess.idleSince = time.Time{}
	sess.stats.accepted.Add(1)
	sess.acceptQ = append(sess.acceptQ, s) // bounded: len(acceptQ) <= peerOpen <= MaxStreams
	signal(sess.acceptReady)
	return s, refusal{}, nil
}

// dequeueLocked takes a retired stream out of the accept queue, so that
// the queue holds only streams that still count against MaxStreams.
func (sess *Session) dequeueLocked(s *Stream) {
	for i, q := range sess.acceptQ {
		if q == s {
			copy(sess.acceptQ[i:], sess.acceptQ[i+1:])
			sess.acceptQ[len(sess.acceptQ)-1] = nil
			sess.acceptQ = sess.acceptQ[:len(sess.acceptQ)-1]
			return
		}
	}
}

// dequeue takes a refused stream out of the accept queue. It still counts
// against MaxStreams until it is gone.
func (sess *Session) dequeue(s *Stream) {
	sess.mu.Lock()
	sess.dequeueLocked(s)
	sess.mu.Unlock()
}

// refuseQueued refuses every stream still waiting for Accept: a session
// that is shutting down will not serve them, and REFUSED_STREAM tells the
// opener it may retry them elsewhere (SPEC.md 6.2).
func (sess *Session) refuseQueued() {
	sess.mu.Lock()
	queued := sess.acceptQ
	sess.acceptQ = nil
	sess.mu.Unlock()
	for _, s := range queued {
		s.mu.Lock()
		refuse := !s.accepted
		if refuse {
			s.refused = true
		}
		s.mu.Unlock()
		if refuse {
			s.Reset(framing.RefusedStream)
		}
	}
}

// refuse answers a peer stream with STOP_SENDING and RESET, both
// REFUSED_STREAM, and abandons its lane.
func (sess *Session) refuse(lane transport.Lane, id uint64, retryAfter time.Duration) {
	sess.stats.refused.Add(1)
	var b [2*(framing.MaxHeaderLen+8) + 8]byte
	// RESET first: the opener's writer, woken by STOP_SENDING, then finds
	// the hint already there.
	reset := framing.Frame{Header: framing.Header{Type: framing.TypeReset, StreamID: id}, ErrorCode: framing.RefusedStream}
	if retryAfter > 0 && sess.peerRetryAfter.Load() {
		reset.Flags, reset.RetryAfter = framing.FlagRetryAfter, retryAfterMillis(retryAfter)
	}
	out := appendFrame(b[:0], &reset)
	out = appendFrame(out, &framing.Frame{Header: framing.Header{Type: framing.TypeStopSending, StreamID: id}, ErrorCode: framing.RefusedStream})
	lane.Write(out)
	lane.CloseWrite()
	lane.CancelRead(uint64(framing.RefusedStream))
	sess.useless()
}
