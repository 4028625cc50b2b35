package impair

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Times inside a proxy are int64 nanoseconds since the proxy started, read
// from the monotonic clock.

// shaper holds the decisions of one direction: the bandwidth model and the
// random source. Its owner serializes access.
type shaper struct {
	d         Direction // normalized
	queueCap  int64     // effective Queue
	reorderBy int64     // effective ReorderBy
	rng       *rand.Rand
	linkFree  int64 // when the rate-limited link has sent everything admitted
	queuePeak int64
}

// newShaper returns a shaper for d whose random stream is stream of seed.
func newShaper(d Direction, seed, stream uint64) shaper {
	var s shaper
	s.rng = rand.New(rand.NewPCG(seed, stream))
	s.set(d)
	return s
}

func (s *shaper) set(d Direction) {
	d = d.normalize()
	s.d = d
	s.queueCap = int64(d.Queue)
	if s.queueCap == 0 {
		s.queueCap = int64(DefaultQueue(d.Rate))
	}
	s.reorderBy = int64(d.ReorderBy)
	if s.reorderBy == 0 {
		s.reorderBy = int64(max(d.Delay/2, time.Millisecond))
	}
}

// reseed restarts the random stream.
func (s *shaper) reseed(seed, stream uint64) {
	s.rng = rand.New(rand.NewPCG(seed, stream))
}

// backlog returns the bytes admitted to the link but not yet sent at now.
func (s *shaper) backlog(now int64) int64 {
	if s.d.Rate <= 0 || s.linkFree <= now {
		return 0
	}
	return int64(float64(s.linkFree-now) * float64(s.d.Rate) / 1e9)
}

// fits reports whether n more bytes fit into the bandwidth queue at now. A
// packet always fits an empty queue.
func (s *shaper) fits(now int64, n int) bool {
	b := s.backlog(now)
	return b == 0 || b+int64(n) <= s.queueCap
}

// waitFor returns how long until n bytes fit into the bandwidth queue.
func (s *shaper) waitFor(now int64, n int) time.Duration {
	over := s.backlog(now) + int64(n) - s.queueCap
	if over <= 0 || s.d.Rate <= 0 {
		return 0
	}
	return max(time.Duration(float64(over)*1e9/float64(s.d.Rate)), 50*time.Microsecond)
}

// send puts n bytes on the link at now and returns when their last byte
// has left it. Without a rate cap that is now.
func (s *shaper) send(now int64, n int) int64 {
	if s.d.Rate <= 0 {
		return now
	}
	if b := s.backlog(now) + int64(n); b > s.queuePeak {
		s.queuePeak = b
	}
	start := max(now, s.linkFree)
	s.linkFree = start + int64(float64(n)*1e9/float64(s.d.Rate))
	return s.linkFree
}

// delay returns the one-way delay of the next packet: Delay plus jitter.
func (s *shaper) delay() int64 {
	d := int64(s.d.Delay)
	if s.d.Jitter > 0 {
		d += s.rng.Int64N(int64(s.d.Jitter))
	}
	return d
}

// lost decides whether the next packet is lost.
func (s *shaper) lost() bool {
	return s.d.Loss > 0 && s.rng.Float64() < s.d.Loss
}

// reordered decides whether the next packet is held back.
func (s *shaper) reordered() bool {
	return s.d.Reorder > 0 && s.rng.Float64() < s.d.Reorder
}

// counters are the atomically updated DirStats of one direction.
type counters struct {
	packets, bytes                     atomic.Uint64
	loss, queue, blackhole, overflow   atomic.Uint64
	droppedBytes, reordered, writeErrs atomic.Uint64
	stalls                             atomic.Uint64
	heldPeak                           atomic.Int64
}

// held records that n payload bytes are held.
func (c *counters) held(n int64) {
	for {
		old := c.heldPeak.Load()
		if n <= old || c.heldPeak.CompareAndSwap(old, n) {
			return
		}
	}
}

func (c *counters) drop(which *atomic.Uint64, n int) {
	which.Add(1)
	c.droppedBytes.Add(uint64(n))
}

func (c *counters) snapshot(queuePeak int64) DirStats {
	return DirStats{
		Packets:          c.packets.Load(),
		Bytes:            c.bytes.Load(),
		DroppedLoss:      c.loss.Load(),
		DroppedQueue:     c.queue.Load(),
		DroppedBlackhole: c.blackhole.Load(),
		DroppedOverflow:  c.overflow.Load(),
		DroppedBytes:     c.droppedBytes.Load(),
		Reordered:        c.reordered.Load(),
		WriteErrors:      c.writeErrs.Load(),
		Stalls:           c.stalls.Load(),
		QueuePeak:        queuePeak,
		HeldPeak:         c.heldPeak.Load(),
	}
}

// packet is a datagram or TCP chunk in a queue.
type packet struct {
	buf  *[]byte // pooled; len is the payload
	rel  int64   // release time
	seq  uint64  // arrival order, breaks ties
	flow *udpFlow
	eof  bool // TCP: the source ended cleanly
	fail bool // TCP: the source failed
}

func (p *packet) before(q *packet) bool {
	return p.rel < q.rel || (p.rel == q.rel && p.seq < q.seq)
}

// ring is a FIFO of packets that grows by doubling.
type ring struct {
	buf  []packet
	head int
	n    int
}

func (r *ring) len() int { return r.n }

func (r *ring) push(p packet) {
	if r.n == len(r.buf) {
		nb := make([]packet, max(64, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = p
	r.n++
}

func (r *ring) front() *packet { return &r.buf[r.head] }

func (r *ring) pop() packet {
	p := r.buf[r.head]
	r.buf[r.head] = packet{}
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return p
}

// pktHeap is a min-heap of packets by release time.
type pktHeap []packet

func (h *pktHeap) push(p packet) {
	*h = append(*h, p)
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !s[i].before(&s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *pktHeap) pop() packet {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = packet{}
	s = s[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].before(&s[m]) {
			m = l
		}
		if r < len(s) && s[r].before(&s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// bufPool hands out packet buffers in three size classes.
type bufPool struct {
	small, mid, big sync.Pool
}

const (
	smallBuf = 2 << 10
	midBuf   = 16 << 10
	bigBuf   = 64 << 10
)

// get returns a buffer of length n (at most bigBuf).
func (p *bufPool) get(n int) *[]byte {
	var pool *sync.Pool
	var size int
	switch {
	case n <= smallBuf:
		pool, size = &p.small, smallBuf
	case n <= midBuf:
		pool, size = &p.mid, midBuf
	default:
		pool, size = &p.big, bigBuf
	}
	b, _ := pool.Get().(*[]byte)
	if b == nil {
		s := make([]byte, size)
		b = &s
	}
	*b = (*b)[:n]
	return b
}

func (p *bufPool) put(b *[]byte) {
	switch cap(*b) {
	case smallBuf:
		p.small.Put(b)
	case midBuf:
		p.mid.Put(b)
	case bigBuf:
		p.big.Put(b)
	}
}

// clock gives proxy time.
type clock struct{ start time.Time }

func (c clock) now() int64 { return int64(time.Since(c.start)) }

// sleepUntil waits until the proxy time t, or until done is closed
// (returning false). The timer is reused.
func (c clock) sleepUntil(t int64, timer *time.Timer, done <-chan struct{}) bool {
	for {
		d := t - c.now()
		if d <= 0 {
			return true
		}
		timer.Reset(time.Duration(d))
		select {
		case <-timer.C:
		case <-done:
			timer.Stop()
			return false
		}
	}
}
