package spool

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// segFiles lists the segment files in dir.
func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	require.NoError(t, err)
	return m
}

// readAll reads everything unread, in reads of at most chunk bytes.
func readAll(t *testing.T, q *Queue, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for range 1 << 20 { // bounded: far more reads than any test needs
		n, err := q.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, ErrEmpty) {
			return out
		}
		require.NoError(t, err)
	}
	t.Fatal("Read never reported empty")
	return nil
}

func TestEmpty(t *testing.T) {
	q, err := Open(filepath.Join(t.TempDir(), "q"), Options{Max: 100, SegmentSize: 10})
	require.NoError(t, err)
	n, err := q.Read(make([]byte, 8))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ErrEmpty)
	assert.Zero(t, q.Len())
	assert.Error(t, q.Ack(1), "nothing read, nothing to acknowledge")
	require.NoError(t, q.Close())
	_, err = q.Append([]byte("x"))
	assert.ErrorIs(t, err, ErrClosed)
}

// TestWrapAround pushes many times Max through a queue of small segments
// in uneven chunks: order is kept, segments come and go, and the files on
// disk never hold much more than Max.
func TestWrapAround(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	const most, seg = 1000, 64
	q, err := Open(dir, Options{Max: most, SegmentSize: seg})
	require.NoError(t, err)
	data := randBytes(50_000, 1)
	var got []byte
	in := data
	r := rand.New(rand.NewPCG(2, 3))
	mostSegs := 0
	for i := 0; len(got) < len(data); i++ {
		require.Less(t, i, 100_000, "no progress")
		if len(in) > 0 {
			n, err := q.Append(in[:min(len(in), 1+r.IntN(300))])
			if err != nil {
				require.ErrorIs(t, err, ErrFull)
			}
			in = in[n:]
		}
		assert.LessOrEqual(t, q.Len(), int64(most))
		buf := make([]byte, 1+r.IntN(200))
		n, err := q.Read(buf)
		if err != nil {
			require.ErrorIs(t, err, ErrEmpty)
		}
		got = append(got, buf[:n]...)
		// Acknowledge some of what was read, not always all of it.
		head, read, _ := q.Offsets()
		require.NoError(t, q.Ack((read-head)*int64(r.IntN(3))/2))
		mostSegs = max(mostSegs, len(segFiles(t, dir)))
	}
	assert.True(t, bytes.Equal(data, got), "bytes out differ from bytes in")
	assert.LessOrEqual(t, mostSegs, most/seg+2, "segments kept beyond the bound")
	head, read, tail := q.Offsets()
	require.NoError(t, q.Ack(read-head))
	assert.Equal(t, int64(len(data)), tail)
	assert.LessOrEqual(t, len(segFiles(t, dir)), 1, "acknowledged segments kept")
	require.NoError(t, q.Remove())
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestFull(t *testing.T) {
	q, err := Open(filepath.Join(t.TempDir(), "q"), Options{Max: 100, SegmentSize: 30})
	require.NoError(t, err)
	data := randBytes(150, 4)
	n, err := q.Append(data)
	assert.Equal(t, 100, n, "writes what fits")
	assert.ErrorIs(t, err, ErrFull)
	n, err = q.Append(data[100:])
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ErrFull)
	// Reading alone frees nothing: the bytes may be needed again.
	got := make([]byte, 40)
	n, err = q.Read(got)
	require.NoError(t, err)
	assert.Equal(t, 30, n, "a read stops at a segment's end")
	_, err = q.Append(data[100:])
	assert.ErrorIs(t, err, ErrFull)
	require.NoError(t, q.Ack(30))
	n, err = q.Append(data[100:])
	assert.Equal(t, 30, n)
	assert.ErrorIs(t, err, ErrFull)
	assert.Equal(t, data[:130], append(got[:30], readAll(t, q, 7)...))
}

// TestRestart: a queue reopened (after Close, or after a crash that left
// the files as they were) delivers again what was read and not
// acknowledged, and nothing acknowledged and recorded.
func TestRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := map[bool]string{false: "close", true: "crash"}[crash]
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "q")
			opt := Options{Max: 1000, SegmentSize: 50}
			q, err := Open(dir, opt)
			require.NoError(t, err)
			data := randBytes(600, 5)
			n, err := q.Append(data)
			require.NoError(t, err)
			require.Equal(t, 600, n)
			got := make([]byte, 50)
			for range 5 {
				_, err := q.Read(got)
				require.NoError(t, err)
			} // read 250
			require.NoError(t, q.Ack(120)) // deletes segments 0 and 50, records 120
			require.NoError(t, q.Ack(60))  // head 180: deletes segment 100 and records
			require.NoError(t, q.Ack(10))  // head 190, not recorded yet
			want := 190
			if crash {
				want = 180 // the last Ack was not recorded
				q.closeFiles()
			} else {
				require.NoError(t, q.Close())
			}
			q, err = Open(dir, opt)
			require.NoError(t, err)
			head, read, tail := q.Offsets()
			assert.Equal(t, []int64{int64(want), int64(want), 600}, []int64{head, read, tail})
			assert.Equal(t, data[want:], readAll(t, q, 64))
			// Appending goes on at the tail, in the last segment.
			_, err = q.Append([]byte("more"))
			require.NoError(t, err)
			assert.Equal(t, []byte("more"), readAll(t, q, 64))
			require.NoError(t, q.Close())
		})
	}
}

// TestAckedSegmentsAfterCrash: a crash between recording the head and
// deleting the segments before it leaves segments that Open deletes.
func TestAckedSegmentsAfterCrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	opt := Options{SegmentSize: 10}
	q, err := Open(dir, opt)
	require.NoError(t, err)
	_, err = q.Append(randBytes(35, 6))
	require.NoError(t, err)
	readAll(t, q, 100)
	require.NoError(t, q.Ack(25))
	q.closeFiles()
	// Put back segment 10, as if the crash came after segment 0 was
	// deleted and before segment 10 was.
	require.NoError(t, os.WriteFile(filepath.Join(dir, segName(10)), make([]byte, 10), 0o600))
	q, err = Open(dir, opt)
	require.NoError(t, err)
	head, _, _ := q.Offsets()
	assert.Equal(t, int64(25), head)
	assert.Len(t, segFiles(t, dir), 2, "segment 0 deleted again")
	require.NoError(t, q.Close())
}

func TestCorrupt(t *testing.T) {
	opt := Options{SegmentSize: 10}
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "q")
		q, err := Open(dir, opt)
		require.NoError(t, err)
		_, err = q.Append(randBytes(45, 7))
		require.NoError(t, err)
		_, err = q.Read(make([]byte, 5))
		require.NoError(t, err)
		require.NoError(t, q.Ack(5))
		require.NoError(t, q.Close())
		return dir
	}
	for _, tc := range []struct {
		name, want string
		damage     func(dir string) error
	}{
		{"truncated head", "head: 7 bytes, want 16", func(dir string) error {
			return os.Truncate(filepath.Join(dir, headName), 7)
		}},
		{"bad checksum", "head: checksum mismatch", func(dir string) error {
			b, _ := os.ReadFile(filepath.Join(dir, headName))
			b[8] ^= 1
			return os.WriteFile(filepath.Join(dir, headName), b, 0o600)
		}},
		{"bad magic", "head: bad magic", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, headName), bytes.Repeat([]byte("x"), headLen), 0o600)
		}},
		{"middle segment truncated", segName(10) + ": 4 bytes, but the next segment starts at offset 20", func(dir string) error {
			return os.Truncate(filepath.Join(dir, segName(10)), 4)
		}},
		{"segment missing", segName(0) + ": 10 bytes, but the next segment starts at offset 20", func(dir string) error {
			return os.Remove(filepath.Join(dir, segName(10)))
		}},
		{"head beyond data", "head at offset 5 is beyond the data's end at 0", func(dir string) error {
			ms, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
			for _, m := range ms {
				if err := os.Remove(m); err != nil {
					return err
				}
			}
			return os.WriteFile(filepath.Join(dir, segName(0)), nil, 0o600)
		}},
		{"stray file", "notes.txt: unexpected file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)
		}},
		{"bad segment name", "12.seg: not a segment file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "12.seg"), nil, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := setup(t)
			require.NoError(t, tc.damage(dir))
			_, err := Open(dir, opt)
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), dir, "names the directory")
		})
	}
}

// TestTruncatedTail: a last segment shorter than was written (an OS crash
// before it was synced) is accepted as the tail; a segment truncated under
// a running queue is reported when read.
func TestTruncatedTail(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	opt := Options{SegmentSize: 10}
	q, err := Open(dir, opt)
	require.NoError(t, err)
	data := randBytes(25, 8)
	_, err = q.Append(data)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(filepath.Join(dir, segName(20)), 2))
	for range 2 {
		_, err = q.Read(make([]byte, 10))
		require.NoError(t, err)
	}
	_, err = q.Read(make([]byte, 10))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "shorter than the 5 bytes written")
	q.closeFiles()

	q, err = Open(dir, opt)
	require.NoError(t, err)
	assert.Equal(t, data[:22], readAll(t, q, 100))
	require.NoError(t, q.Close())
}
