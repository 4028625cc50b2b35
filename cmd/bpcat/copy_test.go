package main

import (
	"context"
	"io"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// zeros is an endless source of data, always ready.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { return len(p), nil }

// TestPacerRate: the pacer alone, reading from a source that is always
// ready, averages its rate over a second at the extremes of the range it
// promises (64 KiB/s to 256 MiB/s). The bound is 1 % plus two of the
// pacer's reads (it reads in chunks of a 50th of a second's data, so a
// second's count is off by up to a chunk at either end); the measured
// error is logged.
func TestPacerRate(t *testing.T) {
	for _, rate := range []uint64{64 << 10, 256 << 20} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		n, err := pacedCopy(ctx, io.Discard, zeros{}, make([]byte, copyBufSize), newPacer(rate))
		elapsed := time.Since(start)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		got := float64(n) / elapsed.Seconds()
		dev := got/float64(rate) - 1
		t.Logf("rate %s: %s over %v (%+.2f%%)", formatRate(float64(rate)), formatRate(got), elapsed.Round(time.Millisecond), 100*dev)
		want := float64(rate) * elapsed.Seconds()
		bound := 0.01*want + 2*newPacer(rate).chunk
		assert.Less(t, math.Abs(float64(n)-want), bound, "rate %d: %d bytes in %v", rate, n, elapsed)
	}
}
