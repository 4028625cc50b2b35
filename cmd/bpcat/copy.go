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

// pacer is a token bucket on bytes: credit accrues at rate from the
// start, every byte read spends one, and what a read leaves unspent (a
// short read, a timer that fired late) carries over, so that over any
// stretch longer than a few sleeps the reads average the rate exactly.
// Credit saved while no data came is capped at burst, so that a reader
// that waited for data does not then race ahead for long.
type pacer struct {
	rate   float64   // bytes per second
	chunk  float64   // the least credit worth a read
	wake   float64   // credit to sleep for: a chunk, and at least minSleep's worth
	burst  float64   // most credit kept
	credit float64   // bytes that may be read now (negative: owed)
	last   time.Time // when credit was last brought up to date
}

// minSleep is the shortest sleep of a pacer: shorter ones cost more in
// timer overhead and lateness than they gain in smoothness.
const minSleep = 2 * time.Millisecond

func newPacer(rate uint64) *pacer {
	r := float64(max(rate, 1))
	// Reads of about a 50th of a second's data, 512 bytes to one copy
	// buffer; sleeps of at least minSleep.
	chunk := min(max(r/50, 512), copyBufSize)
	wake := max(chunk, r*minSleep.Seconds())
	return &pacer{rate: r, chunk: chunk, wake: wake, burst: max(2*wake, r/20), last: time.Now()}
}

// refill brings the credit up to date.
func (p *pacer) refill(now time.Time) {
	p.credit = min(p.credit+now.Sub(p.last).Seconds()*p.rate, p.burst)
	p.last = now
}

// take waits until there is credit for a read (or ctx is done) and returns
// how many bytes may be read now: at least a chunk's worth (or most, if
// that is less), at most most.
func (p *pacer) take(ctx context.Context, most int) (int, error) {
	p.refill(time.Now())
	if p.credit < min(p.chunk, float64(most)) {
		// Sleep until a chunk's worth has accrued, not just a byte's:
		// fewer, larger reads at the same average.
		wait := time.Duration((p.wake - p.credit) / p.rate * float64(time.Second))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
		p.refill(time.Now())
	}
	return int(min(max(p.credit, 1), float64(most))), nil
}

// spend removes n read bytes from the credit.
func (p *pacer) spend(n int) { p.credit -= float64(n) }

// pacedCopy copies src to dst with reads paced by p.
func pacedCopy(ctx context.Context, dst io.Writer, src io.Reader, buf []byte, p *pacer) (int64, error) {
	var total int64
	for {
		allowed, err := p.take(ctx, len(buf))
		if err != nil {
			return total, err
		}
		n, rerr := src.Read(buf[:allowed])
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
