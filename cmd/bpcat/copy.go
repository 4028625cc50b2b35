package main

import (
	"context"
	"io"
	"time"
)

// copyBufSize is the one buffer each copying direction owns. What a
// stalled pipeline holds beyond the flow-control window is at most this
// much per hop.
const copyBufSize = 64 << 10

// onlyReader and onlyWriter hide ReadFrom/WriteTo, so that io.CopyBuffer
// uses the bounded buffer it is given and nothing else.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

// copyData copies src to dst through one buffer of copyBufSize, consuming
// no faster than rate bytes per second (0: unlimited). It returns the
// bytes copied; reaching src's EOF is success.
func copyData(ctx context.Context, dst io.Writer, src io.Reader, rate uint64) (int64, error) {
	buf := make([]byte, copyBufSize)
	if rate == 0 {
		return io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, buf)
	}
	return pacedCopy(ctx, dst, src, buf, newPacer(rate))
}

// pacer is a token bucket: tokens arrive at rate per second up to chunk,
// and a read may take only what the bucket holds.
type pacer struct {
	rate   float64
	chunk  int // bucket size and largest read
	tokens float64
	last   time.Time
}

func newPacer(rate uint64) *pacer {
	// About 16 reads a second, between 512 bytes and one copy buffer.
	chunk := int(min(max(rate/16, 512), copyBufSize))
	return &pacer{rate: float64(rate), chunk: chunk, last: time.Now()}
}

// take waits until the bucket holds a chunk (or ctx is done) and returns
// how many bytes may be read now.
func (p *pacer) take(ctx context.Context) (int, error) {
	for {
		now := time.Now()
		p.tokens = min(p.tokens+now.Sub(p.last).Seconds()*p.rate, float64(p.chunk))
		p.last = now
		if p.tokens >= float64(p.chunk) {
			return p.chunk, nil
		}
		wait := time.Duration((float64(p.chunk) - p.tokens) / p.rate * float64(time.Second))
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
	}
}

// spend removes n read bytes from the bucket.
func (p *pacer) spend(n int) { p.tokens -= float64(n) }

// pacedCopy copies src to dst with reads paced by p.
func pacedCopy(ctx context.Context, dst io.Writer, src io.Reader, buf []byte, p *pacer) (int64, error) {
	var total int64
	for {
		allowed, err := p.take(ctx)
		if err != nil {
			return total, err
		}
		n, rerr := src.Read(buf[:min(allowed, len(buf))])
		p.spend(n)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
