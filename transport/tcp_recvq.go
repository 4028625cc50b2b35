package transport

import (
	"sync"
	"unsafe"
)

// This file is the TCP binding's byte queue: what a lane holds received
// but not yet read, or written but not yet sent. It is pure logic; the
// caller (tcp_lane.go, tcp_conn.go) guards it with the connection's mutex
// and bounds what it holds.
//
// A bytes.Buffer, which the lanes used before, doubles its capacity as it
// grows (so it may hold twice what it holds in data), zeroes every new
// array, copies its contents at each regrowth and keeps its capacity once
// drained. A chunkQueue holds its bytes in a FIFO of fixed-size chunks
// taken from a pool and returned as soon as they are read: it never
// copies what it holds, a chunk taken again from the pool is not zeroed,
// and a queue with nothing in it holds no chunk.

// chunkData is the number of bytes a chunk holds. With its link and the
// 8-byte header the allocator puts before an object of this size that
// holds a pointer, a chunk takes 16 KiB exactly, one of the allocator's
// size classes, so that nothing is lost to rounding (with the link alone
// the next class is 18 KiB, four chunks to a 72 KiB span); a LANE_DATA
// payload (tcpframe.MaxData, 16 KiB) spans at most three chunks.
const chunkData = 16<<10 - int(unsafe.Sizeof(uintptr(0))) - mallocHeader

// mallocHeader is the size of the header the Go allocator (1.22 and
// later) puts before a heap object larger than 512 bytes that holds
// pointers.
const mallocHeader = 8

// chunk is one piece of a chunkQueue.
type chunk struct {
	next *chunk // the next chunk of the queue (or of a reservation)
	b    [chunkData]byte
}

// tcpChunks holds the chunks no connection keeps, for any connection to
// take; the garbage collector frees those that stay unused.
var tcpChunks sync.Pool

func getSharedChunk() *chunk {
	if c, ok := tcpChunks.Get().(*chunk); ok {
		return c
	}
	return new(chunk)
}

// tcpKeepChunks is how many chunks a connection keeps for reuse (64
// KiB): enough for a lane whose application keeps up, whose reader fills
// one to three chunks while the application reads another. A connection
// keeps no more than it had out at once, and none once idle.
const tcpKeepChunks = 4

// chunkPool is a connection's spare chunks: a last-in, first-out list of
// at most tcpKeepChunks, so that the chunk a lane's reader takes next is
// the one read last, likely still in a cache, with the rest in
// tcpChunks. Its zero value is ready. It is not safe for concurrent use:
// the connection's mutex guards it, as it does the queues that use it.
type chunkPool struct {
	free  *chunk // spare chunks, linked by next
	nfree int    // chunks in free
	out   int    // chunks taken and not yet returned
	used  bool   // a chunk was taken or returned since the last trim
}

func (p *chunkPool) get() *chunk {
	p.out++
	p.used = true
	c := p.free
	if c == nil {
		return getSharedChunk()
	}
	p.free, c.next = c.next, nil
	p.nfree--
	return c
}

func (p *chunkPool) put(c *chunk) {
	p.out--
	p.used = true
	if p.nfree == tcpKeepChunks {
		c.next = nil
		tcpChunks.Put(c)
		return
	}
	c.next = p.free
	p.free = c
	p.nfree++
}

// trim gives the spare chunks to tcpChunks if none was taken or returned
// since the last trim, or if all is set, so that an idle or closed
// connection keeps none.
func (p *chunkPool) trim(all bool) {
	if p.used && !all {
		p.used = false
		return
	}
	for c := p.free; c != nil; {
		next := c.next
		c.next = nil
		tcpChunks.Put(c)
		c = next
	}
	p.free, p.nfree = nil, 0
}

// chunkQueue is a FIFO of bytes held in chunks. Every chunk between the
// first and the last is full and unread, so a queue that holds n bytes
// holds fewer than n/chunkData + 2 chunks, and none when n is 0; see
// Reserve for the one exception. The zero value is an empty queue that
// takes its chunks from tcpChunks.
//
// A queue has one producer, which either copies bytes in (Write) or
// fills space it reserved (Reserve, then Commit) without holding the
// caller's lock while the consumer reads (Read, AppendTo) what was
// committed before. Neither producer nor consumer may call a method while
// another runs: the caller's lock orders them.
type chunkQueue struct {
	pool       *chunkPool // where chunks come from and go; nil for tcpChunks
	head, tail *chunk
	r          int    // read offset in head
	w          int    // write offset in tail
	n          int    // bytes held
	chunks     int    // chunks in the queue, not counting reserved ones
	reserved   bool   // Reserve handed out space not yet committed
	spare      *chunk // the chunks Reserve took beyond tail, linked by next
}

// getChunk takes a chunk whose next is nil.
func (q *chunkQueue) getChunk() *chunk {
	if q.pool == nil {
		return getSharedChunk()
	}
	return q.pool.get()
}

func (q *chunkQueue) putChunk(c *chunk) {
	if q.pool == nil {
		c.next = nil
		tcpChunks.Put(c)
		return
	}
	q.pool.put(c)
}

// Len returns the number of bytes held.
func (q *chunkQueue) Len() int { return q.n }

// Chunks returns the number of chunks the queue holds, those a pending
// reservation took included.
func (q *chunkQueue) Chunks() int {
	n := q.chunks
	for c := q.spare; c != nil; c = c.next {
		n++
	}
	return n
}

// link appends c to the queue as its new, empty tail.
func (q *chunkQueue) link(c *chunk) {
	c.next = nil
	if q.tail == nil {
		q.head, q.r = c, 0
	} else {
		q.tail.next = c
	}
	q.tail, q.w = c, 0
	q.chunks++
}

// Write appends p to the queue. It must not be called while a
// reservation is pending.
func (q *chunkQueue) Write(p []byte) {
	if q.reserved {
		panic("transport: chunkQueue.Write during a reservation")
	}
	for len(p) > 0 {
		if q.tail == nil || q.w == chunkData {
			q.link(q.getChunk())
		}
		k := copy(q.tail.b[q.w:], p)
		q.w += k
		q.n += k
		p = p[k:]
	}
}

// front returns the unread bytes of the first chunk.
func (q *chunkQueue) front() []byte {
	if q.head == nil {
		return nil
	}
	if q.head == q.tail {
		return q.head.b[q.r:q.w]
	}
	return q.head.b[q.r:]
}

// consume drops the first k bytes, at most len(q.front()), returning the
// chunks it empties. The tail stays while a reservation is pending, as
// the space after its last byte is lent out.
func (q *chunkQueue) consume(k int) {
	q.r += k
	q.n -= k
	switch {
	case q.head != q.tail && q.r == chunkData:
		c := q.head
		q.head, q.r = c.next, 0
		q.chunks--
		q.putChunk(c)
	case q.head == q.tail && q.r == q.w && !q.reserved:
		q.freeAll()
	}
}

// freeAll returns every chunk of the queue to the pool.
func (q *chunkQueue) freeAll() {
	for c := q.head; c != nil; {
		next := c.next
		q.putChunk(c)
		c = next
	}
	q.head, q.tail = nil, nil
	q.r, q.w, q.n, q.chunks = 0, 0, 0, 0
}

// Read moves up to len(p) bytes from the front of the queue into p and
// returns their number, returning each chunk it empties to the pool.
func (q *chunkQueue) Read(p []byte) int {
	n := 0
	for len(p) > 0 && q.n > 0 {
		k := copy(p, q.front())
		p = p[k:]
		n += k
		q.consume(k)
	}
	return n
}

// AppendTo moves up to k bytes from the front of the queue to the end of
// b, as Read does, and returns the extended slice.
func (q *chunkQueue) AppendTo(b []byte, k int) []byte {
	for k > 0 && q.n > 0 {
		f := q.front()
		f = f[:min(len(f), k)]
		b = append(b, f...)
		k -= len(f)
		q.consume(len(f))
	}
	return b
}

// Reset drops every byte the queue holds and returns its chunks to the
// pool. During a reservation, the tail stays (holding nothing) until
// Commit.
func (q *chunkQueue) Reset() {
	if !q.reserved {
		q.freeAll()
		return
	}
	for q.head != q.tail {
		c := q.head
		q.head = c.next
		q.chunks--
		q.putChunk(c)
	}
	if q.head != nil {
		q.r = q.w
	}
	q.n = 0
}

// Reserve lends out space for the next n bytes of the queue: it appends
// to dst the free end of the tail chunk and as many fresh chunks as n
// needs, in order, and returns dst. The producer may fill the space
// without the caller's lock while the consumer reads and Reset drops the
// bytes committed before; Commit then makes the bytes filled part of the
// queue. Until then, Write and a second Reserve are not allowed, and the
// tail stays even when the consumer has read it empty.
func (q *chunkQueue) Reserve(n int, dst [][]byte) [][]byte {
	if q.reserved {
		panic("transport: chunkQueue.Reserve during a reservation")
	}
	q.reserved = true
	if q.tail != nil && q.w < chunkData && n > 0 {
		k := min(n, chunkData-q.w)
		dst = append(dst, q.tail.b[q.w:q.w+k])
		n -= k
	}
	var last *chunk
	for n > 0 {
		c := q.getChunk()
		if last == nil {
			q.spare = c
		} else {
			last.next = c
		}
		last = c
		k := min(n, chunkData)
		dst = append(dst, c.b[:k])
		n -= k
	}
	return dst
}

// Commit ends the pending reservation: the first k bytes of the space it
// lent out, which the producer filled, join the queue, and the chunks
// they do not reach go back to the pool. Commit(0) abandons the
// reservation, as when the bytes are no longer wanted.
func (q *chunkQueue) Commit(k int) {
	if !q.reserved {
		panic("transport: chunkQueue.Commit without a reservation")
	}
	q.reserved = false
	if q.tail != nil && q.w < chunkData && k > 0 {
		t := min(k, chunkData-q.w)
		q.w += t
		q.n += t
		k -= t
	}
	for k > 0 {
		c := q.spare
		q.spare = c.next
		q.link(c)
		t := min(k, chunkData)
		q.w = t
		q.n += t
		k -= t
	}
	for c := q.spare; c != nil; {
		next := c.next
		q.putChunk(c)
		c = next
	}
	q.spare = nil
	switch {
	case q.n == 0 && q.head != nil:
		q.freeAll() // read empty, or Reset, while the space was lent
	case q.head != q.tail && q.r == chunkData:
		q.consume(0) // the old tail, read to its end while lent
	}
}
