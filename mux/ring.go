package mux

// ring is a stream's receive buffer: a circular byte buffer. Received bytes
// are appended contiguously, so a flood of tiny DATA frames costs exactly
// their payload, never per-frame overhead.
//
// One goroutine (the stream's lane reader) writes into the free region
// returned by free, outside the stream's lock, while readers copy out of
// the filled region under the lock: the regions never overlap, and the
// read index moves only forward. Only the lane reader grows the buffer, and
// the buffer is dropped only while no fill is in progress.
type ring struct {
	buf []byte
	r   int // index of the first unread byte
	n   int // unread bytes
}

func (b *ring) len() int { return b.n }
func (b *ring) cap() int { return len(b.buf) }

// read copies unread bytes into p and consumes them.
func (b *ring) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		end := min(b.r+b.n, len(b.buf))
		k := copy(p, b.buf[b.r:end])
		b.r = (b.r + k) % len(b.buf)
		b.n -= k
		p = p[k:]
		total += k
	}
	return total
}

// free returns the region where the next k bytes go, in one or two
// pieces. The caller has made sure k fits.
func (b *ring) free(k int) (p1, p2 []byte) {
	w := (b.r + b.n) % len(b.buf)
	first := min(k, len(b.buf)-w)
	return b.buf[w : w+first], b.buf[:k-first]
}

// skip consumes k unread bytes without copying them.
func (b *ring) skip(k int) {
	b.r = (b.r + k) % len(b.buf)
	b.n -= k
}

// commit makes k bytes written into the free region readable.
func (b *ring) commit(k int) { b.n += k }

// grow reallocates the buffer with capacity c >= len, keeping the data.
func (b *ring) grow(c int) {
	nb := make([]byte, c)
	n := 0
	if b.n > 0 {
		end := min(b.r+b.n, len(b.buf))
		n = copy(nb, b.buf[b.r:end])
		n += copy(nb[n:], b.buf[:b.n-n])
	}
	b.buf, b.r, b.n = nb, 0, n
}

// drop releases the memory; the buffer must be empty or abandoned.
func (b *ring) drop() { b.buf, b.r, b.n = nil, 0, 0 }
