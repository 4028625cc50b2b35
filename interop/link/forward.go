package link

import (
	"errors"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of everything one direction holds in its delay line. Bytes are
// counted by buffer capacity, so they bound memory. Packets beyond are
// dropped and counted as DroppedOverflow.
const (
	maxHeldPackets = 65536
	maxHeldBytes   = 64 << 20
)

// Scheduler states kept in dir.sleep besides a wake-up time.
const (
	schedBusy = math.MinInt64 // writing due packets: no signal needed
	schedIdle = math.MaxInt64 // nothing queued: any packet must signal
)

// clock gives link time: nanoseconds since start, monotonic.
type clock struct{ start time.Time }

func (c clock) now() int64 { return int64(time.Since(c.start)) }

// packet is an IP packet in a direction's delay line.
type packet struct {
	buf       *[]byte // pooled; len is the packet
	rel       int64   // release time
	seq       uint64  // arrival order, breaks ties
	corrupted bool
	drop      bool // blackholed on departure
}

func (p *packet) before(q *packet) bool {
	return p.rel < q.rel || (p.rel == q.rel && p.seq < q.seq)
}

// pktHeap is a min-heap of packets by release time. It is a copy of the
// unexported one in interop/impair (which this package cannot reach),
// without the TCP fields.
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

// counters are the atomically updated DirStats of one direction.
type counters struct {
	in, inBytes, out, outBytes       atomic.Uint64
	loss, queue, blackhole, overflow atomic.Uint64
	droppedBytes, corrupted          atomic.Uint64
	reordered, writeErrs             atomic.Uint64
	heldPeak, waitPeak, latePeak     atomic.Int64
}

// raise makes v at least n; only one goroutine raises a given v.
func raise(v *atomic.Int64, n int64) {
	if n > v.Load() {
		v.Store(n)
	}
}

func (c *counters) drop(r reason, n int) {
	switch r {
	case dropLoss:
		c.loss.Add(1)
	case dropQueue:
		c.queue.Add(1)
	case dropBlackhole:
		c.blackhole.Add(1)
	}
	c.droppedBytes.Add(uint64(n))
}

// dir forwards one direction: a reader goroutine reads packets from src
// and asks the model what to do; a scheduler goroutine writes them to dst
// when they are due.
type dir struct {
	clk  clock
	src  *os.File
	dst  *os.File
	done <-chan struct{}
	c    counters
	wake chan struct{}
	bufs sync.Pool // *[]byte of bufSize capacity
	size int       // capacity of every buffer

	mu    sync.Mutex
	m     *model
	line  pktHeap // every packet on its way, by release time
	bytes int64   // buffer capacity held in line
	seq   uint64
	sleep int64 // schedBusy, schedIdle, or when the scheduler wakes
}

func newDir(clk clock, src, dst *os.File, m *model, mtu int, done <-chan struct{}) *dir {
	return &dir{
		clk: clk, src: src, dst: dst, done: done, m: m,
		wake:  make(chan struct{}, 1),
		size:  mtu + 64, // a TUN read returns at most one MTU-sized packet
		sleep: schedIdle,
	}
}

func (d *dir) get() *[]byte {
	b, _ := d.bufs.Get().(*[]byte)
	if b == nil {
		s := make([]byte, d.size)
		b = &s
	}
	*b = (*b)[:cap(*b)]
	return b
}

func (d *dir) isDone() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// read is the reader goroutine.
func (d *dir) read() {
	backoff := time.Duration(0)
	for {
		b := d.get()
		n, err := d.src.Read(*b)
		if err != nil {
			d.bufs.Put(b)
			if errors.Is(err, os.ErrClosed) || d.isDone() {
				return
			}
			// A device that went away (its namespace deleted under us)
			// fails every read: back off rather than spin.
			backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
			select {
			case <-time.After(backoff):
			case <-d.done:
				return
			}
			continue
		}
		backoff = 0
		*b = (*b)[:n]
		d.handle(b, d.clk.now())
	}
}

// handle impairs the packet b that arrived at now: it drops it or puts it
// on the delay line.
func (d *dir) handle(b *[]byte, now int64) {
	n := len(*b)
	d.c.in.Add(1)
	d.c.inBytes.Add(uint64(n))
	d.mu.Lock()
	if len(d.line) >= maxHeldPackets || d.bytes+int64(cap(*b)) > maxHeldBytes {
		d.mu.Unlock()
		d.c.overflow.Add(1)
		d.c.droppedBytes.Add(uint64(n))
		d.bufs.Put(b)
		return
	}
	v := d.m.decide(now, *b)
	if v.reason != pass {
		d.mu.Unlock()
		d.c.drop(v.reason, n)
		d.bufs.Put(b)
		return
	}
	if v.flipBit >= 0 {
		flip(*b, v.flipBit)
	}
	if v.reordered {
		d.c.reordered.Add(1)
	}
	d.seq++
	d.line.push(packet{buf: b, rel: v.release, seq: d.seq, corrupted: v.flipBit >= 0})
	d.bytes += int64(cap(*b))
	held := int64(len(d.line))
	wake := v.release < d.sleep
	if wake {
		d.sleep = v.release
	}
	d.mu.Unlock()
	raise(&d.c.heldPeak, held) // only the reader raises these two
	raise(&d.c.waitPeak, v.release-now)
	if wake {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// run is the scheduler goroutine: it sleeps until the earliest packet is
// due, then writes every due packet.
func (d *dir) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]packet, 0, 128)
	for {
		if d.isDone() {
			return
		}
		now := d.clk.now()
		d.mu.Lock()
		for len(batch) < cap(batch) && len(d.line) > 0 && d.line[0].rel <= now {
			pk := d.line.pop()
			d.bytes -= int64(cap(*pk.buf))
			if d.m.blackholed(now) {
				pk.drop = true
			}
			batch = append(batch, pk)
		}
		switch {
		case len(batch) > 0:
			d.sleep = schedBusy
		case len(d.line) > 0:
			d.sleep = d.line[0].rel
		default:
			d.sleep = schedIdle
		}
		sleep := d.sleep
		d.mu.Unlock()

		if len(batch) > 0 {
			// The first packet of a batch is the latest: it was due
			// first. (The writes of one batch wait for no timer.)
			raise(&d.c.latePeak, now-batch[0].rel)
			for i := range batch {
				pk := &batch[i]
				if pk.drop {
					d.c.drop(dropBlackhole, len(*pk.buf))
				} else {
					d.write(pk)
				}
				d.bufs.Put(pk.buf)
				*pk = packet{}
			}
			batch = batch[:0]
			continue
		}
		if sleep == schedIdle {
			select {
			case <-d.wake:
			case <-d.done:
				return
			}
			continue
		}
		timer.Reset(time.Duration(sleep - now))
		select {
		case <-timer.C:
		case <-d.wake:
			timer.Stop()
		case <-d.done:
			timer.Stop()
			return
		}
	}
}

// write writes one packet to the receiving device. It is counted before
// the write, since the receiver (or its reply) may reach a caller of Stats
// before the write returns; a failed write takes the count back.
func (d *dir) write(pk *packet) {
	n := uint64(len(*pk.buf))
	d.c.out.Add(1)
	d.c.outBytes.Add(n)
	if pk.corrupted {
		d.c.corrupted.Add(1)
	}
	if _, err := d.dst.Write(*pk.buf); err != nil {
		d.c.out.Add(^uint64(0))
		d.c.outBytes.Add(-n)
		if pk.corrupted {
			d.c.corrupted.Add(^uint64(0))
		}
		d.c.writeErrs.Add(1)
	}
}

// set changes the impairment at now.
func (d *dir) set(dd Direction, now int64, reseed bool, seed, stream uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m.set(dd, now)
	if reseed {
		d.m.reseed(seed, stream)
	}
	// A schedule that now drops on departure must be seen by the
	// scheduler at once; a wake-up does no harm otherwise.
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// stats returns the counts so far.
func (d *dir) stats() DirStats {
	d.mu.Lock()
	pp, pb := d.m.peakPkts, d.m.peakB
	d.mu.Unlock()
	c := &d.c
	return DirStats{
		PacketsIn:        c.in.Load(),
		BytesIn:          c.inBytes.Load(),
		PacketsOut:       c.out.Load(),
		BytesOut:         c.outBytes.Load(),
		DroppedLoss:      c.loss.Load(),
		DroppedQueue:     c.queue.Load(),
		DroppedBlackhole: c.blackhole.Load(),
		DroppedOverflow:  c.overflow.Load(),
		DroppedBytes:     c.droppedBytes.Load(),
		Corrupted:        c.corrupted.Load(),
		Reordered:        c.reordered.Load(),
		WriteErrors:      c.writeErrs.Load(),
		QueuePeakPackets: pp,
		QueuePeakBytes:   pb,
		HeldPeak:         c.heldPeak.Load(),
		WaitPeak:         time.Duration(c.waitPeak.Load()),
		LatePeak:         time.Duration(c.latePeak.Load()),
	}
}
