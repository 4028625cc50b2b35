package mux

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/internal/logtext"
)

// ringModel drives a ring the way a stream does (the lane reader grows it
// as onData does, fills free and commits; Read copies out) against a plain
// byte queue, checking the contents and the ring's layout after every
// step.
type ringModel struct {
	t     *testing.T
	b     ring
	want  []byte
	next  byte
	limit int // the growth bound, as the receiver's window
}

func (m *ringModel) write(k int) {
	m.t.Helper()
	if need := m.b.len() + k; need > m.b.cap() {
		before := m.b.chunks
		oldSize, oldR, oldN := m.b.size, m.b.r, m.b.n
		c := m.b.nextCap(need, max(m.limit, need))
		m.b.grow(c)
		require.Equal(m.t, c, m.b.cap(), "grow to %d", c)
		m.checkGrowCopies(before, oldSize, oldR, oldN, c)
	}
	for off := 0; off < k; {
		p1, p2 := m.b.free(off, k-off)
		require.NotEmpty(m.t, p1, "free(%d, %d)", off, k-off)
		for _, p := range [][]byte{p1, p2} {
			for i := range p {
				p[i] = m.next
				m.want = append(m.want, m.next)
				m.next++
			}
			off += len(p)
		}
		require.LessOrEqual(m.t, off, k)
	}
	m.b.commit(k)
	m.check()
}

// checkGrowCopies checks that a grow past one chunk kept the old full
// chunks (by reference) wherever it could: new memory is at most the
// capacity added plus three chunks (a wrapped chunk, a short one, the cut
// last one), unless the data could not keep its offset within c, and plus
// the data that follows a short last chunk, which is misaligned.
func (m *ringModel) checkGrowCopies(before [][]byte, oldSize, oldR, oldN, c int) {
	m.t.Helper()
	if c <= chunkSize || oldN == 0 || oldR%chunkSize+oldN > c {
		return
	}
	misaligned := 0
	if oldSize%chunkSize != 0 && oldR+oldN > oldSize {
		misaligned = oldR + oldN - oldSize
	}
	old := map[*byte]bool{}
	for _, ch := range before {
		if len(ch) > 0 {
			old[unsafe.SliceData(ch)] = true
		}
	}
	fresh := 0
	for _, ch := range m.b.chunks {
		if !old[unsafe.SliceData(ch)] {
			fresh += len(ch)
		}
	}
	require.LessOrEqual(m.t, fresh, c-oldSize+3*chunkSize+misaligned, "grow %d -> %d with %d bytes at %d made %d new bytes", oldSize, c, oldN, oldR, fresh)
}

func (m *ringModel) read(k int) {
	m.t.Helper()
	p := make([]byte, min(k, m.b.len()+1)) // one more than there is: read stops at the data
	n := m.b.read(p)
	want := min(k, len(m.want))
	require.Equal(m.t, want, n)
	require.True(m.t, bytes.Equal(m.want[:n], p[:n]), "read %d bytes: contents", n)
	m.want = m.want[n:]
	m.check()
}

func (m *ringModel) skip(k int) {
	m.t.Helper()
	k = min(k, m.b.len())
	m.b.skip(k)
	m.want = m.want[k:]
	m.check()
}

// check verifies the layout: the chunks' lengths sum to the capacity, all
// are chunkSize long but the last, each holds no memory past its length,
// and the unread bytes are the model's.
func (m *ringModel) check() {
	m.t.Helper()
	b := &m.b
	require.Equal(m.t, len(m.want), b.len())
	sum := 0
	for i, ch := range b.chunks {
		require.Equal(m.t, len(ch), cap(ch), "chunk %d holds memory past its length", i)
		if i < len(b.chunks)-1 {
			require.Equal(m.t, chunkSize, len(ch), "chunk %d of %d", i, len(b.chunks))
		}
		sum += len(ch)
	}
	require.Equal(m.t, b.size, sum)
	if b.size > 0 {
		require.Less(m.t, b.r, b.size)
	}
	// Peek at the contents without consuming them.
	got := make([]byte, 0, b.n)
	for p, left := b.r, b.n; left > 0; {
		s := b.span(p, left)
		got = append(got, s...)
		p = b.advance(p, len(s))
		left -= len(s)
	}
	require.True(m.t, bytes.Equal(m.want, got), "contents")
}

func TestRingSizesAroundChunks(t *testing.T) {
	S := chunkSize
	sizes := []int{1, 7, 512, S - 1, S, S + 1, 2*S - 3, 2 * S, 3*S + 5}
	for _, first := range sizes {
		for _, drain := range []int{0, 1, S / 2, S - 1, S, S + 1} {
			for _, second := range sizes {
				t.Run(fmt.Sprintf("write%d-read%d-write%d", first, drain, second), func(t *testing.T) {
					m := &ringModel{t: t, limit: 8 * S}
					m.write(first)
					m.read(drain)
					m.write(second)
					m.write(second)
					m.read(first)
					m.write(first)
					m.read(1 << 30)
				})
			}
		}
	}
}

// TestRingWrapsThenGrows puts the data across the end of a full ring and
// back into the chunk where it began, then grows it: the case whose chunk
// is copied.
func TestRingWrapsThenGrows(t *testing.T) {
	S := chunkSize
	for _, limit := range []int{4 * S, 4*S + 4096, 5*S - 1} {
		for _, off := range []int{1, S / 2, S - 1} {
			t.Run(fmt.Sprintf("limit%d-off%d", limit, off), func(t *testing.T) {
				m := &ringModel{t: t, limit: limit}
				m.write(2 * S)
				m.write(S) // 3S or more
				m.read(S + off)
				m.write(m.b.cap() - m.b.len()) // full, wrapped into where it began
				m.write(S)                     // grows
				m.read(1 << 30)
				m.write(3)
				m.read(1 << 30)
			})
		}
	}
}

// TestRingRandom runs seeded random workloads against the model, with
// growth bounds that are and are not multiples of the chunk size.
func TestRingRandom(t *testing.T) {
	S := chunkSize
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		limit := []int{S / 2, S, 3 * S, 5*S + 4096, 9*S - 100}[seed%5]
		m := &ringModel{t: t, limit: limit}
		for range 300 {
			switch op := rng.IntN(10); {
			case op < 5:
				k := rng.IntN(S + S/2)
				if m.b.len()+k > limit {
					k = limit - m.b.len()
				}
				m.write(k)
			case op < 9:
				m.read(rng.IntN(2 * S))
			default:
				m.skip(rng.IntN(S))
			}
			if rng.IntN(50) == 0 {
				m.read(1 << 30)
				m.b.drop()
				m.check()
			}
			if t.Failed() {
				return
			}
		}
	}
}

// TestRingThroughStream moves data through a stream whose ring grows
// past one chunk, toward a window that is not a whole number of chunks,
// with frames larger than a chunk (so a payload is filled in several
// pieces, fillData's and fillDecoded's loops) and a reader that reads odd
// sizes with pauses, so that the data wraps around the ring: plain, and
// compressed (a decoded block of up to 256 KiB). The bytes must arrive
// intact. The ring's layout through every kind of growth is the model
// tests' (above).
func TestRingThroughStream(t *testing.T) {
	const window = 5*chunkSize + 12<<10 // 332 KiB: four chunks and a short one
	for _, c := range []codec.Codec{codec.None, codec.Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			cfg := &Config{InitialWindow: window, MaxWindow: window, MaxFramePayload: 256 << 10}
			p := newPair(t, cfg, cfg)
			cs, err := p.client.OpenStream(ctxT(t), StreamOptions{Compression: c})
			require.NoError(t, err)
			ss, err := p.server.Accept(ctxT(t))
			require.NoError(t, err)
			data := logtext.JSON(3, 4<<20) // compressible, so zstd frames decode to whole blocks
			go func() {
				for b := data; len(b) > 0; {
					k := min(len(b), 200<<10)
					if _, err := cs.Write(b[:k]); err != nil {
						return
					}
					b = b[k:]
				}
				cs.CloseWrite()
			}()
			got := make([]byte, 0, len(data))
			buf := make([]byte, 7919)
			most := 0 // the ring's largest capacity seen
			for i := 0; ; i++ {
				ss.mu.Lock()
				most = max(most, ss.buf.cap())
				ss.mu.Unlock()
				n, err := ss.Read(buf[:1+i%len(buf)])
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				if i%64 == 0 {
					time.Sleep(time.Millisecond) // let the ring fill and wrap
				}
			}
			require.True(t, bytes.Equal(data, got), "%d of %d bytes arrived intact", len(got), len(data))
			t.Logf("the ring grew to %d bytes (window %d)", most, window)
			require.Greater(t, most, chunkSize, "the ring grew past one chunk")
			st := ss.Stats()
			require.LessOrEqual(t, st.RecvWindow, uint64(window))
			if c != codec.None {
				require.Positive(t, st.Compression.FramesDecompressed)
			}
		})
	}
}
