package mux

// ring is a stream's receive buffer: a circular byte buffer made of
// chunks. Received bytes are appended contiguously, so a flood of tiny DATA
// frames costs exactly their payload, never per-frame overhead.
//
// Up to chunkSize it is one slice, which grows by copying as the old ring
// buffer did. Past that it is a list of chunkSize chunks (the last may be
// shorter, so that the capacity is exactly what was asked: the receiver's
// reservation covers it, see window.Receiver.SetBufferCap), addressed as one
// circular buffer: position p is byte p%chunkSize of chunk p/chunkSize. A
// ring that grows keeps its chunks and adds new ones, so growing moves at
// most a few chunks' bytes instead of the whole buffer, and holds at most
// a few chunks beyond the capacity asked for while it grows, not the old
// buffer and a new one of twice its size (but for the rare case that
// relayout serves).
//
// One goroutine (the stream's lane reader) writes into the free region
// that free returns, outside the stream's lock, while readers copy out of
// the filled region under the lock: the regions never overlap, and the
// read position moves only forward. Only the lane reader grows the buffer,
// and the buffer is dropped only while no fill is in progress.
type ring struct {
	chunks [][]byte // each chunkSize long but the last, which may be shorter
	size   int      // the sum of their lengths
	r      int      // position of the first unread byte, in [0, size)
	n      int      // unread bytes
}

// chunkSize is the size of a large ring's chunks.
const chunkSize = 64 << 10

func (b *ring) len() int { return b.n }
func (b *ring) cap() int { return b.size }

// span returns the contiguous bytes at position p, at most k of them.
func (b *ring) span(p, k int) []byte {
	c := b.chunks[p/chunkSize]
	o := p % chunkSize
	return c[o:min(len(c), o+k)]
}

// advance returns position p moved forward by k.
func (b *ring) advance(p, k int) int {
	p += k
	if p >= b.size {
		p -= b.size
	}
	return p
}

// read copies unread bytes into p and consumes them.
func (b *ring) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		k := copy(p, b.span(b.r, b.n))
		b.r = b.advance(b.r, k)
		b.n -= k
		p = p[k:]
		total += k
	}
	return total
}

// free returns the free region where bytes off to off+k of what is
// written next go: its first piece, and the second if the region spans
// more than one. If it spans more than two (a frame larger than a chunk,
// or one across a short last chunk), the pieces hold less than k: the
// caller asks again for the rest. The caller has made sure off+k fits.
func (b *ring) free(off, k int) (p1, p2 []byte) {
	w := b.advance(b.r, b.n+off)
	p1 = b.span(w, k)
	if k -= len(p1); k > 0 {
		p2 = b.span(b.advance(w, len(p1)), k)
	}
	return p1, p2
}

// skip consumes k unread bytes without copying them.
func (b *ring) skip(k int) {
	if k > 0 {
		b.r = b.advance(b.r, k)
		b.n -= k
	}
}

// commit makes k bytes written into the free region readable.
func (b *ring) commit(k int) { b.n += k }

// nextCap is the capacity to grow to when the ring must hold need bytes,
// at most limit (the receiver's window). Up to a chunk it doubles, at
// least minRing; past that, growing copies next to nothing, so it grows to
// need rounded up to whole chunks (where limit allows: only a ring at a
// limit that is not a whole number of chunks has a short last chunk). The
// capacity so stays within a chunk of the most data the ring has held at
// once. It is not given back as the application reads it: a ring drops
// its memory only when small and read empty, or idle (Stream.tick).
func (b *ring) nextCap(need, limit int) int {
	if c := max(need, 2*b.size, minRing); c <= chunkSize {
		return min(c, limit)
	}
	return min((need+chunkSize-1)/chunkSize*chunkSize, limit)
}

// grow makes the capacity c > cap(), keeping the data.
//
// A small ring's growth is a short path with a small frame: it runs under
// every stream's first DATA frame, on the lane reader's stack, which must
// stay at 2 KiB (see laneReader).
func (b *ring) grow(c int) {
	if c > chunkSize {
		b.growChunks(c)
		return
	}
	nb := make([]byte, c)
	n := 0
	if b.n > 0 { // one chunk: the data is in at most two pieces
		old := b.chunks[0]
		end := min(b.r+b.n, len(old))
		n = copy(nb, old[b.r:end])
		copy(nb[n:], old[:b.n-n])
	}
	b.chunks, b.size, b.r = append(b.chunks[:0], nb), c, 0
}

// growChunks is grow past one chunk.
//
//go:noinline
func (b *ring) growChunks(c int) {
	start := b.r % chunkSize // where the data begins in the new layout
	if b.n == 0 {
		start = 0
	}
	if start+b.n > c {
		b.relayout(c)
		return
	}
	// Lay the data out again from the same offset of a first chunk, so that
	// every full chunk the data passes through keeps its bytes where they
	// are and moves by reference. Copied are only: a short chunk (a large
	// ring's last), the chunk in which the data wraps around to end where
	// it began, and what follows a short chunk in the data (misaligned by
	// then).
	old := b.chunks
	used := make([]bool, len(old))
	var out [][]byte
	q := start // the new position of the next byte of data
	for p, left := b.r, b.n; left > 0; {
		s := b.span(p, left)
		ci := p / chunkSize
		if len(old[ci]) == chunkSize && !used[ci] && q%chunkSize == p%chunkSize && q/chunkSize == len(out) {
			out = append(out, old[ci])
			used[ci] = true
			q += len(s)
		} else {
			for (q+len(s)-1)/chunkSize >= len(out) { // the chunks s goes into
				out = append(out, make([]byte, chunkSize))
			}
			q = copyAt(out, q, s)
		}
		p = b.advance(p, len(s))
		left -= len(s)
	}
	if size := len(out) * chunkSize; size > c {
		// The data ends in the last chunk, before c: that chunk is cut
		// short, in memory of its own, so that the capacity held is c.
		last := len(out) - 1
		nb := make([]byte, c-last*chunkSize)
		copy(nb, out[last])
		out[last] = nb
	}
	// Then the free space: the old full chunks the data left unused, then
	// new ones, the last cut short to make the capacity exactly c.
	size := min(len(out)*chunkSize, c)
	for i, ch := range old {
		if !used[i] && len(ch) == chunkSize && size+chunkSize <= c {
			out = append(out, ch)
			size += chunkSize
		}
	}
	for size < c {
		k := min(chunkSize, c-size)
		out = append(out, make([]byte, k))
		size += k
	}
	b.chunks, b.size, b.r = out, c, start
}

// relayout copies the data into new memory of capacity c, from position 0.
func (b *ring) relayout(c int) {
	var out [][]byte
	for size := 0; size < c; {
		k := min(chunkSize, c-size)
		out = append(out, make([]byte, k))
		size += k
	}
	for q := 0; q < b.n; {
		q = copyAt(out, q, b.span(b.advance(b.r, q), b.n-q))
	}
	b.chunks, b.size, b.r = out, c, 0
}

// copyAt copies s into chunks from position q, across chunk boundaries,
// and returns the position after it. The chunks hold it.
func copyAt(chunks [][]byte, q int, s []byte) int {
	for len(s) > 0 {
		m := copy(chunks[q/chunkSize][q%chunkSize:], s)
		s = s[m:]
		q += m
	}
	return q
}

// drop releases the memory; the buffer must be empty or abandoned.
func (b *ring) drop() { b.chunks, b.size, b.r, b.n = nil, 0, 0, 0 }
