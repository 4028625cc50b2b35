package codec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bpmux/bp/internal/logtext"
	"github.com/klauspost/compress/s2"
)

// FuzzDecode feeds arbitrary compressed payloads (prefix and block, as a
// DATA frame carries them) to a decoder, with an arbitrary credit.
// Properties: it never panics; a block it accepts decodes to exactly its
// declared length, which is within the credit and the block size; it never
// produces more, and never allocates output beyond the buffer it was
// charged for; any failure is ErrTooLarge or ErrCorrupt.
func FuzzDecode(f *testing.F) {
	logs := logtext.JSON(1, 20000)
	zeros := make([]byte, 1<<20)
	p := NewPool(PoolConfig{MaxBlock: 16 << 10})
	e := p.Encoder()
	for _, c := range []Codec{Zstd, S2} {
		for _, in := range [][]byte{logs[:100], logs[:5000], logs[:16<<10], zeros[:16<<10]} {
			if b, ok := e.Encode(c, in); ok {
				f.Add(append([]byte(nil), b...), uint32(16<<10))
			}
		}
	}
	f.Add(AppendPrefix(s2.Encode(nil, zeros), S2, 1000), uint32(1<<20)) // a bomb that lies
	f.Add(append(AppendPrefix(nil, Zstd, 1000), zstdOf(zeros)...), uint32(1<<20))
	f.Add(append(AppendPrefix(nil, S2, 5000), 0x88, 0x27, 0, 1, 2, 3), uint32(100)) // over credit, corrupt

	const maxBlock = 16 << 10
	d := newDecoder(maxBlock)
	f.Fuzz(func(t *testing.T, payload []byte, credit uint32) {
		c, n, l, err := ReadPrefix(bytes.NewReader(payload))
		if err != nil {
			return
		}
		// What a receiver checks before decoding (SPEC.md 5.9).
		if n == 0 || n > maxBlock || n > uint64(credit) || uint64(len(payload)) > n {
			return
		}
		block := d.Input(len(payload) - l)
		copy(block, payload[l:])
		out, err := d.Decode(c, block, int(n))
		if err != nil {
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is neither ErrTooLarge nor ErrCorrupt", err)
			}
			if out != nil {
				t.Fatal("output with an error")
			}
			return
		}
		if uint64(len(out)) != n {
			t.Fatalf("decoded %d bytes, declared %d", len(out), n)
		}
		if len(d.out) != maxBlock || len(d.in) != maxBlock || &out[0] != &d.out[0] {
			t.Fatal("the decoder's output left the buffer it was charged for")
		}
	})
}

// zstdOf is a zstd frame of p's first MaxBlock bytes.
func zstdOf(p []byte) []byte {
	e := newEncoder(MaxBlock)
	if b, ok := e.Encode(Zstd, p[:MaxBlock]); ok {
		return b[PrefixLen(MaxBlock):]
	}
	return nil
}
