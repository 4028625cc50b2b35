package transport

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp/transport/tcpframe"
)

// newTestQueue returns an empty queue with a pool of its own, which
// counts the chunks out.
func newTestQueue() (*chunkQueue, *chunkPool) {
	p := new(chunkPool)
	return &chunkQueue{pool: p}, p
}

// pattern returns n bytes that differ from their neighbours, starting
// from the count off, so that misplaced bytes show.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) * 7 / 3)
	}
	return b
}

// checkBound checks the queue's invariant: it holds no chunk when empty
// and outside a reservation, fewer than n/chunkData + 2 otherwise, and
// all its chunks are out of the pool.
func checkBound(t *testing.T, q *chunkQueue, p *chunkPool) {
	t.Helper()
	if q.Len() == 0 && !q.reserved && q.Chunks() != 0 {
		t.Fatalf("empty queue holds %d chunks", q.Chunks())
	}
	if max := q.Len()/chunkData + 2; q.chunks > max {
		t.Fatalf("queue of %d bytes holds %d chunks, above %d", q.Len(), q.chunks, max)
	}
	if got := p.out; got != q.Chunks() {
		t.Fatalf("%d chunks out of the pool, the queue holds %d", got, q.Chunks())
	}
}

func TestChunkSize(t *testing.T) {
	if s := unsafe.Sizeof(chunk{}) + mallocHeader; s != 16<<10 {
		t.Fatalf("a chunk with its allocation header is %d bytes, not 16 KiB", s)
	}
	// What the allocator takes for one, measured: the header is the
	// runtime's, not a promise, so this is what holds it to its word.
	// Other goroutines' allocations may add a few bytes per chunk, far
	// less than the 2 KiB to the next size class (18 KiB).
	const n = 256
	keep := make([]*chunk, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		keep[i] = new(chunk)
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per < 16<<10 || per >= 17<<10 {
		t.Fatalf("the allocator takes %d bytes for a chunk, not 16 KiB", per)
	}
	if chunkData >= tcpframe.MaxData || 2*chunkData < tcpframe.MaxData {
		t.Fatalf("chunkData %d: a payload of %d bytes would not span at most 3 chunks", chunkData, tcpframe.MaxData)
	}
}

// sizes are lengths around the chunk boundaries.
var sizes = []int{0, 1, 2, 7, 8, 9, 100, chunkData - 9, chunkData - 8, chunkData - 1, chunkData, chunkData + 1,
	tcpframe.MaxData - 1, tcpframe.MaxData, tcpframe.MaxData + 1, 2*chunkData - 1, 2 * chunkData, 2*chunkData + 1, 3*chunkData + 5}

// steps are the lengths of writes and reads: odd ones, which meet the
// chunk boundaries at every offset in turn, and those around them.
var steps = []int{1, 7, chunkData - 1, chunkData, chunkData + 1, tcpframe.MaxData, 2*chunkData + 1}

// TestChunkQueueWriteRead writes n bytes in pieces of w and reads them
// in pieces of r, for every n of sizes and w and r of steps, checking
// the bytes, the bound at every step and that every chunk goes back.
func TestChunkQueueWriteRead(t *testing.T) {
	for _, n := range sizes {
		for _, w := range steps {
			for _, r := range steps {
				if min(w, r) == 1 && n > chunkData+1 {
					continue // a byte at a time: the first chunk boundary is enough
				}
				t.Run(fmt.Sprintf("n%d/w%d/r%d", n, w, r), func(t *testing.T) {
					q, p := newTestQueue()
					want := pattern(0, n)
					var got []byte
					buf := make([]byte, r)
					for off := 0; off < n; off += w {
						q.Write(want[off:min(off+w, n)])
						checkBound(t, q, p)
						// Read one piece after each write, to interleave.
						k := q.Read(buf)
						got = append(got, buf[:k]...)
						checkBound(t, q, p)
					}
					for q.Len() > 0 {
						k := q.Read(buf)
						if k == 0 {
							t.Fatal("Read returned 0 with bytes held")
						}
						got = append(got, buf[:k]...)
						checkBound(t, q, p)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("read %d bytes, not the %d written", len(got), n)
					}
					if q.Chunks() != 0 || p.out != 0 {
						t.Fatalf("drained queue holds %d chunks, %d out", q.Chunks(), p.out)
					}
				})
			}
		}
	}
}

// TestChunkQueueAppendTo takes the queue's bytes as the writer does, in
// frames of at most k.
func TestChunkQueueAppendTo(t *testing.T) {
	for _, n := range sizes {
		for _, k := range []int{1, 9, chunkData - 1, chunkData, chunkData + 1, tcpframe.MaxData} {
			t.Run(fmt.Sprintf("n%d/k%d", n, k), func(t *testing.T) {
				q, p := newTestQueue()
				want := pattern(3, n)
				q.Write(want)
				checkBound(t, q, p)
				var got []byte
				for q.Len() > 0 {
					before := len(got)
					got = q.AppendTo(got, k)
					if d := len(got) - before; d != min(k, n-before) {
						t.Fatalf("AppendTo took %d bytes, want %d", d, min(k, n-before))
					}
					checkBound(t, q, p)
				}
				if !bytes.Equal(got, want) || q.Chunks() != 0 || p.out != 0 {
					t.Fatalf("got %d bytes of %d; %d chunks held", len(got), n, q.Chunks())
				}
				if b := q.AppendTo([]byte("x"), k); string(b) != "x" {
					t.Fatalf("AppendTo of an empty queue gave %q", b)
				}
			})
		}
	}
}

// TestChunkQueueReserve fills reserved space as the connection's reader
// does, for every held amount and payload length, with a commit of all
// or part of it, and with reads of everything, or of nothing, while the
// space is lent.
func TestChunkQueueReserve(t *testing.T) {
	payloads := []int{0, 1, 8, 9, chunkData - 1, chunkData, chunkData + 1, tcpframe.MaxData}
	for _, held := range sizes {
		for _, n := range payloads {
			for _, commit := range []string{"all", "part", "none"} {
				for _, drain := range []bool{false, true} {
					t.Run(fmt.Sprintf("held%d/n%d/%s/drain%v", held, n, commit, drain), func(t *testing.T) {
						q, p := newTestQueue()
						want := pattern(0, held)
						q.Write(want)
						var got []byte
						pieces := q.Reserve(n, make([][]byte, 0, 3))
						if len(pieces) > 3 {
							t.Fatalf("%d pieces", len(pieces))
						}
						total := 0
						for _, pc := range pieces {
							if len(pc) == 0 {
								t.Fatal("an empty piece")
							}
							total += len(pc)
						}
						if total != n {
							t.Fatalf("reserved %d bytes, want %d", total, n)
						}
						if drain {
							// The consumer reads all while the space is lent.
							buf := make([]byte, held+1)
							got = append(got, buf[:q.Read(buf)]...)
						}
						if q.Len() != held-len(got) {
							t.Fatalf("Len %d during the reservation", q.Len())
						}
						k := map[string]int{"all": n, "part": n / 2, "none": 0}[commit]
						payload := pattern(held, n)
						fill := payload[:k]
						for _, pc := range pieces {
							fill = fill[copy(pc, fill):]
						}
						q.Commit(k)
						want = append(want, payload[:k]...)
						checkBound(t, q, p)
						if q.Len() != held+k-len(got) {
							t.Fatalf("Len %d after Commit(%d), want %d", q.Len(), k, held+k-len(got))
						}
						buf := make([]byte, 1000)
						for q.Len() > 0 {
							got = append(got, buf[:q.Read(buf)]...)
							checkBound(t, q, p)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("read %d bytes, want %d", len(got), len(want))
						}
						if q.Chunks() != 0 || p.out != 0 {
							t.Fatalf("%d chunks held, %d out", q.Chunks(), p.out)
						}
					})
				}
			}
		}
	}
}

// TestChunkQueueReset drops what the queue holds, with and without a
// reservation pending, and checks that every chunk goes back.
func TestChunkQueueReset(t *testing.T) {
	for _, held := range sizes {
		for _, n := range []int{-1, 0, 1, chunkData, tcpframe.MaxData} { // -1: no reservation
			t.Run(fmt.Sprintf("held%d/n%d", held, n), func(t *testing.T) {
				q, p := newTestQueue()
				q.Write(pattern(0, held))
				var pieces [][]byte
				if n >= 0 {
					pieces = q.Reserve(n, nil)
				}
				q.Reset()
				if q.Len() != 0 {
					t.Fatalf("Len %d after Reset", q.Len())
				}
				if q.Read(make([]byte, 10)) != 0 {
					t.Fatal("Read after Reset returned bytes")
				}
				if n >= 0 {
					// At most the lent tail stays, with the fresh chunks.
					if q.chunks > 1 {
						t.Fatalf("%d chunks stay in a reset queue", q.chunks)
					}
					for _, pc := range pieces {
						copy(pc, pattern(0, len(pc))) // the producer may still write
					}
					q.Commit(0)
				}
				if q.Chunks() != 0 || p.out != 0 {
					t.Fatalf("%d chunks held, %d out", q.Chunks(), p.out)
				}
				// The queue works on.
				q.Write([]byte("after"))
				if b := make([]byte, 10); string(b[:q.Read(b)]) != "after" {
					t.Fatal("reset queue does not work on")
				}
				checkBound(t, q, p)
			})
		}
	}
}

// TestChunkQueueResetThenCommit: bytes committed after a Reset during
// the reservation are kept (the lane decides whether to commit them).
func TestChunkQueueResetThenCommit(t *testing.T) {
	q, p := newTestQueue()
	q.Write(pattern(0, 100))
	pieces := q.Reserve(tcpframe.MaxData, nil)
	q.Reset()
	payload := pattern(7, tcpframe.MaxData)
	fill := payload
	for _, pc := range pieces {
		fill = fill[copy(pc, fill):]
	}
	q.Commit(len(payload))
	got := make([]byte, 2*tcpframe.MaxData)
	got = got[:q.Read(got)]
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, not the %d committed", len(got), len(payload))
	}
	checkBound(t, q, p)
}

// TestChunkPool: a connection keeps at most tcpKeepChunks spare chunks,
// hands out the one returned last first, and gives them all up when
// trimmed twice without use, or at once when told to.
func TestChunkPool(t *testing.T) {
	var p chunkPool
	var taken []*chunk
	for range tcpKeepChunks + 5 {
		taken = append(taken, p.get())
	}
	if p.out != tcpKeepChunks+5 {
		t.Fatalf("out %d", p.out)
	}
	for _, c := range taken {
		c.next = c // as in a queue
		p.put(c)
	}
	if p.out != 0 || p.nfree != tcpKeepChunks {
		t.Fatalf("out %d, %d spare; want 0, %d", p.out, p.nfree, tcpKeepChunks)
	}
	last := taken[tcpKeepChunks-1]
	if c := p.get(); c != last || c.next != nil {
		t.Fatal("get does not give the chunk returned last, unlinked")
	}
	p.put(last)
	p.trim(false) // used since the last trim: keeps them
	if p.nfree != tcpKeepChunks {
		t.Fatalf("%d spare after one trim", p.nfree)
	}
	p.trim(false)
	if p.nfree != 0 || p.free != nil {
		t.Fatalf("%d spare after an idle trim", p.nfree)
	}
	p.put(p.get())
	p.trim(true)
	if p.nfree != 0 || p.free != nil {
		t.Fatalf("%d spare after trim(true)", p.nfree)
	}
}

// TestChunkQueueMisuse: a second producer call during a reservation is a
// bug, and panics.
func TestChunkQueueMisuse(t *testing.T) {
	for name, f := range map[string]func(q *chunkQueue){
		"Write":   func(q *chunkQueue) { q.Reserve(1, nil); q.Write([]byte("x")) },
		"Reserve": func(q *chunkQueue) { q.Reserve(1, nil); q.Reserve(1, nil) },
		"Commit":  func(q *chunkQueue) { q.Commit(0) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f(new(chunkQueue))
		})
	}
}

// TestChunkQueueBounded writes a queue up to a lane's limit and reads it
// back: what it holds in chunks stays within two chunks of its bytes.
func TestChunkQueueBounded(t *testing.T) {
	q, p := newTestQueue()
	const limit = 4<<20 + 123
	for q.Len() < limit {
		q.Write(pattern(q.Len(), min(1000, limit-q.Len())))
	}
	checkBound(t, q, p)
	if mem := q.Chunks() * chunkData; mem > q.Len()+2*chunkData {
		t.Fatalf("%d bytes in chunks for %d held", mem, q.Len())
	}
	buf := make([]byte, 777)
	for q.Len() > 0 {
		q.Read(buf)
		if q.Len()%(64*777) == 0 {
			checkBound(t, q, p)
		}
	}
	checkBound(t, q, p)
}

// TestTCPLaneQueues runs lanes through a connection with writes of every
// size around the chunk and frame boundaries, so that payloads take both
// of the reader's paths (copied from its buffer, or read straight into the
// lane's queue), with readers that read in odd sizes, stop (CancelRead)
// or are reset by the writer in the middle: every byte read is the byte
// written, and once done, no lane holds a chunk or a byte.
func TestTCPLaneQueues(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	const total = 3 << 20
	type mode int
	const (
		whole mode = iota
		stop
		reset
	)
	modes := []mode{whole, whole, stop, reset, whole, stop}
	var wg sync.WaitGroup
	for i, m := range modes {
		lc, ls := openAccept(t, tcpCtx(t), c, s, "x")
		want := pattern(i, total)
		wg.Add(2)
		go func() { // the writer
			defer wg.Done()
			ws := []int{1, 100, chunkData - 1, tcpframe.MaxData, tcpframe.MaxData + 3, 3 * chunkData, 64 << 10}
			off := 0
			for j := 0; off < total; j++ {
				n := min(ws[(i+j)%len(ws)], total-off)
				if m == reset && off > total/3 {
					lc.CancelWrite(7)
					return
				}
				if _, err := lc.Write(want[off : off+n]); err != nil {
					if m == stop {
						return // the reader stopped
					}
					t.Errorf("lane %d: write: %v", i, err)
					return
				}
				off += n
			}
			if err := lc.CloseWrite(); err != nil {
				t.Errorf("lane %d: CloseWrite: %v", i, err)
			}
		}()
		go func() { // the reader
			defer wg.Done()
			rs := []int{1, 7, 1000, chunkData, tcpframe.MaxData + 1, 100 << 10}
			buf := make([]byte, 100<<10)
			got := 0
			for j := 0; ; j++ {
				if m == stop && got > total/2 {
					ls.CancelRead(5)
					return
				}
				if j%50 == 0 {
					time.Sleep(time.Millisecond) // let the queue fill
				}
				n, err := ls.Read(buf[:rs[(i+j)%len(rs)]])
				if !bytes.Equal(buf[:n], want[got:got+n]) {
					t.Errorf("lane %d: wrong bytes at %d", i, got)
					return
				}
				got += n
				switch {
				case err == io.EOF && got == total:
					return
				case err != nil && m == reset:
					return
				case err != nil:
					t.Errorf("lane %d: read at %d: %v", i, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sc := s.(*tcpConn)
	require.Eventually(t, func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		held := 0
		for _, l := range sc.lanes {
			held += l.in.Chunks() + l.out.Chunks()
		}
		return held == 0 && sc.buffered == 0
	}, tcpTestTimeout, time.Millisecond)
}

// FuzzChunkQueue runs a queue through a sequence of operations the input
// spells, against a byte slice that models it: every byte read must be
// the model's, and the bound must hold after every step.
func FuzzChunkQueue(f *testing.F) {
	f.Add([]byte{0, 10, 1, 3, 2, 200, 3, 4, 5, 6})
	f.Add([]byte{2, 255, 0, 255, 4, 1, 1, 255, 5, 2, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		q, p := newTestQueue()
		var model []byte
		reserved := false
		var fill []byte // what the pending reservation's space holds
		next := 0       // the next byte value written
		lengthOf := func(b byte) int { return int(b) * 97 % (2*chunkData + 3) }
		for i := 0; i+1 < len(ops); i += 2 {
			n := lengthOf(ops[i+1])
			switch ops[i] % 6 {
			case 0: // Write
				if reserved {
					continue
				}
				b := pattern(next, n)
				next += n
				q.Write(b)
				model = append(model, b...)
			case 1: // Read
				buf := make([]byte, n)
				k := q.Read(buf)
				if k != min(n, len(model)) || !bytes.Equal(buf[:k], model[:k]) {
					t.Fatalf("Read(%d) = %d bytes, not the model's %d", n, k, min(n, len(model)))
				}
				model = model[k:]
			case 2: // Reserve, and fill the space
				if reserved {
					continue
				}
				n = min(n, tcpframe.MaxData)
				pieces := q.Reserve(n, nil)
				reserved = true
				fill = pattern(next, n)
				next += n
				rest := fill
				for _, pc := range pieces {
					rest = rest[copy(pc, rest):]
				}
			case 3: // Commit part of the reservation
				if !reserved {
					continue
				}
				k := min(n, len(fill))
				q.Commit(k)
				model = append(model, fill[:k]...)
				reserved, fill = false, nil
			case 4: // Reset
				q.Reset()
				model = nil
			case 5: // AppendTo
				b := q.AppendTo(nil, n)
				if !bytes.Equal(b, model[:len(b)]) || len(b) != min(n, len(model)) {
					t.Fatalf("AppendTo(%d) took %d bytes, not the model's", n, len(b))
				}
				model = model[len(b):]
			}
			if q.Len() != len(model) {
				t.Fatalf("Len %d, model %d", q.Len(), len(model))
			}
			checkBound(t, q, p)
		}
		if reserved {
			q.Commit(0)
		}
		q.Reset()
		if q.Chunks() != 0 || p.out != 0 {
			t.Fatalf("%d chunks held, %d out", q.Chunks(), p.out)
		}
	})
}

// BenchmarkChunkQueue moves 16 KiB frames through a queue, as a lane does
// at full speed: nothing should be allocated.
func BenchmarkChunkQueue(b *testing.B) {
	var q chunkQueue
	frame := pattern(0, tcpframe.MaxData)
	buf := make([]byte, 32<<10)
	pieces := make([][]byte, 0, 3)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			q.Write(frame)
		} else {
			pieces = q.Reserve(len(frame), pieces[:0])
			fill := frame
			for _, pc := range pieces {
				fill = fill[copy(pc, fill):]
			}
			q.Commit(len(frame))
		}
		for q.Len() > 0 {
			q.Read(buf)
		}
	}
}
