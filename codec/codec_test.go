package codec

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/bpmux/bp/internal/logtext"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestParseAndSets(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Codec
		ok   bool
	}{{"zstd", Zstd, true}, {"S2", S2, true}, {"none", None, true}, {"", None, true}, {"gzip", None, false}} {
		c, err := Parse(tc.in)
		assert.Equal(t, tc.ok, err == nil, tc.in)
		assert.Equal(t, tc.want, c, tc.in)
	}
	s := SetOf(Zstd, None, Codec(9))
	assert.True(t, s.Has(Zstd))
	assert.False(t, s.Has(S2))
	assert.True(t, s.Has(None), "none is always allowed")
	assert.False(t, Supported.Has(Codec(3)))
	assert.Equal(t, "zstd,s2", Supported.String())
	assert.Equal(t, "none", Set(0).String())
	assert.Equal(t, Set(3), Supported)
}

func TestPrefix(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 16383, 16384, MaxBlock} {
		b := AppendPrefix(nil, S2, n)
		require.Len(t, b, PrefixLen(n))
		c, got, l, err := ReadPrefix(bytes.NewReader(b))
		require.NoError(t, err)
		assert.Equal(t, S2, c)
		assert.Equal(t, uint64(n), got)
		assert.Equal(t, len(b), l)
	}
	_, _, _, err := ReadPrefix(bytes.NewReader([]byte{1}))
	assert.Error(t, err)
}

func TestRoundTrip(t *testing.T) {
	const block = 64 << 10
	p := NewPool(PoolConfig{MaxBlock: block})
	for _, c := range []Codec{Zstd, S2} {
		for _, n := range []int{1, 100, 4096, block} {
			t.Run(fmt.Sprintf("%v/%d", c, n), func(t *testing.T) {
				in := logtext.JSON(1, n)
				e := p.Encoder()
				defer p.PutEncoder(e)
				payload, ok := e.Encode(c, in)
				if n < 4096 {
					// Tiny blocks do not shrink enough: they go raw.
					if !ok {
						return
					}
				} else {
					require.True(t, ok)
				}
				if n >= 4096 {
					assert.Less(t, len(payload), n/2, "logs compress at least 2x")
				}
				got, decoded, l, err := ReadPrefix(bytes.NewReader(payload))
				require.NoError(t, err)
				require.Equal(t, c, got)
				d, err := p.Decoder(nil)
				require.NoError(t, err)
				defer p.PutDecoder(d)
				block := append(d.Input(len(payload) - l)[:0], payload[l:]...)
				out, err := d.Decode(c, block, int(decoded))
				require.NoError(t, err)
				assert.Equal(t, in, out)
			})
		}
	}
}

func TestIncompressibleGoesRaw(t *testing.T) {
	p := NewPool(PoolConfig{MaxBlock: 64 << 10})
	e := p.Encoder()
	for _, c := range []Codec{Zstd, S2, None, Codec(7)} {
		_, ok := e.Encode(c, random(64<<10))
		assert.False(t, ok, c)
	}
	_, ok := e.Encode(S2, make([]byte, 64<<10+1))
	assert.False(t, ok, "past the block size")
	logs := logtext.JSON(1, 64<<10)
	for _, c := range []Codec{Zstd, S2} {
		e.Encode(c, logs) // the first use makes the codec's state
		allocs := testing.AllocsPerRun(20, func() { e.Encode(c, logs) })
		assert.Zero(t, allocs, "%v encodes without allocating", c)
	}
}

// bomb returns a block of codec c that decodes to n zero bytes.
func bomb(t *testing.T, c Codec, n int) []byte {
	zero := make([]byte, n)
	switch c {
	case Zstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		require.NoError(t, err)
		return enc.EncodeAll(zero, nil)
	case S2:
		return s2.Encode(nil, zero)
	}
	t.Fatal("no such codec")
	return nil
}

func TestDecodeRefuses(t *testing.T) {
	const block = 64 << 10
	p := NewPool(PoolConfig{MaxBlock: block})
	d, err := p.Decoder(nil)
	require.NoError(t, err)
	zstdNoFCS := func() []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		require.NoError(t, err)
		w.Write(logtext.JSON(1, 300<<10)) // past one block: the size is not known up front
		w.Close()
		return buf.Bytes()
	}()
	twoFrames := append(bomb(t, Zstd, 1000), bomb(t, Zstd, 1000)...)
	for _, tc := range []struct {
		name     string
		c        Codec
		block    []byte
		declared int
		want     error
	}{
		{"zstd bomb declared small", Zstd, bomb(t, Zstd, 16<<20), 1000, ErrTooLarge},
		{"s2 bomb declared small", S2, bomb(t, S2, 16<<20), 1000, ErrTooLarge},
		{"zstd decodes short", Zstd, bomb(t, Zstd, 100), 1000, ErrCorrupt},
		{"s2 decodes short", S2, bomb(t, S2, 100), 1000, ErrCorrupt},
		{"declared past the block size", S2, bomb(t, S2, block+1), block + 1, ErrTooLarge},
		{"declared zero", S2, nil, 0, ErrTooLarge},
		{"zstd without content size", Zstd, zstdNoFCS, 1000, ErrCorrupt},
		{"zstd two frames", Zstd, twoFrames, 1000, ErrTooLarge},
		{"zstd garbage", Zstd, random(100), 1000, ErrCorrupt},
		{"s2 garbage", S2, append([]byte{0xe8, 0x07}, random(100)...), 1000, ErrCorrupt},
		{"s2 truncated", S2, bomb(t, S2, 1000)[:5], 1000, ErrCorrupt},
		{"unknown codec", Codec(5), bomb(t, S2, 1000), 1000, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := d.Decode(tc.c, tc.block, tc.declared)
			assert.ErrorIs(t, err, tc.want)
			assert.Nil(t, out)
			assert.Len(t, d.out, block, "the output buffer never grows")
		})
	}
}

func TestProbe(t *testing.T) {
	var p Probe
	var tried []int
	for i := range 200 {
		if p.Try() {
			tried = append(tried, i)
			p.Result(false)
		}
	}
	// Trials back off 1, 2, 4, ... frames, up to MaxSkip.
	assert.Equal(t, []int{0, 2, 5, 10, 19, 36, 69, 134, 199}, tried)
	p.Result(true)
	assert.True(t, p.Try())
	assert.True(t, p.Try(), "a frame that shrank resets the backoff")
}

func TestPoolLimitsAndCharge(t *testing.T) {
	var used, total uint64 = 0, 0
	charge := func(n uint64) bool {
		if used+n > total {
			return false
		}
		used += n
		return true
	}
	release := func(n uint64) { used -= n }

	total = 0
	p := NewPool(PoolConfig{MaxBlock: 64 << 10, MaxEncoders: 1, Charge: charge, Release: release})
	assert.Nil(t, p.Encoder(), "no budget: raw")
	assert.False(t, p.ReserveDecoder())
	_, err := p.Decoder(nil)
	assert.Error(t, err)

	total = p.EncoderCharge() + p.DecoderCharge()
	assert.True(t, p.ReserveDecoder())
	e := p.Encoder()
	require.NotNil(t, e)
	assert.Equal(t, total, used)
	assert.Equal(t, total, p.Charged())
	// The one encoder is lent: the next caller sends raw.
	assert.Nil(t, p.Encoder())
	p.PutEncoder(e)
	assert.Same(t, e, p.Encoder())
	p.PutEncoder(e)
	p.Close()
	assert.Zero(t, used)
	_, err = p.Decoder(nil)
	assert.ErrorIs(t, err, ErrPoolClosed)
}

// TestChargeCoversMemory checks that what an encoder and a decoder are
// charged covers the heap they hold after working through every codec,
// incompressible data and bombs.
func TestChargeCoversMemory(t *testing.T) {
	for _, block := range []int{16 << 10, 64 << 10, MaxBlock} {
		t.Run(fmt.Sprint(block), func(t *testing.T) {
			inputs := [][]byte{logtext.JSON(1, block), random(block), make([]byte, block), logtext.JSON(1, block/3)}
			p := NewPool(PoolConfig{MaxBlock: block})
			var payloads [][]byte
			{
				e := p.Encoder()
				for _, c := range []Codec{Zstd, S2} {
					for _, in := range inputs {
						if b, ok := e.Encode(c, in); ok {
							payloads = append(payloads, append([]byte(nil), b...))
						}
					}
				}
				p.PutEncoder(e)
			}
			runtime.GC()
			runtime.GC()
			before := heapInUse()
			e := newEncoder(block)
			d := newDecoder(block)
			for range 3 {
				for _, c := range []Codec{Zstd, S2} {
					for _, in := range inputs {
						e.Encode(c, in)
					}
				}
				for _, b := range payloads {
					c, n, l, err := ReadPrefix(bytes.NewReader(b))
					require.NoError(t, err)
					in := d.Input(len(b) - l)
					copy(in, b[l:])
					_, err = d.Decode(c, in, int(n))
					require.NoError(t, err)
				}
				d.Decode(Zstd, bomb(t, Zstd, 16<<20), block)
				d.Decode(S2, bomb(t, S2, 1<<20), block)
			}
			runtime.GC()
			held := max(int64(heapInUse())-int64(before), 0)
			runtime.KeepAlive(e)
			runtime.KeepAlive(d)
			charged := encoderCharge(block) + decoderCharge(block)
			t.Logf("block %d: holds %d bytes, charged %d", block, held, charged)
			assert.LessOrEqual(t, uint64(held), charged)
		})
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestErrorsWrap(t *testing.T) {
	d := newDecoder(1024)
	_, err := d.Decode(S2, []byte{0xff}, 10)
	assert.True(t, errors.Is(err, ErrCorrupt))
}

// TestSpecVectors decodes the compressed payloads of SPEC.md 12.1.
func TestSpecVectors(t *testing.T) {
	want := bytes.Repeat([]byte("ab"), 32)
	for _, payload := range []string{"02404040046162f60200", "01404028b52ffd20404d000010616201540202272b"} {
		b, err := hex.DecodeString(payload)
		require.NoError(t, err)
		c, n, l, err := ReadPrefix(bytes.NewReader(b))
		require.NoError(t, err)
		d := newDecoder(64 << 10)
		out, err := d.Decode(c, b[l:], int(n))
		require.NoError(t, err, c)
		assert.Equal(t, want, out, c)
	}
}
