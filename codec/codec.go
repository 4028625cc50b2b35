// Package codec is bp/1's per-stream compression (SPEC.md 5.1 and 5.9):
// the codecs, the prefix a compressed DATA payload starts with, and the
// encoders and decoders that turn one frame's bytes into one independent
// block and back.
//
// Every compressed DATA frame carries one block that decodes on its own
// (no state carries over from frame to frame), and says in its prefix how
// many application bytes it decodes to. So a receiver checks a frame
// against the credit it granted before it decodes anything, a decoder
// never produces more than the frame declared, and encoders and decoders
// can be shared by all the streams of a session (Pool) instead of costing
// each stream its own. Decoding is synchronous: no codec starts a
// goroutine.
//
// The package does no I/O and keeps no global state.
package codec

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/quic-go/quic-go/quicvarint"
)

// Codec names a compression format. Its value is the Codec byte of a
// compressed DATA payload (SPEC.md 5.1).
type Codec uint8

const (
	// None sends a stream's bytes as they are.
	None Codec = 0
	// Zstd is Zstandard (RFC 8878): the better ratio.
	Zstd Codec = 1
	// S2 is S2, an extension of Snappy: the faster one.
	S2 Codec = 2
)

// Codecs lists the codecs this package implements, in preference order.
var codecs = [...]Codec{Zstd, S2}

// String returns the codec's name as Parse accepts it.
func (c Codec) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case S2:
		return "s2"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Known reports whether c is a codec this package implements (not None).
func (c Codec) Known() bool { return c == Zstd || c == S2 }

// Parse returns the codec named s: "zstd", "s2" or "none" (any case).
func Parse(s string) (Codec, error) {
	switch strings.ToLower(s) {
	case "none", "off", "":
		return None, nil
	case "zstd":
		return Zstd, nil
	case "s2":
		return S2, nil
	}
	return None, fmt.Errorf("codec: unknown compression %q (want zstd, s2 or none)", s)
}

// Set is a set of codecs, as SETTINGS_COMPRESSION carries it: bit c-1 is
// codec c.
type Set uint64

// Supported is every codec this package implements.
const Supported = Set(1<<(Zstd-1) | 1<<(S2-1))

// SetOf returns the set holding cs; None and unknown codecs are left out.
func SetOf(cs ...Codec) Set {
	var s Set
	for _, c := range cs {
		if c.Known() {
			s |= 1 << (c - 1)
		}
	}
	return s
}

// Has reports whether c is in s. None is in every set: a stream may
// always be sent uncompressed.
func (s Set) Has(c Codec) bool { return c == None || (c.Known() && s&(1<<(c-1)) != 0) }

// String lists the set's codecs, "none" when it is empty.
func (s Set) String() string {
	var names []string
	for _, c := range codecs {
		if s.Has(c) {
			names = append(names, c.String())
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// MaxBlock is the most application bytes one compressed DATA frame may
// carry (SPEC.md 5.1), whatever SETTINGS_MAX_FRAME_PAYLOAD allows: it
// bounds a decoder's memory.
const MaxBlock = 256 << 10

// MaxPrefixLen is the longest prefix of a compressed DATA payload.
const MaxPrefixLen = 1 + 8

// Errors a decoder reports. Both wrap the reason.
var (
	// ErrTooLarge means a block decodes to more bytes than its frame
	// declared: bytes the receiver never granted credit for. The session
	// fails with FLOW_CONTROL_ERROR.
	ErrTooLarge = errors.New("compressed block decodes past its declared length")
	// ErrCorrupt means a block does not decode, or decodes to fewer
	// bytes than declared. The session fails with PROTOCOL_ERROR.
	ErrCorrupt = errors.New("corrupt compressed block")
)

// AppendPrefix appends a compressed DATA payload's prefix: the codec and
// the number of application bytes the block decodes to.
func AppendPrefix(b []byte, c Codec, decoded int) []byte {
	return quicvarint.Append(append(b, byte(c)), uint64(decoded))
}

// PrefixLen is the length of the prefix AppendPrefix writes.
func PrefixLen(decoded int) int { return 1 + quicvarint.Len(uint64(decoded)) }

// ReadPrefix reads a compressed DATA payload's prefix from r and returns
// the codec, the declared decoded length and the prefix's length in
// bytes. It checks nothing but the encoding.
func ReadPrefix(r io.ByteReader) (c Codec, decoded uint64, n int, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, 0, 0, err
	}
	v, err := quicvarint.Read(r)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, 0, err
	}
	return Codec(b), v, 1 + quicvarint.Len(v), nil
}
