package mux

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pattern is a deterministic byte source: the same seed always yields the
// same bytes, so both ends can hash what they moved.
type pattern struct{ r *rand.ChaCha8 }

func newPattern(seed uint64) *pattern {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return &pattern{rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.r.Read(b) }

// writeWithin writes from src until the write deadline passes and returns
// how many bytes Write accepted.
func writeWithin(t *testing.T, s *Stream, src io.Reader, d time.Duration) int {
	t.Helper()
	require.NoError(t, s.SetWriteDeadline(time.Now().Add(d)))
	buf := make([]byte, 32<<10)
	total := 0
	for i := 0; i < 1<<20; i++ {
		_, err := io.ReadFull(src, buf)
		require.NoError(t, err)
		n, err := s.Write(buf)
		total += n
		if err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.NoError(t, s.SetWriteDeadline(time.Time{}))
			return total
		}
	}
	t.Fatal("writer never blocked")
	return 0
}

// TestWriterBlocksAfterOneWindow: a writer whose reader does not read is
// held after exactly the receive window; once reading starts, everything
// arrives intact.
func TestWriterBlocksAfterOneWindow(t *testing.T) {
	const window = 256 << 10
	cfg := &Config{InitialWindow: window, MaxWindow: window}
	p := newPair(t, cfg, cfg)
	c, s := p.openPair(t)

	accepted := writeWithin(t, c, newPattern(1), time.Second)
	assert.Equal(t, window, accepted, "writer must stop after exactly one window")
	st := s.Stats()
	assert.Equal(t, uint64(window), st.Buffered)
	assert.LessOrEqual(t, st.Reserved, uint64(window))
	cs := c.Stats()
	assert.Equal(t, uint64(0), cs.SendCredit)
	assert.GreaterOrEqual(t, cs.Stalls, uint64(1))

	// Resume: the writer moves again and everything arrives intact.
	const more = 4 << 20
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, newPatternSkip(1, accepted), more)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, s)
	require.NoError(t, err)
	require.NoError(t, <-done)
	require.Equal(t, int64(window+more), n)
	want := sha256.New()
	_, err = io.CopyN(want, newPattern(1), window+more)
	require.NoError(t, err)
	require.Equal(t, want.Sum(nil), got.Sum(nil))
}

// newPatternSkip returns pattern seed with its first skip bytes consumed.
func newPatternSkip(seed uint64, skip int) io.Reader {
	p := newPattern(seed)
	io.CopyN(io.Discard, p, int64(skip))
	return p
}

// TestEightStreamsPausedReaders moves 64 MiB on each of 8 streams at once;
// every reader pauses first, so every writer blocks, then reading resumes
// and all data arrives intact.
func TestEightStreamsPausedReaders(t *testing.T) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	const streams = 8
	p := newPair(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 2*streams)
	sums := make([][2][]byte, streams)
	resume := make(chan struct{})
	for i := range streams {
		c, s := p.openPair(t)
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			h := sha256.New()
			_, err := io.CopyN(io.MultiWriter(c, h), newPattern(uint64(i)), size)
			if err == nil {
				err = c.CloseWrite()
			}
			sums[i][0] = h.Sum(nil)
			errs <- err
		}()
		go func() { // reader: waits, then drains
			defer wg.Done()
			select {
			case <-resume:
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
			h := sha256.New()
			n, err := io.Copy(h, s)
			if err == nil && n != size {
				err = errors.New("short read")
			}
			sums[i][1] = h.Sum(nil)
			errs <- err
		}()
	}
	// Wait until every writer is out of credit before resuming.
	require.Eventually(t, func() bool {
		for _, st := range p.client.Streams() {
			if st.Stats().SendCredit != 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond)
	for _, st := range p.server.Streams() {
		ss := st.Stats()
		assert.LessOrEqual(t, ss.Buffered, ss.RecvWindow)
	}
	assert.LessOrEqual(t, p.server.Stats().BudgetUsed, p.server.Stats().BudgetTotal)
	close(resume)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range streams {
		assert.Equal(t, sums[i][0], sums[i][1], "stream %d", i)
	}
}

// TestStalledStreamDoesNotBlockSiblings: one stream's reader stops; the
// other seven move their data to the end while it stays stalled, holding
// no more than its window.
func TestStalledStreamDoesNotBlockSiblings(t *testing.T) {
	const size = 16 << 20
	p := newPair(t, nil, nil)
	stalledC, stalledS := p.openPair(t)
	go io.Copy(stalledC, newPattern(99)) // pushes until the test ends
	t.Cleanup(func() { stalledC.Reset(0x6) })

	var wg sync.WaitGroup
	errs := make(chan error, 14)
	for i := range 7 {
		c, s := p.openPair(t)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := io.CopyN(c, newPattern(uint64(i)), size)
			if err == nil {
				err = c.CloseWrite()
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			n, err := io.Copy(io.Discard, s)
			if err == nil && n != size {
				err = errors.New("short read")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := stalledS.Stats()
	assert.Positive(t, st.Buffered, "the stalled stream received its window")
	assert.LessOrEqual(t, st.Buffered, uint64(128<<10), "a reader that never read keeps the initial window")
	assert.Zero(t, st.BytesConsumed)
	assert.Zero(t, stalledC.Stats().SendCredit, "the stalled writer is blocked")
}

// TestBudgetBoundsBuffering: with readers that never read, the sum of all
// receive buffering stays within the session budget at every sample, and
// writers are held.
func TestBudgetBoundsBuffering(t *testing.T) {
	const streams = 12
	budget := withOverhead(2<<20, streams)
	srv := &Config{InitialWindow: 128 << 10, MaxWindow: 1 << 20, SessionBudget: budget}
	p := newPair(t, nil, srv)
	for i := range streams {
		c, _ := p.openPair(t)
		go io.Copy(c, newPattern(uint64(i)))
		t.Cleanup(func() { c.Reset(0x6) })
	}
	deadline := time.Now().Add(2 * time.Second)
	samples := 0
	for time.Now().Before(deadline) {
		var buffered uint64
		for _, s := range p.server.Streams() {
			buffered += s.Stats().Buffered
		}
		st := p.server.Stats()
		require.LessOrEqual(t, st.BudgetUsed, st.BudgetTotal)
		require.LessOrEqual(t, buffered, uint64(budget))
		samples++
		time.Sleep(5 * time.Millisecond)
	}
	var buffered uint64
	for _, s := range p.server.Streams() {
		buffered += s.Stats().Buffered
	}
	assert.Equal(t, uint64(streams*128<<10), buffered, "every stream holds exactly its initial window")
	t.Logf("%d samples; %d bytes buffered of a %d budget", samples, buffered, budget)
}
