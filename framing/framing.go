// Package framing encodes and decodes the frames of the bp/1 wire protocol
// described in SPEC.md.
//
// Every frame is a fixed header followed by a payload:
//
//	Type (8) | Flags (8) | Stream ID (i) | Length (i) | Payload (Length bytes)
//
// where (i) is a QUIC variable-length integer (RFC 9000, section 16).
//
// The package does no I/O beyond reading bytes from an [io.ByteReader] handed
// to it, starts no goroutines, and never allocates in proportion to a length
// a peer merely claims: control payloads are bounded by [MaxControlPayload]
// and DATA payloads are left for the caller to read into memory it has
// already accounted for.
package framing

import (
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// Type identifies the kind of a frame.
type Type uint8

// The frame types of bp/1.
const (
	TypeData         Type = 0x00
	TypeWindowUpdate Type = 0x01
	TypeBlocked      Type = 0x02
	TypeReset        Type = 0x03
	TypeStopSending  Type = 0x04
	TypePing         Type = 0x05
	TypeGoAway       Type = 0x06
	TypeSettings     Type = 0x07
)

var typeNames = [...]string{
	TypeData:         "DATA",
	TypeWindowUpdate: "WINDOW_UPDATE",
	TypeBlocked:      "BLOCKED",
	TypeReset:        "RESET",
	TypeStopSending:  "STOP_SENDING",
	TypePing:         "PING",
	TypeGoAway:       "GOAWAY",
	TypeSettings:     "SETTINGS",
}

// String returns the frame type's name as SPEC.md spells it.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("UNKNOWN(0x%02x)", uint8(t))
}

// Known reports whether t is a frame type defined by bp/1.
func (t Type) Known() bool { return int(t) < len(typeNames) }

// IsStreamFrame reports whether frames of type t belong to a stream (and so
// carry a non-zero stream ID and travel on that stream's lane).
func (t Type) IsStreamFrame() bool { return t <= TypeStopSending }

// Flags holds the per-type flag bits of a frame header.
type Flags uint8

const (
	// FlagFIN on a DATA frame marks the end of the sender's data on the stream.
	FlagFIN Flags = 0x01
	// FlagACK on a PING frame marks it as the answer to a PING.
	FlagACK Flags = 0x01
	// FlagBudgetLimited on a WINDOW_UPDATE frame says the window it grants
	// is smaller than the sender of the update wanted, because its session
	// budget refused the rest. It may be sent only to a peer that announced
	// SettingBudgetSignal.
	FlagBudgetLimited Flags = 0x01
	// FlagCompressed on a DATA frame says its payload is a compressed
	// block: a codec byte, the block's decoded length, then the block
	// (package codec). Flow control counts the decoded length, not the
	// payload. It may be sent only with a codec the receiver announced in
	// SettingCompression.
	FlagCompressed Flags = 0x02
	// FlagRetryAfter on a RESET frame says its payload carries, after the
	// error code, a retry-after hint in milliseconds: when the stream was
	// refused for a rate limit, how long the opener should wait before it
	// tries again. It may be sent only to a peer that announced
	// SettingRetryAfter.
	FlagRetryAfter Flags = 0x01
	// FlagDone on a GOAWAY frame says the sender has no stream left: every
	// frame the receiver sent on any stream has arrived.
	FlagDone Flags = 0x01
)

// Limits of the encoding.
const (
	// MaxHeaderLen is the longest possible frame header: two bytes and two
	// eight-byte varints.
	MaxHeaderLen = 2 + 8 + 8
	// MaxControlPayload is the largest payload of any frame other than DATA.
	MaxControlPayload = 256
	// MaxDataPayload is the largest DATA payload any endpoint may announce
	// in SETTINGS_MAX_FRAME_PAYLOAD.
	MaxDataPayload = 1 << 24
	// MaxVarint is the largest value a varint can carry (2^62-1).
	MaxVarint = quicvarint.Max
	// PingDataLen is the length of a PING frame's opaque payload.
	PingDataLen = 8
)

// Decoding errors. Each is returned wrapped with detail; test with errors.Is.
var (
	// ErrFrameSize means a frame's Length is larger than its type allows.
	ErrFrameSize = errors.New("frame size error")
	// ErrMalformed means a frame's fields do not parse, or are not allowed
	// (a stream frame on stream 0, unknown flag bits, trailing bytes).
	ErrMalformed = errors.New("malformed frame")
	// ErrSettingValue means a well-formed SETTINGS frame carries a value
	// out of its allowed range. It comes wrapped with ErrMalformed.
	ErrSettingValue = errors.New("setting value out of range")
)

// Header is the part common to every frame.
type Header struct {
	Type     Type
	Flags    Flags
	StreamID uint64
	// Length is the length of the payload that follows the header.
	Length uint64
}

// Setting identifiers, carried in SETTINGS frames.
const (
	SettingInitialWindow   uint64 = 0x1
	SettingMaxFramePayload uint64 = 0x2
	SettingMaxStreams      uint64 = 0x3
	SettingBudgetSignal    uint64 = 0x4
	SettingCompression     uint64 = 0x5
	SettingRetryAfter      uint64 = 0x6
)

// Settings are the values an endpoint announces in its SETTINGS frame.
// A zero field is not sent and means "the protocol default".
type Settings struct {
	// InitialWindow is the credit, in bytes, that the sender grants on every
	// new stream for data flowing towards it, before any WINDOW_UPDATE.
	InitialWindow uint64
	// MaxFramePayload is the largest DATA payload the sender accepts.
	MaxFramePayload uint64
	// MaxStreams is the number of concurrent streams the sender lets the
	// peer open.
	MaxStreams uint64
	// BudgetSignal is 1 when the sender accepts WINDOW_UPDATE frames with
	// FlagBudgetLimited; 0 (absent) when it does not.
	BudgetSignal uint64
	// Compression is the set of codecs the sender accepts in compressed
	// DATA frames: bit c-1 for codec c (package codec's Set); 0 (absent)
	// when it accepts none. Bits of unknown codecs are kept and ignored.
	Compression uint64
	// RetryAfter is 1 when the sender accepts RESET frames with
	// FlagRetryAfter; 0 (absent) when it does not.
	RetryAfter uint64
}

// Frame is one decoded frame. Only the fields of its Type are meaningful.
// A Frame is a plain value: decoding into one reuses it without allocating.
type Frame struct {
	Header
	// Data is a DATA frame's payload when encoding with [AppendFrame]. The
	// decoder never fills it: a DATA payload is read by the caller.
	Data []byte
	// Offset is WINDOW_UPDATE's maximum offset, or BLOCKED's limit.
	Offset uint64
	// Consumed is WINDOW_UPDATE's count of bytes the receiving application
	// has read, so that the sender can see its consumer's lag and learn
	// when everything it sent has been consumed.
	Consumed uint64
	// ErrorCode is the code of RESET, STOP_SENDING and GOAWAY.
	ErrorCode ErrorCode
	// RetryAfter is the retry-after hint, in milliseconds, of a RESET
	// with FlagRetryAfter.
	RetryAfter uint64
	// LastStreamID is GOAWAY's last peer-initiated stream the sender processes.
	LastStreamID uint64
	// PingData is PING's opaque payload, echoed in the answer.
	PingData [PingDataLen]byte
	// Settings is the content of a SETTINGS frame.
	Settings Settings
}

// AppendHeader appends the encoding of h to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, byte(h.Type), byte(h.Flags))
	b = quicvarint.Append(b, h.StreamID)
	return quicvarint.Append(b, h.Length)
}

// AppendDataHeader appends the header of a DATA frame carrying n payload
// bytes; the caller sends the payload itself, so it is never copied.
func AppendDataHeader(b []byte, streamID uint64, n int, fin bool) []byte {
	var f Flags
	if fin {
		f = FlagFIN
	}
	return AppendHeader(b, Header{Type: TypeData, Flags: f, StreamID: streamID, Length: uint64(n)})
}

// ReadHeader reads a frame header from r. It checks what the header alone
// can tell: known flag bits, the stream ID's placement, and the Length
// bound of control frames. An unknown Type is not an error: its payload is
// bounded by MaxControlPayload and the caller skips it.
func ReadHeader(r io.ByteReader) (Header, error) {
	var h Header
	t, err := r.ReadByte()
	if err != nil {
		return h, err // io.EOF here is a clean end between frames
	}
	h.Type = Type(t)
	f, err := r.ReadByte()
	if err != nil {
		return h, truncated(err)
	}
	h.Flags = Flags(f)
	if h.StreamID, err = quicvarint.Read(r); err != nil {
		return h, truncated(err)
	}
	if h.Length, err = quicvarint.Read(r); err != nil {
		return h, truncated(err)
	}
	return h, h.check()
}

// ParseHeader decodes a header from the start of b and returns it with its
// encoded length. It returns io.ErrUnexpectedEOF when b is too short.
func ParseHeader(b []byte) (Header, int, error) {
	var h Header
	if len(b) < 2 {
		return h, 0, io.ErrUnexpectedEOF
	}
	h.Type, h.Flags = Type(b[0]), Flags(b[1])
	n := 2
	v, l, err := quicvarint.Parse(b[n:])
	if err != nil {
		return h, 0, io.ErrUnexpectedEOF
	}
	h.StreamID, n = v, n+l
	v, l, err = quicvarint.Parse(b[n:])
	if err != nil {
		return h, 0, io.ErrUnexpectedEOF
	}
	h.Length, n = v, n+l
	return h, n, h.check()
}

func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// allowedFlags lists the flag bits each known type may carry.
var allowedFlags = [len(typeNames)]Flags{TypeData: FlagFIN | FlagCompressed, TypeWindowUpdate: FlagBudgetLimited, TypeReset: FlagRetryAfter, TypePing: FlagACK, TypeGoAway: FlagDone}

func (h Header) check() error {
	if !h.Type.Known() {
		if h.Length > MaxControlPayload {
			return fmt.Errorf("%w: unknown frame type 0x%02x with length %d", ErrFrameSize, uint8(h.Type), h.Length)
		}
		return nil
	}
	if h.Flags&^allowedFlags[h.Type] != 0 {
		return fmt.Errorf("%w: %v with flags 0x%02x", ErrMalformed, h.Type, uint8(h.Flags))
	}
	if h.Type.IsStreamFrame() != (h.StreamID != 0) {
		return fmt.Errorf("%w: %v on stream %d", ErrMalformed, h.Type, h.StreamID)
	}
	if h.Type == TypeData {
		if h.Length > MaxDataPayload {
			return fmt.Errorf("%w: DATA length %d", ErrFrameSize, h.Length)
		}
		return nil
	}
	if h.Length > MaxControlPayload {
		return fmt.Errorf("%w: %v length %d", ErrFrameSize, h.Type, h.Length)
	}
	return nil
}

// DecodePayload fills f from h and the payload of a non-DATA frame. f's
// fields that h.Type does not use are left as they were. It never
// allocates except to build an error.
func DecodePayload(f *Frame, h Header, payload []byte) error {
	f.Header = h
	if uint64(len(payload)) != h.Length {
		return fmt.Errorf("%w: %v payload is %d bytes, header says %d", ErrMalformed, h.Type, len(payload), h.Length)
	}
	p := parser{b: payload}
	switch h.Type {
	case TypeData:
		return fmt.Errorf("%w: DATA payload is read by the caller", ErrMalformed)
	case TypeWindowUpdate:
		f.Offset = p.varint()
		f.Consumed = p.varint()
	case TypeBlocked:
		f.Offset = p.varint()
	case TypeReset, TypeStopSending:
		f.ErrorCode = ErrorCode(p.varint())
		f.RetryAfter = 0
		if h.Type == TypeReset && h.Flags&FlagRetryAfter != 0 {
			f.RetryAfter = p.varint()
		}
	case TypePing:
		if len(payload) != PingDataLen {
			return fmt.Errorf("%w: PING payload is %d bytes, want %d", ErrMalformed, len(payload), PingDataLen)
		}
		copy(f.PingData[:], payload)
		return nil
	case TypeGoAway:
		f.LastStreamID = p.varint()
		f.ErrorCode = ErrorCode(p.varint())
	case TypeSettings:
		f.Settings = Settings{}
		for !p.done() && p.err == nil {
			id, v := p.varint(), p.varint()
			if p.err == nil {
				if err := f.Settings.set(id, v); err != nil {
					return err
				}
			}
		}
	default:
		return nil // unknown type: the caller skips it
	}
	if p.err != nil {
		return fmt.Errorf("%w: %v payload: %v", ErrMalformed, h.Type, p.err)
	}
	if !p.done() {
		return fmt.Errorf("%w: %v payload has %d trailing bytes", ErrMalformed, h.Type, len(p.b))
	}
	return nil
}

func (s *Settings) set(id, v uint64) error {
	switch id {
	case SettingInitialWindow:
		s.InitialWindow = v
	case SettingMaxFramePayload:
		if v > MaxDataPayload {
			return fmt.Errorf("%w: %w: SETTINGS_MAX_FRAME_PAYLOAD %d exceeds %d", ErrMalformed, ErrSettingValue, v, MaxDataPayload)
		}
		s.MaxFramePayload = v
	case SettingMaxStreams:
		s.MaxStreams = v
	case SettingBudgetSignal:
		if v > 1 {
			return fmt.Errorf("%w: %w: SETTINGS_BUDGET_SIGNAL %d is neither 0 nor 1", ErrMalformed, ErrSettingValue, v)
		}
		s.BudgetSignal = v
	case SettingCompression:
		s.Compression = v
	case SettingRetryAfter:
		if v > 1 {
			return fmt.Errorf("%w: %w: SETTINGS_RETRY_AFTER %d is neither 0 nor 1", ErrMalformed, ErrSettingValue, v)
		}
		s.RetryAfter = v
	}
	// Unknown identifiers are ignored, so that settings can be added.
	return nil
}

type parser struct {
	b   []byte
	err error
}

func (p *parser) done() bool { return len(p.b) == 0 }

func (p *parser) varint() uint64 {
	if p.err != nil {
		return 0
	}
	v, n, err := quicvarint.Parse(p.b)
	if err != nil {
		p.err = io.ErrUnexpectedEOF
		return 0
	}
	p.b = p.b[n:]
	return v
}

// AppendFrame appends the encoding of f to b. Header.Length is computed from
// the payload and need not be set. For DATA, f.Data is the payload.
// It returns an error for values the wire cannot carry (a varint above
// MaxVarint, a stream frame on stream 0, a payload over the limits).
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	h := f.Header
	var scratch [MaxControlPayload]byte
	payload := scratch[:0]
	switch h.Type {
	case TypeData:
		payload = f.Data
	case TypeWindowUpdate:
		payload = appendVarint(payload, f.Offset)
		payload = appendVarint(payload, f.Consumed)
	case TypeBlocked:
		payload = appendVarint(payload, f.Offset)
	case TypeReset, TypeStopSending:
		payload = appendVarint(payload, uint64(f.ErrorCode))
		if h.Type == TypeReset && h.Flags&FlagRetryAfter != 0 {
			payload = appendVarint(payload, f.RetryAfter)
		}
	case TypePing:
		payload = append(payload, f.PingData[:]...)
	case TypeGoAway:
		payload = appendVarint(payload, f.LastStreamID)
		payload = appendVarint(payload, uint64(f.ErrorCode))
	case TypeSettings:
		payload = f.Settings.append(payload)
	default:
		return b, fmt.Errorf("%w: cannot encode %v", ErrMalformed, h.Type)
	}
	h.Length = uint64(len(payload))
	if h.StreamID > MaxVarint || hasOversized(f) {
		return b, fmt.Errorf("%w: value exceeds 2^62-1", ErrMalformed)
	}
	if err := h.check(); err != nil {
		return b, err
	}
	b = AppendHeader(b, h)
	return append(b, payload...), nil
}

func hasOversized(f *Frame) bool {
	s := f.Settings
	return max(f.Offset, f.Consumed, uint64(f.ErrorCode), f.LastStreamID, s.InitialWindow, s.MaxFramePayload, s.MaxStreams, s.BudgetSignal, s.Compression, s.RetryAfter, f.RetryAfter) > MaxVarint
}

// appendVarint is quicvarint.Append clamped to the encodable range; the
// caller rejects out-of-range values before the bytes are used.
func appendVarint(b []byte, v uint64) []byte { return quicvarint.Append(b, min(v, MaxVarint)) }

func (s Settings) append(b []byte) []byte {
	for _, kv := range [...][2]uint64{
		{SettingInitialWindow, s.InitialWindow},
		{SettingMaxFramePayload, s.MaxFramePayload},
		{SettingMaxStreams, s.MaxStreams},
		{SettingBudgetSignal, s.BudgetSignal},
		{SettingCompression, s.Compression},
		{SettingRetryAfter, s.RetryAfter},
	} {
		if kv[1] != 0 {
			b = appendVarint(appendVarint(b, kv[0]), kv[1])
		}
	}
	return b
}
