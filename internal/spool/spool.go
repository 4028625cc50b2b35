// Package spool is a bounded first-in first-out queue of bytes on disk:
// bpcat relay's spool, which absorbs a stall of the hop it writes to.
//
// A Queue lives in one directory of its own. Its bytes are numbered by
// offset from the queue's creation, and kept in segment files named by
// the offset of their first byte ("00000000000000000000.seg"), each at
// most SegmentSize long; a new segment is started when the last one is
// full, and a segment is deleted once every byte in it is acknowledged.
// Three offsets describe the queue:
//
//	head <= read <= tail
//
// tail is where Append writes; read is where Read reads; head is the first
// byte not yet acknowledged (Ack): bytes between head and read have been
// read but may still be needed again, bytes before head are gone. Len is
// tail - head, and Append refuses bytes beyond Max of it (ErrFull).
//
// Crash safety. The tail is not recorded anywhere: it is the end of the
// last segment, so whatever Append wrote survives the process (it is in
// the kernel's page cache once Append returns). The head is recorded in
// the file "head" (magic, offset, CRC-32), replaced atomically (written
// to "head.tmp", synced, renamed) by Checkpoint, by Close, and by Ack
// before it deletes a segment, so that the recorded head never points
// into a deleted segment. The read offset is not recorded: Open starts
// reading at the recorded head, so a restart delivers again what was read
// but not acknowledged (at least once, never lost).
//
// Sync policy. Append does not fsync: a segment is synced when it is
// full and a new one is started, and the last one by Sync and Close. A
// process that crashes loses nothing Append accepted; an operating system
// crash or power loss may lose what was appended since the last sync of
// the segment being written (its tail), and Open then finds a shorter
// last segment, which it accepts as the tail. The directory itself is
// not synced after a rename or delete.
//
// Damage is reported, not repaired: Open fails with an error that wraps
// ErrCorrupt and names the file when the head file is not one this
// package wrote, when segments are not contiguous (one is missing or
// truncated in the middle), or when the head lies beyond the data.
//
// A Queue is not safe for concurrent use; its user serializes calls. It
// starts no goroutines and holds two open files at most.
package spool

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Errors that callers test with errors.Is.
var (
	// ErrFull is returned by Append for the bytes that would take Len
	// beyond Max.
	ErrFull = errors.New("spool: full")
	// ErrEmpty is returned by Read when every byte appended has been read.
	ErrEmpty = errors.New("spool: empty")
	// ErrCorrupt is wrapped by Open's errors for damaged files.
	ErrCorrupt = errors.New("spool: corrupt")
	// ErrClosed is returned by a closed Queue.
	ErrClosed = errors.New("spool: closed")
)

// Options configure a Queue.
type Options struct {
	// Max is the most bytes the queue holds (Len). 0 is no bound.
	Max int64
	// SegmentSize is the size at which a segment file is full. 0 is
	// DefaultSegmentSize. A queue reopened with another segment size
	// keeps its existing segments as they are.
	SegmentSize int64
}

// DefaultSegmentSize is the segment size when Options.SegmentSize is 0.
const DefaultSegmentSize = 4 << 20

const (
	segSuffix = ".seg"
	headName  = "head"
	headTmp   = "head.tmp"
	headMagic = "BPSQ"
	headLen   = 4 + 8 + 4 // magic, offset, CRC-32 of both
)

// segment is one segment file.
type segment struct {
	base, size int64
}

func (s segment) end() int64 { return s.base + s.size }

// Queue is a spool directory open for use.
type Queue struct {
	dir     string
	max     int64
	segSize int64

	segs             []segment // ascending, contiguous; the last is the one appended to
	head, read, tail int64
	saved            int64 // the head last recorded in the head file

	w      *os.File // the last segment, open for appending (nil: none yet)
	r      *os.File // the segment being read (nil: none open)
	rBase  int64    // base of the segment r
	closed bool
}

// Open opens the queue in dir, creating dir (and an empty queue) if
// missing, or recovering the queue an earlier Open left there.
func Open(dir string, opt Options) (*Queue, error) {
	if opt.Max < 0 || opt.SegmentSize < 0 {
		return nil, fmt.Errorf("spool: negative size in options")
	}
	if opt.SegmentSize == 0 {
		opt.SegmentSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	q := &Queue{dir: dir, max: opt.Max, segSize: opt.SegmentSize}
	if err := q.recover(); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *Queue) corrupt(name, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, filepath.Join(q.dir, name), fmt.Sprintf(format, a...))
}

// segName is the file name of the segment starting at base.
func segName(base int64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// recover reads the directory's state.
func (q *Queue) recover() error {
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return err
	}
	haveHead := false
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == headName:
			haveHead = true
		case name == headTmp: // a Checkpoint cut short: the old head stands
			if err := os.Remove(filepath.Join(q.dir, name)); err != nil {
				return err
			}
		case strings.HasSuffix(name, segSuffix):
			base, err := strconv.ParseInt(strings.TrimSuffix(name, segSuffix), 10, 64)
			if err != nil || base < 0 || segName(base) != name || !e.Type().IsRegular() {
				return q.corrupt(name, "not a segment file of this package")
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			q.segs = append(q.segs, segment{base: base, size: info.Size()})
		default:
			return q.corrupt(name, "unexpected file in a spool directory")
		}
	}
	slices.SortFunc(q.segs, func(a, b segment) int { return cmp.Compare(a.base, b.base) })
	for i := 1; i < len(q.segs); i++ {
		if prev := q.segs[i-1]; q.segs[i].base != prev.end() {
			return q.corrupt(segName(prev.base), "%d bytes, but the next segment starts at offset %d, not %d: a segment is missing or truncated",
				prev.size, q.segs[i].base, prev.end())
		}
	}
	if haveHead {
		if q.head, err = q.readHead(); err != nil {
			return err
		}
	}
	switch {
	case len(q.segs) == 0:
		q.tail = q.head
	default:
		first, last := q.segs[0], q.segs[len(q.segs)-1]
		q.tail = last.end()
		if q.head > q.tail {
			return q.corrupt(headName, "head at offset %d is beyond the data's end at %d: a segment is missing or truncated", q.head, q.tail)
		}
		// A head before the first segment: Ack recorded it, deleted the
		// segments before the next one, and stopped before recording
		// again. The deleted bytes had all been acknowledged.
		q.head = max(q.head, first.base)
	}
	q.read, q.saved = q.head, q.head
	if haveHead {
		q.saved = -1 // recorded value unknown after the adjustment: record again at the first Checkpoint
	}
	// Segments wholly before the head were acknowledged: delete them.
	return q.dropAcked()
}

func (q *Queue) readHead() (int64, error) {
	b, err := os.ReadFile(filepath.Join(q.dir, headName))
	if err != nil {
		return 0, err
	}
	if len(b) != headLen {
		return 0, q.corrupt(headName, "%d bytes, want %d (truncated or not a head file)", len(b), headLen)
	}
	if string(b[:4]) != headMagic {
		return 0, q.corrupt(headName, "bad magic %q", b[:4])
	}
	if crc32.ChecksumIEEE(b[:12]) != binary.BigEndian.Uint32(b[12:]) {
		return 0, q.corrupt(headName, "checksum mismatch")
	}
	off := binary.BigEndian.Uint64(b[4:12])
	if off > 1<<62 {
		return 0, q.corrupt(headName, "offset %d out of range", off)
	}
	return int64(off), nil
}

// Len is the bytes held: appended and not acknowledged.
func (q *Queue) Len() int64 { return q.tail - q.head }

// Unread is the bytes appended and not yet read.
func (q *Queue) Unread() int64 { return q.tail - q.read }

// Offsets returns head, read and tail.
func (q *Queue) Offsets() (head, read, tail int64) { return q.head, q.read, q.tail }

// Dir is the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// Append writes p at the tail. When Max would be exceeded, it writes what
// fits and returns ErrFull with the count written.
func (q *Queue) Append(p []byte) (int, error) {
	if q.closed {
		return 0, ErrClosed
	}
	var full error
	if q.max > 0 && int64(len(p)) > q.max-q.Len() {
		p, full = p[:max(q.max-q.Len(), 0)], ErrFull
	}
	n := 0
	for len(p) > 0 {
		if err := q.writable(); err != nil {
			return n, err
		}
		last := &q.segs[len(q.segs)-1]
		chunk := p[:min(int64(len(p)), q.segSize-last.size)]
		m, err := q.w.Write(chunk)
		last.size += int64(m)
		q.tail += int64(m)
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, full
}

// writable makes sure q.w is open on a last segment with room.
func (q *Queue) writable() error {
	if len(q.segs) > 0 && q.segs[len(q.segs)-1].size < q.segSize {
		if q.w != nil {
			return nil
		}
		last := q.segs[len(q.segs)-1]
		f, err := os.OpenFile(filepath.Join(q.dir, segName(last.base)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		q.w = f
		return nil
	}
	if q.w != nil { // the last segment is full: seal it
		err := q.w.Sync()
		if cerr := q.w.Close(); err == nil {
			err = cerr
		}
		q.w = nil
		if err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(q.dir, segName(q.tail)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	q.w = f
	q.segs = append(q.segs, segment{base: q.tail})
	return nil
}

// Read reads bytes at the read offset into p. It returns ErrEmpty when
// there are none.
func (q *Queue) Read(p []byte) (int, error) {
	if q.closed {
		return 0, ErrClosed
	}
	if q.read == q.tail {
		return 0, ErrEmpty
	}
	if len(p) == 0 {
		return 0, nil
	}
	i, _ := slices.BinarySearchFunc(q.segs, q.read, func(s segment, off int64) int {
		switch {
		case s.end() <= off:
			return -1
		case s.base > off:
			return 1
		}
		return 0
	})
	seg := q.segs[i]
	if q.r == nil || q.rBase != seg.base {
		if q.r != nil {
			q.r.Close()
			q.r = nil
		}
		f, err := os.Open(filepath.Join(q.dir, segName(seg.base)))
		if err != nil {
			return 0, err
		}
		q.r, q.rBase = f, seg.base
	}
	want := min(int64(len(p)), seg.end()-q.read)
	n, err := q.r.ReadAt(p[:want], q.read-seg.base)
	q.read += int64(n)
	if err == io.EOF && int64(n) == want {
		err = nil
	}
	if err == io.EOF { // shorter than this process wrote: someone truncated it
		err = q.corrupt(segName(seg.base), "shorter than the %d bytes written to it", seg.size)
	}
	return n, err
}

// Rewind moves the read offset back to the head: what was read and not
// acknowledged is read again (as after a restart).
func (q *Queue) Rewind() { q.read = q.head }

// Ack acknowledges n more bytes after the head, which must have been read:
// they will not be read again, even after a restart, once recorded (by
// Checkpoint, Close, or this Ack when it deletes a segment).
func (q *Queue) Ack(n int64) error {
	if q.closed {
		return ErrClosed
	}
	if n < 0 || n > q.read-q.head {
		return fmt.Errorf("spool: ack of %d bytes, but %d are read and unacknowledged", n, q.read-q.head)
	}
	q.head += n
	return q.dropAcked()
}

// dropAcked deletes the segments wholly before the head, recording the
// head first. The last segment is kept while it is being appended to.
func (q *Queue) dropAcked() error {
	k := 0
	for k < len(q.segs) && q.segs[k].end() <= q.head && (k < len(q.segs)-1 || q.segs[k].size >= q.segSize) {
		k++
	}
	if k == 0 {
		return nil
	}
	if err := q.Checkpoint(); err != nil {
		return err
	}
	for _, s := range q.segs[:k] {
		if s.base == q.rBase && q.r != nil {
			q.r.Close()
			q.r = nil
		}
		if k == len(q.segs) && q.w != nil {
			q.w.Close()
			q.w = nil
		}
		if err := os.Remove(filepath.Join(q.dir, segName(s.base))); err != nil {
			return err
		}
	}
	q.segs = slices.Delete(q.segs, 0, k)
	return nil
}

// Checkpoint records the head, if it moved since it was last recorded.
func (q *Queue) Checkpoint() error {
	if q.head == q.saved {
		return nil
	}
	var b [headLen]byte
	copy(b[:], headMagic)
	binary.BigEndian.PutUint64(b[4:], uint64(q.head))
	binary.BigEndian.PutUint32(b[12:], crc32.ChecksumIEEE(b[:12]))
	tmp := filepath.Join(q.dir, headTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(q.dir, headName))
	}
	if err != nil {
		return err
	}
	q.saved = q.head
	return nil
}

// Sync syncs the segment being appended to.
func (q *Queue) Sync() error {
	if q.w == nil {
		return nil
	}
	return q.w.Sync()
}

// Close syncs and records the queue and closes its files. What is left
// unacknowledged is read again by the next Open.
func (q *Queue) Close() error {
	if q.closed {
		return nil
	}
	err := q.Sync()
	if cerr := q.Checkpoint(); err == nil {
		err = cerr
	}
	q.closeFiles()
	q.closed = true
	return err
}

func (q *Queue) closeFiles() {
	if q.w != nil {
		q.w.Close()
		q.w = nil
	}
	if q.r != nil {
		q.r.Close()
		q.r = nil
	}
}

// Remove closes the queue and deletes its files and its directory (which
// must hold nothing else).
func (q *Queue) Remove() error {
	q.closeFiles()
	q.closed = true
	for _, s := range q.segs {
		if err := os.Remove(filepath.Join(q.dir, segName(s.base))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	q.segs = nil
	for _, name := range []string{headName, headTmp} {
		if err := os.Remove(filepath.Join(q.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Remove(q.dir)
}
