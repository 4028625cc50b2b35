// Package tcpframe is the frame codec of bp/1's TCP binding (SPEC.md,
// section 13): the frames that carry lanes, their ends and aborts, lane
// credit, keepalive and the close over one ordered byte stream (a TLS 1.3
// connection over TCP).
//
// The codec is pure: it parses and appends byte slices, and does no I/O.
// Parse reads one frame from the start of a buffer; a LANE_DATA frame's
// payload is not part of what Parse returns, so that a reader can move it
// straight into the lane it belongs to.
package tcpframe

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/quic-go/quic-go/quicvarint"
)

// Type is a frame type.
type Type uint8

// The frame types of section 13.3.
const (
	// TypeData carries bytes of one lane direction: Lane ID (i),
	// Length (i), Data (..).
	TypeData Type = 0x00
	// TypeFin ends one lane direction after its data: Lane ID (i).
	TypeFin Type = 0x01
	// TypeReset abandons one lane direction (the sender's CancelWrite):
	// Lane ID (i), Error Code (i).
	TypeReset Type = 0x02
	// TypeStop asks the peer to stop sending on a lane direction (the
	// receiver's CancelRead): Lane ID (i), Error Code (i).
	TypeStop Type = 0x03
	// TypeMaxLanes raises the number of bidirectional lanes the peer may
	// open: Maximum Lanes (i).
	TypeMaxLanes Type = 0x04
	// TypePing asks for a PONG: Opaque Data (64).
	TypePing Type = 0x05
	// TypePong answers a PING: Opaque Data (64).
	TypePong Type = 0x06
	// TypeClose closes the connection with a bp/1 error code: Error
	// Code (i), Reason Length (i), Reason (..).
	TypeClose Type = 0x07
	// TypeAbort closes the connection with an error of the binding
	// itself (one of the Abort codes): Error Code (i), Reason Length (i),
	// Reason (..).
	TypeAbort Type = 0x08
)

var typeNames = [...]string{"LANE_DATA", "LANE_FIN", "LANE_RESET", "LANE_STOP", "MAX_LANES", "PING", "PONG", "CLOSE", "ABORT"}

// String returns the frame type's name, as SPEC.md writes it.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

// HasLane reports whether frames of type t carry a Lane ID.
func (t Type) HasLane() bool { return t <= TypeStop }

// The error codes of ABORT (section 13.6).
const (
	// AbortRefused: the server refused the connection (over a cap, or its
	// listener closed).
	AbortRefused uint64 = 0x1
	// AbortFrameError: a frame was malformed or broke a rule of the
	// binding.
	AbortFrameError uint64 = 0x2
	// AbortBufferExceeded: the peer sent more unread data than the
	// receiver holds, on one lane or in all.
	AbortBufferExceeded uint64 = 0x3
	// AbortLaneLimit: the peer opened a lane beyond MAX_LANES.
	AbortLaneLimit uint64 = 0x4
)

// AbortName returns the name of an ABORT error code.
func AbortName(code uint64) string {
	switch code {
	case AbortRefused:
		return "REFUSED"
	case AbortFrameError:
		return "FRAME_ERROR"
	case AbortBufferExceeded:
		return "BUFFER_EXCEEDED"
	case AbortLaneLimit:
		return "LANE_LIMIT"
	}
	return fmt.Sprintf("ABORT_0x%x", code)
}

// Limits of the frame layout.
const (
	// MaxData is the largest LANE_DATA payload.
	MaxData = 16384
	// MaxReason is the longest Reason of CLOSE and ABORT.
	MaxReason = 1024
	// MaxFrame is the longest frame other than LANE_DATA: a CLOSE or
	// ABORT with 8-byte varints and the longest reason. A reader that
	// can look ahead this far can always parse a frame header.
	MaxFrame = 1 + 8 + 8 + MaxReason
	// MaxVarint is the largest value of a variable-length integer.
	MaxVarint = 1<<62 - 1
)

// ErrShort is returned by Parse when the buffer holds only the start of a
// frame: more bytes are needed.
var ErrShort = errors.New("tcpframe: frame incomplete")

// ErrMalformed is returned (wrapped) by Parse for bytes that are not a
// valid frame: an unknown type, a Length above MaxData, a Reason above
// MaxReason.
var ErrMalformed = errors.New("tcpframe: malformed frame")

// Frame is one frame, without a LANE_DATA payload.
type Frame struct {
	Type Type
	// Lane is the Lane ID of LANE_DATA, LANE_FIN, LANE_RESET and
	// LANE_STOP.
	Lane uint64
	// Code is the Error Code of LANE_RESET, LANE_STOP, CLOSE and ABORT.
	Code uint64
	// Value is MAX_LANES's Maximum Lanes, or the Opaque Data of PING and
	// PONG.
	Value uint64
	// Length is the length of LANE_DATA's payload, which follows the
	// frame's header.
	Length int
	// Reason is the Reason of CLOSE and ABORT. Parse returns a slice of
	// its input.
	Reason []byte
}

// Parse reads the frame at the start of b and returns it with the number
// of bytes it took: for LANE_DATA, the header only, and f.Length payload
// bytes follow. It returns ErrShort if b ends inside the frame's header
// (or inside a CLOSE or ABORT), and an error matching ErrMalformed for
// bytes that are no frame. Varints need not be minimal.
func Parse(b []byte) (f Frame, n int, err error) {
	if len(b) == 0 {
		return f, 0, ErrShort
	}
	f.Type = Type(b[0])
	p := parser{b: b, off: 1}
	switch f.Type {
	case TypeData:
		f.Lane = p.varint()
		l := p.varint()
		if p.short {
			return Frame{}, 0, ErrShort
		}
		if l > MaxData {
			return Frame{}, 0, fmt.Errorf("%w: LANE_DATA Length %d above %d", ErrMalformed, l, MaxData)
		}
		f.Length = int(l)
	case TypeFin:
		f.Lane = p.varint()
	case TypeReset, TypeStop:
		f.Lane = p.varint()
		f.Code = p.varint()
	case TypeMaxLanes:
		f.Value = p.varint()
	case TypePing, TypePong:
		f.Value = p.fixed64()
	case TypeClose, TypeAbort:
		f.Code = p.varint()
		l := p.varint()
		if !p.short && l > MaxReason {
			return Frame{}, 0, fmt.Errorf("%w: %v Reason Length %d above %d", ErrMalformed, f.Type, l, MaxReason)
		}
		f.Reason = p.bytes(int(l))
	default:
		return Frame{}, 0, fmt.Errorf("%w: unknown frame type 0x%02x", ErrMalformed, b[0])
	}
	if p.short {
		return Frame{}, 0, ErrShort
	}
	return f, p.off, nil
}

// parser reads fields from b at off; short records that b ended first.
type parser struct {
	b     []byte
	off   int
	short bool
}

func (p *parser) varint() uint64 {
	if p.short {
		return 0
	}
	v, n, err := quicvarint.Parse(p.b[p.off:])
	if err != nil {
		p.short = true
		return 0
	}
	p.off += n
	return v
}

func (p *parser) fixed64() uint64 {
	if p.short || len(p.b)-p.off < 8 {
		p.short = true
		return 0
	}
	v := binary.BigEndian.Uint64(p.b[p.off:])
	p.off += 8
	return v
}

func (p *parser) bytes(n int) []byte {
	if p.short || len(p.b)-p.off < n {
		p.short = true
		return nil
	}
	v := p.b[p.off : p.off+n : p.off+n]
	p.off += n
	return v
}

// Append appends the encoding of f to b, with minimal varints. For
// LANE_DATA it appends the header only (Lane ID, Length); the caller
// appends f.Length payload bytes. A Reason longer than MaxReason is cut
// to MaxReason bytes. Append panics on a value no varint holds, an
// unknown type, or a Length outside 0..MaxData: those are bugs of the
// caller.
func Append(b []byte, f Frame) []byte {
	b = append(b, byte(f.Type))
	switch f.Type {
	case TypeData:
		if f.Length < 0 || f.Length > MaxData {
			panic(fmt.Sprintf("tcpframe: LANE_DATA Length %d outside 0..%d", f.Length, MaxData))
		}
		b = quicvarint.Append(b, f.Lane)
		b = quicvarint.Append(b, uint64(f.Length))
	case TypeFin:
		b = quicvarint.Append(b, f.Lane)
	case TypeReset, TypeStop:
		b = quicvarint.Append(b, f.Lane)
		b = quicvarint.Append(b, f.Code)
	case TypeMaxLanes:
		b = quicvarint.Append(b, f.Value)
	case TypePing, TypePong:
		b = binary.BigEndian.AppendUint64(b, f.Value)
	case TypeClose, TypeAbort:
		reason := f.Reason
		if len(reason) > MaxReason {
			reason = reason[:MaxReason]
		}
		b = quicvarint.Append(b, f.Code)
		b = quicvarint.Append(b, uint64(len(reason)))
		b = append(b, reason...)
	default:
		panic(fmt.Sprintf("tcpframe: Append of unknown %v", f.Type))
	}
	return b
}

// AppendData appends a LANE_DATA frame carrying data (at most MaxData
// bytes) on lane.
func AppendData(b []byte, lane uint64, data []byte) []byte {
	b = Append(b, Frame{Type: TypeData, Lane: lane, Length: len(data)})
	return append(b, data...)
}

// Lane IDs (section 13.2): the two low bits of a Lane ID say who opened
// the lane and whether it is bidirectional, as QUIC's stream IDs do.
const (
	// ServerBit is set in the IDs of lanes the server opened.
	ServerBit = 0x1
	// UniBit is set in the IDs of unidirectional lanes (control lanes).
	UniBit = 0x2
)

// LaneID returns the ID of the n-th lane (from 0) of its kind.
func LaneID(n uint64, server, uni bool) uint64 {
	id := n << 2
	if server {
		id |= ServerBit
	}
	if uni {
		id |= UniBit
	}
	return id
}
