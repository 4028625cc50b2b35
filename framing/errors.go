package framing

import "fmt"

// ErrorCode is a bp/1 error code, carried by RESET, STOP_SENDING and GOAWAY
// frames and as the QUIC application error code when a session closes.
type ErrorCode uint64

// The error codes of bp/1 (SPEC.md, "Error codes").
const (
	// NoError: graceful close; no error.
	NoError ErrorCode = 0x0
	// ProtocolError: the peer broke a rule of the protocol.
	ProtocolError ErrorCode = 0x1
	// FlowControlError: the peer sent past the credit it was granted.
	FlowControlError ErrorCode = 0x2
	// FrameSizeError: a frame's length exceeds what its type allows.
	FrameSizeError ErrorCode = 0x3
	// InternalError: the endpoint failed for reasons of its own.
	InternalError ErrorCode = 0x4
	// RefusedStream: the stream was refused before any data was processed;
	// the opener may retry it.
	RefusedStream ErrorCode = 0x5
	// Cancel: the application abandoned the stream.
	Cancel ErrorCode = 0x6
	// StreamLimitError: the peer opened more streams than allowed.
	StreamLimitError ErrorCode = 0x7
	// SettingsError: SETTINGS was missing, repeated or carried a bad value.
	SettingsError ErrorCode = 0x8
	// EnhanceYourCalm: the peer sent frames faster than they are useful
	// (floods of pings, resets, empty or redundant frames).
	EnhanceYourCalm ErrorCode = 0x9
	// KeepaliveTimeout: the peer did not answer PINGs in time.
	KeepaliveTimeout ErrorCode = 0xa
)

var codeNames = [...]string{
	NoError:          "NO_ERROR",
	ProtocolError:    "PROTOCOL_ERROR",
	FlowControlError: "FLOW_CONTROL_ERROR",
	FrameSizeError:   "FRAME_SIZE_ERROR",
	InternalError:    "INTERNAL_ERROR",
	RefusedStream:    "REFUSED_STREAM",
	Cancel:           "CANCEL",
	StreamLimitError: "STREAM_LIMIT_ERROR",
	SettingsError:    "SETTINGS_ERROR",
	EnhanceYourCalm:  "ENHANCE_YOUR_CALM",
	KeepaliveTimeout: "KEEPALIVE_TIMEOUT",
}

// String returns the code's name as SPEC.md spells it.
func (c ErrorCode) String() string {
	if c < ErrorCode(len(codeNames)) {
		return codeNames[c]
	}
	return fmt.Sprintf("ERROR(0x%x)", uint64(c))
}
