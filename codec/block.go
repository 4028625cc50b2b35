package codec

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// windowFor is the zstd window for blocks of up to maxBlock bytes: the
// smallest power of two that holds a block, so back-references never reach
// outside it.
func windowFor(maxBlock int) int {
	w := zstd.MinWindowSize
	for w < maxBlock {
		w <<= 1
	}
	return w
}

// Encoder compresses blocks. It is not safe for concurrent use: a Pool
// lends it to one writer at a time.
type Encoder struct {
	maxBlock int
	zstd     *zstd.Encoder // made on first use
	out      []byte        // prefix and block; never grows
}

func newEncoder(maxBlock int) *Encoder {
	return &Encoder{maxBlock: maxBlock, out: make([]byte, MaxPrefixLen+s2.MaxEncodedLen(maxBlock))}
}

// Encode compresses p, of at most the pool's block size, as codec c, and
// returns the whole DATA payload: the prefix (AppendPrefix) and the
// block. The payload lives in the encoder's buffer until the next
// Encode. ok is false when it would not be shorter than p itself (the
// data does not compress, or c is not a codec): then the frame goes out
// raw.
func (e *Encoder) Encode(c Codec, p []byte) (payload []byte, ok bool) {
	if len(p) == 0 || len(p) > e.maxBlock {
		return nil, false
	}
	out := AppendPrefix(e.out[:0], c, len(p))
	n := len(out)
	switch c {
	case Zstd:
		if e.zstd == nil {
			enc, err := zstd.NewWriter(nil,
				zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderLevel(zstd.SpeedFastest),
				zstd.WithWindowSize(windowFor(e.maxBlock)),
				zstd.WithLowerEncoderMem(true),
				zstd.WithEncoderCRC(false), // QUIC and TLS already protect the bytes
				zstd.WithSingleSegment(true),
			)
			if err != nil {
				return nil, false
			}
			e.zstd = enc
		}
		// The buffer holds zstd's worst case (raw blocks) for a block of
		// maxBlock bytes, so EncodeAll never reallocates it.
		out = e.zstd.EncodeAll(p, out)
	case S2:
		if len(e.out)-n < s2.MaxEncodedLen(len(p)) {
			return nil, false
		}
		out = out[:n+len(s2.EncodeBetter(e.out[n:], p))]
	default:
		return nil, false
	}
	if len(out) >= len(p) || &out[0] != &e.out[0] {
		// Not smaller, or EncodeAll outgrew the room it was given.
		return nil, false
	}
	return out, true
}

// Decoder decodes blocks. It is not safe for concurrent use: a Pool lends
// it to one reader at a time.
type Decoder struct {
	maxBlock int
	zstd     *zstd.Decoder // made on first use
	in, out  []byte        // a block read from the lane, and what it decodes to
}

func newDecoder(maxBlock int) *Decoder {
	return &Decoder{maxBlock: maxBlock}
}

// Input returns room for a block of n bytes read from the wire (n is at
// most the pool's block size; a longer block is refused before this is
// asked).
func (d *Decoder) Input(n int) []byte {
	if d.in == nil {
		d.in = make([]byte, d.maxBlock)
	}
	return d.in[:n]
}

// Decode decodes block as codec c into exactly n bytes, which the frame
// declared (n is at most the pool's block size). The result lives in the
// decoder's buffer until the next Decode. It never produces or allocates
// more than n bytes of output: a block that would decode to more fails
// with ErrTooLarge, one that decodes to less or not at all with
// ErrCorrupt.
func (d *Decoder) Decode(c Codec, block []byte, n int) ([]byte, error) {
	if n <= 0 || n > d.maxBlock {
		return nil, fmt.Errorf("%w: declared length %d outside 1..%d", ErrTooLarge, n, d.maxBlock)
	}
	if d.out == nil {
		d.out = make([]byte, d.maxBlock)
	}
	switch c {
	case S2:
		dl, err := s2.DecodedLen(block)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: s2: %w", ErrCorrupt, err)
		case dl > n:
			return nil, fmt.Errorf("%w: s2 block of %d bytes declared %d", ErrTooLarge, dl, n)
		case dl < n:
			return nil, fmt.Errorf("%w: s2 block of %d bytes declared %d", ErrCorrupt, dl, n)
		}
		out, err := s2.Decode(d.out[:n], block)
		if err != nil {
			return nil, fmt.Errorf("%w: s2: %w", ErrCorrupt, err)
		}
		return out, nil
	case Zstd:
		var h zstd.Header
		if err := h.Decode(block); err != nil {
			return nil, fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		}
		if h.Skippable || !h.HasFCS {
			return nil, fmt.Errorf("%w: zstd frame without a content size", ErrCorrupt)
		}
		switch {
		case h.FrameContentSize > uint64(n):
			return nil, fmt.Errorf("%w: zstd frame of %d bytes declared %d", ErrTooLarge, h.FrameContentSize, n)
		case h.FrameContentSize < uint64(n):
			return nil, fmt.Errorf("%w: zstd frame of %d bytes declared %d", ErrCorrupt, h.FrameContentSize, n)
		}
		if d.zstd == nil {
			w := uint64(windowFor(d.maxBlock))
			dec, err := zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(w),
				zstd.WithDecoderMaxMemory(uint64(d.maxBlock)),
				zstd.WithDecodeAllCapLimit(true),
				zstd.IgnoreChecksum(true),
			)
			if err != nil {
				return nil, fmt.Errorf("codec: zstd decoder: %w", err)
			}
			d.zstd = dec
		}
		// The capacity is the limit: decoding stops rather than grow it,
		// whatever frames (or concatenated frames) the block holds.
		out, err := d.zstd.DecodeAll(block, d.out[:0:n])
		switch {
		case err == zstd.ErrDecoderSizeExceeded:
			return nil, fmt.Errorf("%w: zstd: %w", ErrTooLarge, err)
		case err != nil:
			return nil, fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		case len(out) != n:
			return nil, fmt.Errorf("%w: zstd block decoded to %d bytes, declared %d", ErrCorrupt, len(out), n)
		case &out[0] != &d.out[0]:
			return nil, fmt.Errorf("%w: zstd output outgrew its buffer", ErrTooLarge)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, uint8(c))
}

// Probe decides, for one stream, whether the next frame is worth
// compressing. After a frame that did not shrink it skips 1, 2, 4, ... up
// to MaxSkip frames before it tries again, so incompressible data costs
// one trial every MaxSkip frames; a frame that shrinks resets it. The zero
// value tries every frame.
type Probe struct {
	skip, backoff uint8
}

// MaxSkip is the most frames a Probe skips between trials.
const MaxSkip = 64

// Try reports whether to try compressing the next frame.
func (p *Probe) Try() bool {
	if p.skip > 0 {
		p.skip--
		return false
	}
	return true
}

// Result records whether a tried frame shrank.
func (p *Probe) Result(shrank bool) {
	if shrank {
		p.backoff, p.skip = 0, 0
		return
	}
	p.backoff = min(max(2*p.backoff, 1), MaxSkip)
	p.skip = p.backoff
}
