package main

// bpcat relay's spool (--spool DIR --spool-max SIZE).
//
// What it does. Without a spool, the relay reads a client's stream only as
// fast as UPSTREAM_ADDR's credit lets it write, so a stall of the upstream
// stalls the client within a window per hop. With a spool, every byte a
// client sends goes through a queue on disk (internal/spool) on its way to
// the upstream: the relay goes on reading the client while the upstream
// is stalled, up to SIZE bytes held for all streams together, and
// delivers them in order as the upstream resumes. A byte is held from
// when the relay reads it from the client until the upstream's
// application has read it (bp/1's WINDOW_UPDATEs tell the relay so), so
// what is in flight to the upstream counts too. When SIZE is held the
// relay stops reading from the clients, and bp/1's backpressure reaches
// them as it would without a spool; it reads again once there is room for
// the copy buffer it read last.
// Only the direction towards UPSTREAM_ADDR is spooled; what the upstream
// sends back is relayed as without a spool.
//
// Memory stays bounded: per stream one copy buffer for reading the client
// and one for writing the upstream, whatever SIZE is.
//
// Restart contract: at least once, in order, per stream; never silently
// dropped. bp/1 has no way to resume a stream across sessions: a stream
// exists within one session, its bytes carry no sequence a new session
// could continue from, and no frame tells a sender that a relay has
// stored its bytes. So when a relay stops (interrupt, crash, kill -9) or
// loses its upstream session, the streams through it are reset on both
// hops, and neither end can continue them. What the relay does with the
// spooled bytes of such a stream:
//
//   - They stay in DIR, one subdirectory per stream (stream-<time>-<n>),
//     and are delivered, in order, each on a new stream of a new session
//     to UPSTREAM_ADDR: at once in the background when the upstream
//     session was lost while the relay runs, and when a relay is next
//     started on the same DIR after a stop. Delivery is retried with
//     backoff until it succeeds or the relay stops; then the directory is
//     deleted. A log relay's user gets the lines the relay accepted, late,
//     rather than never.
//   - Nothing the relay acknowledged is lost: it is on disk before the
//     relay asks the client for more (it reads at most one copy buffer,
//     64KiB, ahead of the disk, and that buffer is lost if the process
//     dies). Appends are not synced one by one: a process crash loses
//     nothing written, an operating-system crash or power loss may lose
//     the last unsynced part of a segment (see internal/spool).
//   - Bytes may be delivered twice: those the upstream had read but whose
//     acknowledgement (a WINDOW_UPDATE, sent after a quarter to a half of
//     a window is read) had not reached the relay, or reached it after its
//     last checkpoint (recorded every 100ms and at every segment's end),
//     are sent again at the start of the new stream. That is at most about
//     one upstream window and 100ms of data. The upstream sees the replay
//     as a new stream, so it can tell where it starts.
//   - The client cannot resume either: its stream was reset, and it cannot
//     know how much of what it sent the relay kept. A client that sends
//     again, sends again.
//   - A stream aborted on purpose by either end (reset by the client, or
//     reset by the upstream's application) is not replayed: its spool is
//     deleted, as the abort travels on to the other hop, as without a
//     spool.
//
// Files: DIR/.bpcat-relay.lock (held with flock while a relay uses DIR:
// two relays on one DIR are refused), and a directory per stream with the
// queue's segment files and head file. SIZE bounds the bytes held; the
// files can exceed it by the unacknowledged part of one segment per
// stream (segments are SIZE/16, between 64KiB and 4MiB).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/internal/spool"
	"github.com/bpmux/bp/mux"
	"golang.org/x/sys/unix"
)

const (
	// minSpoolSize is the least --spool-max: a few copy buffers, so that
	// a spool absorbs more than the relay's memory already does.
	minSpoolSize = 1 << 20
	// spoolPoll is how often an idle drainer looks for the upstream's
	// acknowledgements.
	spoolPoll = 20 * time.Millisecond
	// spoolCheckpoint is how often a drainer records what was
	// acknowledged.
	spoolCheckpoint = 100 * time.Millisecond
	spoolLockName   = ".bpcat-relay.lock"
	spoolDirPrefix  = "stream-"
)

// spoolFlags are --spool and --spool-max.
type spoolFlags struct {
	dir string
	max uint64
}

func (f *spoolFlags) register(fs *flagSet) {
	fs.StringVar(&f.dir, "spool", "", "hold the data on its way to UPSTREAM_ADDR in `DIR` on disk while the upstream is slow or stalled, instead of stalling the client, up to --spool-max; when that is full, block as without a spool. "+
		"Data left in DIR when the relay stops or loses the upstream is delivered to the upstream again on a new stream (at once, or when a relay next starts on DIR): "+
		"in order and at least once (bp/1 cannot resume a stream, so the first bytes may repeat some the upstream read before the cut)")
	fs.Var(sizeFlag{&f.max}, "spool-max", "the most `SIZE` the spool holds for all streams together, at least 1MiB (needed with --spool)")
}

// open checks the flags and opens the spool: nil if not asked for.
func (f *spoolFlags) open(fs *flagSet, logf func(string, ...any)) (*spooler, error) {
	switch {
	case f.dir == "" && fs.isSet("spool"):
		return nil, usageErrorf("--spool: want a directory")
	case f.dir == "" && fs.isSet("spool-max"):
		return nil, usageErrorf("--spool-max needs --spool DIR")
	case f.dir == "":
		return nil, nil
	case !fs.isSet("spool-max"):
		return nil, usageErrorf("--spool needs --spool-max SIZE: the most disk the spool may fill")
	case f.max < minSpoolSize:
		return nil, usageErrorf("--spool-max %s is too small: want at least %s", formatSize(f.max), formatSize(minSpoolSize))
	case f.max > 1<<62:
		return nil, usageErrorf("--spool-max %s is too large", formatSize(f.max))
	}
	return openSpooler(f.dir, int64(f.max), logf)
}

// spooler is a relay's spool: the directory, the budget shared by its
// streams, and its counters.
type spooler struct {
	dir     string
	max     int64
	segSize int64
	lock    *os.File
	run     string // this run's prefix for stream directories
	seq     atomic.Uint64
	logf    func(string, ...any)

	mu       sync.Mutex
	used     int64         // bytes held (reserved or appended, not yet acknowledged)
	peak     int64         // most bytes held at once
	total    int64         // bytes ever spooled
	fulls    uint64        // times reading stopped because the spool was full
	isFull   bool          // reading is stopped now
	lastLog  time.Time     // of the last "full" line
	freed    chan struct{} // closed and replaced when bytes are freed
	pending  []*spoolQueue // to deliver on new streams (left over, or cut off)
	wakeLeft chan struct{} // cap 1: pending grew
	kept     int64         // bytes left in DIR for the next start when this run ended
}

// spoolQueue is one stream's queue on disk, with the lock that orders its
// reader and writer.
type spoolQueue struct {
	mu   sync.Mutex
	q    *spool.Queue
	name string // the directory's base name
}

func openSpooler(dir string, size int64, logf func(string, ...any)) (*spooler, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--spool %s: %w", dir, pathCause(err))
	}
	lock, err := os.OpenFile(filepath.Join(dir, spoolLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--spool %s: cannot write there: %w", dir, pathCause(err))
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("--spool %s: in use by another bpcat relay (%v)", dir, err)
	}
	sp := &spooler{
		dir: dir, max: size, segSize: min(max(size/16, copyBufSize), spool.DefaultSegmentSize),
		lock: lock, run: fmt.Sprintf("%s%d-", spoolDirPrefix, time.Now().UnixNano()), logf: logf,
		freed: make(chan struct{}), wakeLeft: make(chan struct{}, 1),
	}
	if err := sp.recover(); err != nil {
		sp.close()
		return nil, err
	}
	return sp, nil
}

// pathCause is err without the path, which the message names already.
func pathCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// recover opens the queues an earlier run left in the directory, oldest
// first, for delivery.
func (sp *spooler) recover() error {
	ents, err := os.ReadDir(sp.dir)
	if err != nil {
		return fmt.Errorf("--spool %s: %w", sp.dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), spoolDirPrefix) {
			continue
		}
		q, err := spool.Open(filepath.Join(sp.dir, e.Name()), spool.Options{SegmentSize: sp.segSize})
		if err != nil {
			for _, sq := range sp.pending {
				sq.q.Close()
			}
			sp.pending = nil
			return fmt.Errorf("--spool %s: data left by an earlier run cannot be read: %w (move that directory away to start without it)", sp.dir, err)
		}
		if q.Len() == 0 {
			if err := q.Remove(); err != nil {
				return fmt.Errorf("--spool %s: %w", sp.dir, err)
			}
			continue
		}
		sp.pending = append(sp.pending, &spoolQueue{q: q, name: e.Name()})
		sp.used += q.Len()
	}
	sp.peak = sp.used
	slices.SortFunc(sp.pending, func(a, b *spoolQueue) int { return strings.Compare(a.name, b.name) })
	if n := len(sp.pending); n > 0 {
		sp.logf("spool: %s left by an earlier run in %d stream(s), to deliver upstream again", formatSize(uint64(sp.used)), n)
	}
	return nil
}

// reserve waits until the spool has room for n bytes (at most a copy
// buffer) and takes it. It counts the spool as full when it has to wait.
func (sp *spooler) reserve(ctx context.Context, n int64, ss *spoolStream) error {
	for {
		sp.mu.Lock()
		if sp.max-sp.used >= n {
			sp.used += n
			sp.isFull = false
			sp.mu.Unlock()
			return nil
		}
		if !sp.isFull {
			sp.isFull = true
			sp.fulls++
			ss.fulls.Add(1)
			if now := time.Now(); now.Sub(sp.lastLog) >= time.Second {
				sp.lastLog = now
				sp.logf("spool full (%s held): not reading from clients until the upstream catches up", formatSize(uint64(sp.used)))
			}
		}
		ch := sp.freed
		sp.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back n bytes of room: acknowledged by the upstream,
// discarded, or reserved and not appended.
func (sp *spooler) release(n int64) {
	if n == 0 {
		return
	}
	sp.mu.Lock()
	sp.used -= n
	close(sp.freed)
	sp.freed = make(chan struct{})
	sp.mu.Unlock()
}

// appended counts n reserved bytes as written to the spool.
func (sp *spooler) appended(n int64) {
	sp.mu.Lock()
	sp.total += n
	sp.peak = max(sp.peak, sp.used)
	sp.mu.Unlock()
}

// summary is the spool's state in a few words.
func (sp *spooler) summary() string {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	s := fmt.Sprintf("spool %s: %s held now, peak %s of %s, %s spooled in all, full %d times",
		sp.dir, formatSize(uint64(sp.used)), formatSize(uint64(sp.peak)), formatSize(uint64(sp.max)), formatSize(uint64(sp.total)), sp.fulls)
	if sp.kept > 0 {
		s += fmt.Sprintf("; %s kept for the next start", formatSize(uint64(sp.kept)))
	}
	return s
}

// close closes the queues not delivered (keeping their files) and the lock.
func (sp *spooler) close() {
	sp.mu.Lock()
	for _, sq := range sp.pending {
		sq.mu.Lock()
		sp.kept += sq.q.Len()
		sq.q.Close()
		sq.mu.Unlock()
	}
	sp.pending = nil
	sp.mu.Unlock()
	sp.lock.Close()
}

// spoolStream is one relayed stream's trip through the spool: ingest
// reads the client into the queue, drain writes the queue to the
// upstream.
type spoolStream struct {
	sp *spooler
	sq *spoolQueue
	// base is the queue offset of the first byte of the upstream stream.
	base int64
	data chan struct{} // cap 1: ingest appended

	ingestDone chan struct{}
	ingestErr  error // set before ingestDone closes
	drainErr   error

	total, peak atomic.Int64 // bytes this stream spooled; most held at once
	fulls       atomic.Uint64
}

// newStream makes a queue for a new stream.
func (sp *spooler) newStream(id uint64) (*spoolStream, error) {
	name := fmt.Sprintf("%s%d-%d", sp.run, sp.seq.Add(1), id)
	q, err := spool.Open(filepath.Join(sp.dir, name), spool.Options{SegmentSize: sp.segSize})
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &spoolStream{sp: sp, sq: &spoolQueue{q: q, name: name}, data: make(chan struct{}, 1), ingestDone: make(chan struct{})}, nil
}

// forward relays src to dst through the spool: it returns when src has
// been read to its end and dst has consumed everything (the bytes written
// to dst), or at the first error of either (reading src first, if it
// failed). When reading src fails, forward calls abort with the error at
// once, for it to reset both hops: the writes to dst do not wait for
// reading. Then finish must be called.
func (ss *spoolStream) forward(ctx context.Context, dst, src *mux.Stream, abort func(error)) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // on the drain's error: stops ingest waiting for room (a Read of src ends with the reset that follows)
	go func() {
		err := ss.ingest(ctx, src)
		ss.ingestErr = err
		close(ss.ingestDone)
		if err != nil && ctx.Err() == nil {
			abort(err)
		}
	}()
	n, err := ss.drain(ctx, dst)
	if err != nil {
		ss.drainErr = err
		select {
		case <-ss.ingestDone:
			if ss.ingestErr != nil && ctx.Err() == nil {
				err = ss.ingestErr // the cause
			}
		default:
		}
	}
	return n, err
}

// ingest reads src into the queue. It takes room in the spool for what it
// read before reading more, so that a full spool stops the reading (with
// at most one copy buffer read and not yet spooled).
func (ss *spoolStream) ingest(ctx context.Context, src io.Reader) error {
	buf := make([]byte, copyBufSize)
	for {
		n, rerr := src.Read(buf)
		m, aerr := 0, error(nil)
		if n > 0 {
			if err := ss.sp.reserve(ctx, int64(n), ss); err != nil {
				return err
			}
			ss.sq.mu.Lock()
			m, aerr = ss.sq.q.Append(buf[:n])
			held := ss.sq.q.Len()
			ss.sq.mu.Unlock()
			ss.total.Add(int64(m))
			if held > ss.peak.Load() {
				ss.peak.Store(held)
			}
			ss.sp.appended(int64(m))
			select {
			case ss.data <- struct{}{}:
			default:
			}
		}
		ss.sp.release(int64(n - m))
		switch {
		case aerr != nil:
			return fmt.Errorf("spool: %w", aerr)
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// drain writes the queue to dst until ingest has ended and everything it
// appended is written and consumed.
func (ss *spoolStream) drain(ctx context.Context, dst *mux.Stream) (int64, error) {
	buf := make([]byte, copyBufSize)
	var sent int64
	lastCheckpoint := time.Now()
	poll := time.NewTimer(spoolPoll)
	defer poll.Stop()
	for {
		select {
		case <-ss.ingestDone:
			if ss.ingestErr != nil {
				return sent, ss.ingestErr
			}
		default:
		}
		ss.sq.mu.Lock()
		n, err := ss.sq.q.Read(buf)
		ss.sq.mu.Unlock()
		if errors.Is(err, spool.ErrEmpty) {
			select {
			case <-ss.ingestDone:
				// ingestDone is closed after the last Append: empty now is empty for good.
				ss.sq.mu.Lock()
				left := ss.sq.q.Unread()
				ss.sq.mu.Unlock()
				if left > 0 {
					continue
				}
				if ss.ingestErr != nil {
					return sent, ss.ingestErr
				}
				return sent, ss.finishDrain(ctx, dst)
			default:
			}
			if err := ss.ack(dst); err != nil {
				return sent, err
			}
			poll.Reset(spoolPoll)
			select {
			case <-ss.data:
			case <-ss.ingestDone:
			case <-poll.C:
			case <-ctx.Done():
				return sent, ctx.Err()
			}
			continue
		}
		if err != nil {
			return sent, fmt.Errorf("spool: %w", err)
		}
		w, werr := dst.Write(buf[:n])
		sent += int64(w)
		if werr != nil {
			return sent, werr
		}
		if err := ss.ack(dst); err != nil {
			return sent, err
		}
		if time.Since(lastCheckpoint) >= spoolCheckpoint {
			lastCheckpoint = time.Now()
			ss.sq.mu.Lock()
			err := ss.sq.q.Checkpoint()
			ss.sq.mu.Unlock()
			if err != nil {
				return sent, fmt.Errorf("spool: %w", err)
			}
		}
	}
}

// finishDrain half-closes dst and waits until its peer consumed
// everything, acknowledging all.
func (ss *spoolStream) finishDrain(ctx context.Context, dst *mux.Stream) error {
	dst.CloseWrite()
	if err := dst.WaitConsumed(ctx); err != nil {
		return err
	}
	return ss.ack(dst)
}

// ack acknowledges in the queue what the upstream's application has read
// and frees it in the spool.
func (ss *spoolStream) ack(dst *mux.Stream) error {
	consumed := ss.base + int64(dst.Stats().PeerConsumed)
	ss.sq.mu.Lock()
	head, read, _ := ss.sq.q.Offsets()
	n := min(consumed, read) - head
	var err error
	if n > 0 {
		err = ss.sq.q.Ack(n)
	}
	ss.sq.mu.Unlock()
	if n > 0 {
		ss.sp.release(n)
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// finish ends the stream's use of the spool once forward has returned and
// both hops are done (the reads and writes have returned): it deletes the
// queue if it is empty or the stream was aborted on purpose by one end,
// and otherwise keeps it for delivery on a new stream (now, if the relay
// still runs, or at the next start). It returns what it did, for the log.
func (ss *spoolStream) finish(relayCtx context.Context) string {
	<-ss.ingestDone
	ss.sq.mu.Lock()
	left := ss.sq.q.Len()
	ss.sq.mu.Unlock()
	if left == 0 || abortedByPeer(ss.ingestErr) || abortedByPeer(ss.drainErr) {
		ss.sq.mu.Lock()
		err := ss.sq.q.Remove()
		ss.sq.mu.Unlock()
		ss.sp.release(left)
		switch {
		case err != nil:
			return fmt.Sprintf("spool: removing %s: %v", ss.sq.name, err)
		case left > 0:
			return fmt.Sprintf("spool: %s discarded (the stream was reset by its peer)", formatSize(uint64(left)))
		}
		return ""
	}
	ss.sq.mu.Lock()
	ss.sq.q.Rewind()
	ss.sq.mu.Unlock()
	if relayCtx.Err() != nil { // the relay is stopping: keep it for the next start
		ss.sq.mu.Lock()
		err := ss.sq.q.Close()
		ss.sq.mu.Unlock()
		ss.sp.mu.Lock()
		ss.sp.kept += left
		ss.sp.mu.Unlock()
		if err != nil {
			return fmt.Sprintf("spool: closing %s: %v", ss.sq.name, err)
		}
		return fmt.Sprintf("spool: %s kept in %s, to deliver when the relay next starts", formatSize(uint64(left)), ss.sq.name)
	}
	ss.sp.mu.Lock()
	ss.sp.pending = append(ss.sp.pending, ss.sq)
	ss.sp.mu.Unlock()
	select {
	case ss.sp.wakeLeft <- struct{}{}:
	default:
	}
	return fmt.Sprintf("spool: %s kept in %s, to deliver on a new stream", formatSize(uint64(left)), ss.sq.name)
}

// abortedByPeer reports whether err is a reset of the stream by its peer:
// an abort on purpose, which a spool does not replay.
func abortedByPeer(err error) bool {
	var se *mux.StreamError
	return errors.As(err, &se) && se.Remote
}

// stats is the stream's spool counters for its log line.
func (ss *spoolStream) stats() string {
	return fmt.Sprintf("spool: peak %s, %s in all, full %d times",
		formatSize(uint64(ss.peak.Load())), formatSize(uint64(ss.total.Load())), ss.fulls.Load())
}

// deliverPending delivers the pending queues, oldest first, each on a new
// stream of a new session to the upstream, until ctx is done; a failed
// delivery is retried with backoff (1s doubling to 30s) from the queue's
// head.
func (sp *spooler) deliverPending(ctx context.Context, open func(context.Context) (*mux.Session, error)) {
	backoff := time.Second
	for {
		sp.mu.Lock()
		var sq *spoolQueue
		if len(sp.pending) > 0 {
			sq = sp.pending[0]
		}
		sp.mu.Unlock()
		if sq == nil {
			select {
			case <-sp.wakeLeft:
				continue
			case <-ctx.Done():
				return
			}
		}
		n, err := sp.deliver(ctx, sq, open)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			sp.logf("spool: delivering %s again: %v (retrying in %v)", sq.name, oneLine(err), backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		sp.mu.Lock()
		sp.pending = slices.DeleteFunc(sp.pending, func(p *spoolQueue) bool { return p == sq })
		sp.mu.Unlock()
		sq.mu.Lock()
		rerr := sq.q.Remove()
		sq.mu.Unlock()
		sp.logf("spool: delivered %s from %s on a new stream", formatSize(uint64(n)), sq.name)
		if rerr != nil {
			sp.logf("spool: removing %s: %v", sq.name, rerr)
		}
	}
}

// deliver sends one queue from its head on a new stream of a new session.
func (sp *spooler) deliver(ctx context.Context, sq *spoolQueue, open func(context.Context) (*mux.Session, error)) (int64, error) {
	sq.mu.Lock()
	sq.q.Rewind()
	head, _, tail := sq.q.Offsets()
	sq.mu.Unlock()
	sess, err := open(ctx)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	s, err := sess.Open(ctx)
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset(framing.Cancel) })
	defer stop()
	ss := &spoolStream{sp: sp, sq: sq, base: head, data: make(chan struct{}, 1), ingestDone: make(chan struct{})}
	close(ss.ingestDone) // nothing more comes in
	if _, err := ss.drain(ctx, s); err != nil {
		s.Reset(framing.Cancel)
		return 0, err
	}
	endSession(sess, "bpcat relay: spooled data delivered")
	return tail - head, nil
}
