package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// patternBlock is the unit of test data: random bytes, numbered.
const patternBlock = 64 << 10

// producer writes total bytes of numbered random blocks to w, hashing
// them, and counts what w accepted.
type producer struct {
	base    []byte
	written atomic.Int64
	sum     hash.Hash
}

func newProducer(seed uint64) *producer {
	base := make([]byte, patternBlock)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range base {
		base[i] = byte(r.Uint32())
	}
	return &producer{base: base, sum: sha256.New()}
}

// produce writes total bytes to w and closes it if it is a Closer.
func (p *producer) produce(w io.Writer, total int64) error {
	buf := make([]byte, patternBlock)
	for i := int64(0); p.written.Load() < total; i++ {
		copy(buf, p.base)
		binary.LittleEndian.PutUint64(buf, uint64(i))
		n := min(int64(len(buf)), total-p.written.Load())
		p.sum.Write(buf[:n])
		m, err := w.Write(buf[:n])
		p.written.Add(int64(m))
		if err != nil {
			return err
		}
	}
	if c, ok := w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (p *producer) hex() string { return hex.EncodeToString(p.sum.Sum(nil)) }

// consume reads r to EOF and returns the byte count and SHA-256.
func consume(r io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return n, hex.EncodeToString(h.Sum(nil)), err
}

type result struct {
	n   int64
	sum string
	err error
}

func consumeAsync(r io.Reader) <-chan result {
	ch := make(chan result, 1)
	go func() {
		n, sum, err := consume(r)
		ch <- result{n, sum, err}
	}()
	return ch
}

// TestPipeBothWays pipes hundreds of MiB each way at once between two
// processes and checks every byte.
func TestPipeBothWays(t *testing.T) {
	total := int64(256 << 20)
	if testing.Short() {
		total = 32 << 20
	}
	l, addr, fp := startListener(t, "listen", nil, nil)
	c := start(t, "connect", nil, nil, "connect", "--pin", fp, addr)

	up, down := newProducer(1), newProducer(2)
	upErr, downErr := make(chan error, 1), make(chan error, 1)
	go func() { upErr <- up.produce(c.stdin, total) }()
	go func() { downErr <- down.produce(l.stdin, total) }()
	atL, atC := consumeAsync(l.stdout), consumeAsync(c.stdout)

	for _, ch := range []<-chan error{upErr, downErr} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-time.After(90 * time.Second):
			t.Fatal("producers did not finish")
		}
	}
	rl, rc := <-atL, <-atC
	require.NoError(t, rl.err)
	require.NoError(t, rc.err)
	assert.Equal(t, total, rl.n, "bytes at the listener")
	assert.Equal(t, total, rc.n, "bytes at the dialler")
	assert.Equal(t, up.hex(), rl.sum, "connect -> listen")
	assert.Equal(t, down.hex(), rc.sum, "listen -> connect")
	assert.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
	assert.Equal(t, 0, l.wait(30*time.Second), "listen exit code")
	t.Logf("%d MiB each way intact", total>>20)
}

// pipeSize returns the capacity of the pipe behind f.
func pipeSize(t *testing.T, f any) int64 {
	t.Helper()
	fd, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return 64 << 10 // Linux's default
	}
	n, err := unix.FcntlInt(fd.Fd(), unix.F_GETPIPE_SZ, 0)
	require.NoError(t, err)
	return int64(n)
}

// waitStill waits until v stops changing for quiet, or until limit, and
// returns its value.
func waitStill(v *atomic.Int64, quiet, limit time.Duration) int64 {
	deadline := time.Now().Add(limit)
	last, since := v.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if now := v.Load(); now != last {
			last, since = now, time.Now()
		} else if time.Since(since) >= quiet {
			break
		}
	}
	return last
}

// rssFlat samples the RSS of procs a few times over about a second and
// checks that none grows by more than slack.
func rssFlat(t *testing.T, slack uint64, procs ...*proc) {
	t.Helper()
	first := make([]uint64, len(procs))
	for i, p := range procs {
		first[i] = p.rss()
	}
	for range 4 {
		time.Sleep(250 * time.Millisecond)
		for i, p := range procs {
			r := p.rss()
			t.Logf("%s RSS %.1f MiB (first %.1f MiB)", p.name, float64(r)/(1<<20), float64(first[i])/(1<<20))
			assert.LessOrEqual(t, r, first[i]+slack, "%s RSS grew while stalled", p.name)
		}
	}
}

// stalledPipeline runs producer -> connect -> [relay ->] listen -> a
// stdout pipe the test does not read, and checks that the producer is
// held within the window and the copy buffers and pipes on the way, that
// memory stays flat, and that everything arrives when reading resumes.
func stalledPipeline(t *testing.T, viaRelay bool) {
	const window = 256 << 10
	total := int64(64 << 20)
	if testing.Short() {
		total = 16 << 20
	}
	outR, outW, err := os.Pipe()
	require.NoError(t, err)
	defer outR.Close()
	l, addr, fp := startListener(t, "listen", nil, outW, "--window", "256KiB", "--max-window", "256KiB")
	outW.Close() // the listener holds it
	l.stdin.Close()
	hops := int64(1)
	procs := []*proc{l}
	if viaRelay {
		r := start(t, "relay", nil, nil, "relay", "--window", "256KiB", "--max-window", "256KiB", "--pin", fp, "127.0.0.1:0", addr)
		fp = r.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
		addr = r.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
		hops = 2
		procs = append(procs, r)
	}
	inR, inW, err := os.Pipe()
	require.NoError(t, err)
	c := start(t, "connect", inR, nil, "connect", "--pin", fp, addr)
	inR.Close()
	procs = append(procs, c)
	go io.Copy(io.Discard, c.stdout)

	inPipe, outPipe := pipeSize(t, inW), pipeSize(t, outR)
	prod := newProducer(3)
	prodErr := make(chan error, 1)
	go func() { prodErr <- prod.produce(inW, total) }()

	held := waitStill(&prod.written, time.Second, 20*time.Second)
	// What may be stored between the producer and the reader that stopped:
	// connect's stdin pipe and copy buffer; per hop one window; at the
	// relay, one copy buffer per direction of the hop; at the listener one
	// copy buffer and its stdout pipe.
	bound := inPipe + copyBufSize + hops*window + (hops-1)*copyBufSize + copyBufSize + outPipe
	t.Logf("producer held after %d KiB (bound %d KiB: pipes %d+%d KiB, window %d KiB x %d hops, copy buffers %d KiB x %d)",
		held>>10, bound>>10, inPipe>>10, outPipe>>10, window>>10, hops, copyBufSize>>10, hops+1)
	require.Less(t, held, total, "the producer was never held")
	assert.LessOrEqual(t, held, bound, "the producer wrote more than the pipeline can hold")
	rssFlat(t, 8<<20, procs...)
	assert.Equal(t, held, prod.written.Load(), "the producer moved while the reader was stopped")

	// Resume reading: everything arrives.
	res := consumeAsync(outR)
	select {
	case err := <-prodErr:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the producer was not released")
	}
	r := <-res
	require.NoError(t, r.err)
	assert.Equal(t, total, r.n)
	assert.Equal(t, prod.hex(), r.sum)
	assert.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
	assert.Equal(t, 0, l.wait(30*time.Second), "listen exit code")
}

func TestStalledReaderHoldsProducer(t *testing.T) { stalledPipeline(t, false) }

// TestLargeFixedWindow: a fixed window larger than the default session
// budget (--window 100MiB on both sides) moves data; the budget grows to
// hold the window and what else the session charges to it. (The budget
// was once sized to the window alone, and the decoder's reservation left
// no room for a stream's floor: every stream was refused.)
func TestLargeFixedWindow(t *testing.T) {
	const total = 8 << 20
	l, addr, fp := startListener(t, "listen", nil, nil, "--window", "100MiB", "--max-window", "100MiB")
	l.stdin.Close()
	c := start(t, "connect", nil, nil, "connect", "--window", "100MiB", "--max-window", "100MiB", "--pin", fp, addr)
	at := consumeAsync(l.stdout)
	prod := newProducer(5)
	require.NoError(t, prod.produce(c.stdin, total))
	select {
	case r := <-at:
		require.NoError(t, r.err)
		assert.Equal(t, int64(total), r.n, "bytes at the listener")
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not get the data")
	}
}

// TestReadRateAndTrace receives at a limited rate with a trace, and checks
// the data and that the trace recorded the window's work.
func TestReadRateAndTrace(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "listen.jsonl")
	const total = 2 << 20
	l, addr, fp := startListener(t, "listen", nil, nil, "--read-rate", "4MiB/s", "--window", "64KiB", "--max-window", "64KiB", "--trace", tr, "--stats")
	l.stdin.Close()
	c := start(t, "connect", nil, nil, "connect", "--pin", fp, "--stats", addr)
	prod := newProducer(4)
	go prod.produce(c.stdin, total)
	r := <-consumeAsync(l.stdout)
	require.NoError(t, r.err)
	assert.Equal(t, prod.hex(), r.sum)
	assert.Equal(t, 0, c.wait(30*time.Second))
	assert.Equal(t, 0, l.wait(30*time.Second))
	assert.Contains(t, c.stderrText(), "writer stalled")
	b, err := os.ReadFile(tr)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"event":"grant"`)
	assert.Contains(t, string(b), `"side":"listen"`)
}

// TestPinning: a wrong pin and a missing pin are refused before a byte is
// sent, with a message that says what to do.
func TestPinning(t *testing.T) {
	outR, outW, err := os.Pipe()
	require.NoError(t, err)
	defer outR.Close()
	l, addr, fp := startListener(t, "listen", nil, outW)
	outW.Close()
	wrong := "sha256:" + hex.EncodeToString(make([]byte, 32))

	c := start(t, "connect-wrong-pin", nil, io.Discard, "connect", "--pin", wrong, addr)
	go c.stdin.Write([]byte("secret")) // may fail once it exits
	assert.NotEqual(t, 0, c.wait(30*time.Second))
	assert.Contains(t, c.stderrText(), "not the pinned fingerprint")
	assert.Contains(t, c.stderrText(), fp, "shows the fingerprint it saw")

	c = start(t, "connect-no-pin", nil, io.Discard, "connect", addr)
	go c.stdin.Write([]byte("secret"))
	assert.NotEqual(t, 0, c.wait(30*time.Second))
	assert.Contains(t, c.stderrText(), "--pin "+fp, "says how to pin")
	assert.Regexp(t, `^bpcat connect: [^\n]+\n$`, c.stderrText(), "one line")

	// The listener saw no session and no byte.
	assert.False(t, l.exited(), "the listener accepted a session")
	require.NoError(t, outR.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	n, err := outR.Read(make([]byte, 16))
	assert.Zero(t, n, "bytes reached the listener")
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// TestRelayHoldsProducer: the same across a relay: the producer is held
// within a window per hop, the relay's memory stays flat, data intact.
func TestRelayHoldsProducer(t *testing.T) { stalledPipeline(t, true) }
