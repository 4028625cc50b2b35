package mux

import (
	"bufio"
	"errors"
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/transport"
)

// This file is the receiving direction's direct path. A Read that finds
// nothing to read lends its buffer to the lane reader, which reads the
// next plain DATA payload straight from the lane into it, instead of into
// the stream's buffer (ring) for the Read to copy out again: one copy
// fewer of every byte it carries. A bulk reader waits most of the time,
// so most of its bytes can take it once the lane reader lets the woken
// Read lend its buffer again before the next frame (directEnd).
//
// The lane reader may block inside the payload (the peer sent the
// header, the rest is still on its way), holding the buffer. The Read
// cannot return while another goroutine writes into its buffer, so a
// Read whose deadline passes, whose stream is closed or whose session
// ends cuts the lane's read short (transport.ReadDeadliner), takes back
// what was read so far, and the rest of the payload goes to the ring.
// Only lanes that can be cut short are lent a buffer.
//
// A buffer is lent (lend), claimed by the lane reader for one frame's
// payload (claimLocked), given back with what was read into it
// (directEnd), and taken back by its Read (reclaimLocked), all under
// s.mu. One Read at a time lends its buffer; others wait as they would
// without the direct path.

// directRead is the buffer a waiting Read lent the lane reader. It is
// made by the first Read that lends one and kept, so that wakeReader can
// reach its channel without the lock. Its fields but offered are guarded
// by s.mu.
type directRead struct {
	wake chan struct{} // wakes the Read that lent buf (wakeReader signals it too)
	// offered is set while buf may be claimed, for the lane reader to
	// look at between the pieces of a payload it reads into the ring
	// without taking the lock.
	offered atomic.Bool

	buf         []byte // the lent buffer while the lane reader may claim it, else nil
	n           int    // what the lane reader read into buf, for its Read to return
	lent        bool   // a Read lent its buffer and has not taken it back yet
	claimed     bool   // the lane reader is reading into buf: its Read waits for directEnd
	interrupted bool   // the Read cut the lane's read short; directEnd clears the deadline

	delivered uint64 // bytes read straight into lent buffers, ever (for tests)
	cuts      uint64 // claimed reads a Read cut short, ever (for tests)
}

// interruptedRead is the lane read deadline that cuts a claimed read
// short: any time in the past.
var interruptedRead = time.Unix(1, 0)

// lendLocked lends p to the lane reader, if the lane can be cut short and
// no other Read has lent its buffer, and returns the channel the Read
// waits on: nil if p was not lent.
func (s *Stream) lendLocked(p []byte) chan struct{} {
	if _, ok := s.lane.(transport.ReadDeadliner); !ok {
		return nil
	}
	dr := s.direct.Load()
	if dr == nil {
		dr = &directRead{wake: make(chan struct{}, 1)}
		s.direct.Store(dr)
	}
	if dr.lent {
		return nil
	}
	dr.lent, dr.buf = true, p
	dr.offered.Store(true)
	return dr.wake
}

// reclaimLocked takes back the buffer the Read lent: the bytes the lane
// reader read into it, or wait if the lane reader is still reading into
// it. A Read that must not wait any longer (stop: its deadline passed,
// its stream was closed for reading, its session ended) first cuts the
// lane's read short; interrupted then says it may wait for the lane
// reader without a deadline, as the read ends at once.
func (s *Stream) reclaimLocked(stop bool) (n int, wait, interrupted bool) {
	dr := s.direct.Load()
	if dr.claimed {
		if stop && !dr.interrupted {
			dr.interrupted = true
			// The lane's own lock, never held across a wait.
			_ = s.lane.(transport.ReadDeadliner).SetReadDeadline(interruptedRead)
		}
		return 0, true, dr.interrupted
	}
	n = dr.n
	dr.lent, dr.buf, dr.n = false, nil, 0
	dr.offered.Store(false)
	return n, false, false
}

// claimLocked gives the lane reader the lent buffer for the plain DATA
// payload dataBegin began, if a Read lent one and the stream's buffer is
// empty (so that no byte overtakes another): true if it did.
func (s *Stream) claimLocked() bool {
	dr := s.direct.Load()
	if dr == nil || dr.buf == nil || dr.claimed || s.buf.len() > 0 {
		return false
	}
	dr.claimed = true
	dr.offered.Store(false)
	return true
}

// offered says, without the lock, whether a Read may have lent its
// buffer since the lane reader began the payload it reads into the ring.
func (s *Stream) offered() bool {
	dr := s.direct.Load()
	return dr != nil && dr.offered.Load()
}

// switchLocked moves the lane reader from the stream's buffer to the lent
// buffer in the middle of a payload, of which it has read got bytes: if
// a Read lent a buffer that holds them and the stream's buffer has
// nothing else to read, it copies them there and claims it (true); the
// rest of the payload goes straight there.
func (s *Stream) switchLocked(d *dataFill, got int) bool {
	if s.readClosed || got >= len(s.direct.Load().buf) || !s.claimLocked() {
		return false
	}
	dst := s.direct.Load().buf[:got]
	for off := 0; off < got; {
		p1, p2 := s.buf.free(off, got-off)
		off += copy(dst[off:], p1)
		off += copy(dst[off:], p2)
	}
	d.direct, d.got = true, got
	return true
}

// fillRing reads the payload into the stream's buffer, where dataBegin or
// directEnd made room for it, until it is all there (d.direct false) or a
// Read lent its buffer for the rest (d.direct set, see switchLocked).
func (s *Stream) fillRing(br *bufio.Reader, d *dataFill) error {
	for off := 0; off < d.n; {
		p1, p2 := s.fillRegion(off, d.n-off)
		for _, p := range [2][]byte{p1, p2} {
			for len(p) > 0 {
				k, err := br.Read(p)
				if err != nil {
					return err
				}
				p, off = p[k:], off+k
				if off < d.n && s.offered() {
					s.mu.Lock()
					switched := s.switchLocked(d, off)
					s.mu.Unlock()
					if switched {
						return nil
					}
				}
			}
		}
	}
	return nil
}

// fillDirect reads as much of the payload as fits into the claimed buffer
// and gives it to its Read. It returns done if the frame is finished with
// (ok says whether the lane reader goes on, as fillData does); else the
// rest of the payload is for the stream's buffer, which directEnd made
// room for.
func (s *Stream) fillDirect(br *bufio.Reader, d *dataFill) (done, ok bool) {
	dr := s.direct.Load() // its buf is the lane reader's until directEnd
	m, err := readPayload(br, s.lane, dr.buf[d.got:min(len(dr.buf), d.n)])
	err = s.directEnd(d, d.got+m, err)
	if err == nil && d.skip > 0 {
		if _, err = br.Discard(d.skip); err != nil {
			err = midFrame(err)
		}
	}
	if err != nil || d.skip > 0 || d.n == 0 {
		return true, s.endFill(d, err)
	}
	return false, true
}

// readPayload reads len(p) payload bytes into p: those the lane's read
// buffer holds, then straight from the lane, so that an error (the cut
// short read's above all) is never left behind in br.
func readPayload(br *bufio.Reader, lane io.Reader, p []byte) (int, error) {
	n := 0
	if b := br.Buffered(); b > 0 {
		n, _ = br.Read(p[:min(b, len(p))]) // from the buffer alone: no error
	}
	if n == len(p) {
		return n, nil
	}
	m, err := io.ReadFull(lane, p[n:])
	return n + m, err
}

// directEnd ends the lane reader's claim, in which it read m bytes of the
// payload (err says why not all): it gives them to the Read, or drops
// them if nobody will read them, and leaves in d what is left of the
// payload: d.n bytes, to skip (d.skip) if they are to be dropped, else to
// read into the stream's buffer, which it makes room for.
func (s *Stream) directEnd(d *dataFill, m int, err error) error {
	var out eventBuf
	delivered := false
	s.mu.Lock()
	dr := s.direct.Load()
	if dr.interrupted {
		dr.interrupted = false
		dr.cuts++
		_ = s.lane.(transport.ReadDeadliner).SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil // the Read cut it short: the rest goes to the ring
		}
	}
	dr.claimed, dr.buf = false, nil
	d.direct, d.got = false, 0
	if err == nil {
		switch {
		case s.readClosed || s.removed:
			if s.recv != nil {
				s.recv.OnConsumed(uint64(m), s.sess.cfg.Now()) // no update: nobody reads on
				s.pendUpdate = false
			}
			d.skip = d.n - m
		case m > 0:
			dr.n = m
			dr.delivered += uint64(m)
			s.consumedLocked(m, &out)
			delivered = true
		}
		d.n -= m
		if d.skip == 0 && d.n > 0 {
			s.makeRoomLocked(d.n)
		}
	}
	s.mu.Unlock()
	out.emit(s.sess)
	signal(dr.wake)
	if delivered {
		// Let the Read just woken run and lend its buffer again before
		// this goroutine, which is running, reads the next frame:
		// otherwise that frame goes to the ring nearly every time, and
		// a bulk transfer's bytes take the direct path about one time
		// in six instead of five in six (on two cores).
		runtime.Gosched()
	}
	return err
}
