package mux

import "errors"

// This file is a stream's lifecycle (SPEC.md sections 3.4 and 7) as pure
// state: the state of each direction, of what the application did with
// the receiving one, and of each QUIC direction of the lane, with the
// transitions that frames and calls cause. No locks, no I/O: the Stream
// holds a lifecycle under its mutex, applies transitions, and writes the
// frames that the lifecycle says are owed. When a stream is retired is one
// rule, lifecycle.retired.

// sendState is the stream's sending direction: SPEC.md section 7's send
// side, with the two moments in which its end is decided but not yet
// written on the lane.
type sendState uint8

const (
	sendOpen        sendState = iota // DATA may be sent
	sendFinQueued                    // CloseWrite: DATA with FIN waits for the lane
	sendResetQueued                  // Reset, or the peer's STOP_SENDING: RESET waits for the lane
	sendDataSent                     // final: DATA with FIN written
	sendResetSent                    // final: RESET written, or the lane's send side aborted
)

var sendStateNames = [...]string{"Open", "FinQueued", "ResetQueued", "DataSent", "ResetSent"}

func (s sendState) String() string { return sendStateNames[s] }

// recvState is how the peer ended its direction: SPEC.md section 7's
// receive side.
type recvState uint8

const (
	recvOpen       recvState = iota // DATA may arrive
	recvDataRecvd                   // final: DATA with FIN arrived
	recvResetRecvd                  // final: RESET arrived, or the peer aborted the lane
)

var recvStateNames = [...]string{"Open", "DataRecvd", "ResetRecvd"}

func (s recvState) String() string { return recvStateNames[s] }

// readState is what this side does with the receiving direction.
type readState uint8

const (
	reading     readState = iota // the application may read more
	readDone                     // it has everything it will get: read to the end, or the peer reset
	readStopped                  // it stopped with data unread or not yet ended: STOP_SENDING
)

var readStateNames = [...]string{"Reading", "Done", "Stopped"}

func (s readState) String() string { return readStateNames[s] }

// laneState is one QUIC direction of the stream's lane.
type laneState uint8

const (
	laneOpen     laneState = iota
	laneFinished           // QUIC FIN sent or received
	laneAborted            // QUIC RESET_STREAM or STOP_SENDING, either side
)

var laneStateNames = [...]string{"Open", "Finished", "Aborted"}

func (s laneState) String() string { return laneStateNames[s] }

// Errors of the lifecycle: a peer frame that its state does not allow.
var (
	errDataAfterEnd   = errors.New("DATA after FIN or RESET")
	errResetAfterEnd  = errors.New("RESET after FIN or RESET")
	errLaneEndedOpen  = errors.New("lane ended without FIN or RESET")
	errLaneEndedEarly = errors.New("lane ended before this side ended its direction or was asked to stop")
)

// lifecycle is the state of one stream. Its zero value is a stream just
// opened or accepted.
type lifecycle struct {
	send     sendState
	recv     recvState
	read     readState
	laneSend laneState
	laneRecv laneState

	peerStopped     bool // the peer's STOP_SENDING (or QUIC STOP_SENDING) arrived
	stopOwed        bool // STOP_SENDING is to be written
	finalUpdateOwed bool // the WINDOW_UPDATE whose Consumed covers everything is to be written
}

// sendEnded reports whether the sending direction's end is on the wire.
func (l *lifecycle) sendEnded() bool { return l.send >= sendDataSent }

// writable reports whether DATA may still be written.
func (l *lifecycle) writable() bool { return l.send == sendOpen && !l.peerStopped }

// closeWrite queues DATA with FIN, if the direction is still open.
func (l *lifecycle) closeWrite() {
	if l.send == sendOpen {
		l.send = sendFinQueued
	}
}

// reset queues RESET unless the direction's end is already decided or
// written; a queued FIN gives way to it. It reports whether it did.
func (l *lifecycle) reset() bool {
	if l.send > sendFinQueued {
		return false
	}
	l.send = sendResetQueued
	return true
}

// onStopSending applies the peer's STOP_SENDING: a RESET answers it unless
// the direction already ended (section 5.5). It reports false for a
// repeat, which does no work.
func (l *lifecycle) onStopSending() (first, answer bool) {
	if l.peerStopped {
		return false, false
	}
	l.peerStopped = true
	return true, l.reset()
}

// sendWritten records that the queued end of the sending direction is on
// the lane.
func (l *lifecycle) sendWritten() {
	switch l.send {
	case sendFinQueued:
		l.send = sendDataSent
	case sendResetQueued:
		l.send = sendResetSent
	}
}

// onPeerFin applies DATA with FIN.
func (l *lifecycle) onPeerFin() error {
	if l.recv != recvOpen {
		return errDataAfterEnd
	}
	l.recv = recvDataRecvd
	return nil
}

// onPeerData checks that DATA may arrive at all.
func (l *lifecycle) onPeerData() error {
	if l.recv != recvOpen {
		return errDataAfterEnd
	}
	return nil
}

// onPeerReset applies RESET: unread data is discarded, and this side owes
// the direction nothing more.
func (l *lifecycle) onPeerReset() error {
	if l.recv != recvOpen {
		return errResetAfterEnd
	}
	l.recv = recvResetRecvd
	l.peerEnded()
	return nil
}

// peerEnded settles the reading side once the peer reset its direction:
// nothing owed for it any more.
func (l *lifecycle) peerEnded() {
	if l.read == reading {
		l.read = readDone
	}
	l.stopOwed, l.finalUpdateOwed = false, false
}

// readEOF records that the application read the end of the direction: the
// final WINDOW_UPDATE (its Consumed covering everything) is owed.
func (l *lifecycle) readEOF() {
	if l.read == reading && l.recv == recvDataRecvd {
		l.read, l.finalUpdateOwed = readDone, true
	}
}

// closeRead records that the application will read no more. allRead says
// that nothing arrived is left unread. It reports whether STOP_SENDING is
// now owed.
func (l *lifecycle) closeRead(allRead bool) (stop bool) {
	if l.read != reading {
		return false
	}
	switch {
	case l.recv == recvResetRecvd:
		l.read = readDone
	case l.recv == recvDataRecvd && allRead:
		// Everything was read but the end itself: report it consumed, as at EOF.
		l.read, l.finalUpdateOwed = readDone, true
	default: // data the application will never read: tell the sender
		l.read, l.stopOwed = readStopped, true
	}
	return l.stopOwed
}

// mayUpdate reports whether a WINDOW_UPDATE may be written (section 7:
// the receive side is not reset and STOP_SENDING was not sent).
func (l *lifecycle) mayUpdate() bool {
	return l.recv != recvResetRecvd && l.read != readStopped
}

// recvQuiet reports whether this side will send nothing more for the
// receiving direction: the peer reset it, or the application read all of
// it and the final update is out, or it stopped and STOP_SENDING is out.
func (l *lifecycle) recvQuiet() bool {
	switch {
	case l.recv == recvResetRecvd:
		return true
	case l.read == readDone:
		return !l.finalUpdateOwed
	case l.read == readStopped:
		return !l.stopOwed
	}
	return false
}

// owesFrames reports whether anything is to be written on the lane: a
// queued end, STOP_SENDING, the final update, or the lane's QUIC FIN.
func (l *lifecycle) owesFrames() bool {
	if l.laneSend != laneOpen {
		return false
	}
	return l.send == sendFinQueued || l.send == sendResetQueued || l.stopOwed ||
		l.finalUpdateOwed || l.shouldFinishLane()
}

// shouldFinishLane reports whether the lane's send side may end now
// (section 3.4): the sending direction ended on the wire and the
// receiving one needs nothing more from this side.
func (l *lifecycle) shouldFinishLane() bool {
	return l.laneSend == laneOpen && l.sendEnded() && l.recvQuiet()
}

// abort records that this side aborted both QUIC directions of the lane:
// nothing more is sent or read.
func (l *lifecycle) abort() {
	if !l.sendEnded() {
		l.send = sendResetSent
	}
	if l.read == reading {
		l.read = readStopped
	}
	l.stopOwed, l.finalUpdateOwed = false, false
	l.laneSend = laneAborted
	if l.laneRecv == laneOpen {
		l.laneRecv = laneAborted
	}
}

// onLaneStopped applies the peer's QUIC STOP_SENDING (the lane's send side
// failed under us): as if by STOP_SENDING, and nothing more can be sent.
// It reports whether the stop is news.
func (l *lifecycle) onLaneStopped() (first bool) {
	first = !l.peerStopped && !l.sendEnded()
	if first {
		l.peerStopped = true
	}
	if !l.sendEnded() {
		l.send = sendResetSent
	}
	l.stopOwed, l.finalUpdateOwed = false, false
	l.laneSend = laneAborted
	return first
}

// onLaneReset applies the peer's QUIC RESET_STREAM: as if by RESET, and the
// lane is done for reading. It reports whether the reset is news.
func (l *lifecycle) onLaneReset() (first bool) {
	first = l.recv == recvOpen
	if first {
		l.recv = recvResetRecvd
		l.peerEnded()
	}
	l.laneRecv = laneAborted
	return first
}

// onLaneFin applies the peer's QUIC FIN on the lane, which section 3.4
// allows only once the peer ended its direction, and once this side ended
// its own or was asked to stop.
func (l *lifecycle) onLaneFin() error {
	l.laneRecv = laneFinished
	switch {
	case l.recv == recvOpen:
		return errLaneEndedOpen
	case !l.sendEnded() && !l.peerStopped:
		return errLaneEndedEarly
	}
	return nil
}

// retired reports whether the stream is gone: both QUIC directions of its
// lane are finished, and no data waits for an application that may still
// read it.
func (l *lifecycle) retired(unread bool) bool {
	return l.laneSend != laneOpen && l.laneRecv != laneOpen && (!unread || l.read != reading)
}

// String describes the lifecycle, as "send=Open recv=DataRecvd ...".
func (l lifecycle) String() string {
	return "send=" + l.send.String() + " recv=" + l.recv.String() + " read=" + l.read.String() +
		" lane=" + l.laneSend.String() + "/" + l.laneRecv.String()
}
