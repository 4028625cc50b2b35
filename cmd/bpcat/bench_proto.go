package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bpmux/bp/mux"
)

// The bench protocol, spoken on one session between `bpcat bench ADDR`
// (the client) and `bpcat bench -l` (the server):
//
//   - The client opens the control stream first and writes one request
//     (benchRequest, a JSON line); the server answers with one JSON line,
//     benchReply.
//   - The client then opens Up+Down data streams. Each starts with one
//     byte from the client: benchUp (the client sends, the server reads
//     to EOF) or benchDown (the client half-closes at once; the server
//     sends until told to stop, then half-closes).
//   - The client half-closes the control stream to say "stop sending"
//     (at the end of the test, or when interrupted). Once every data
//     stream has ended, the server writes its results (benchResult, a JSON
//     line) and half-closes the control stream.
const benchProtoVersion = 1

// The first byte of a data stream: its direction as the client sees it.
const (
	benchUp   byte = 'u'
	benchDown byte = 'd'
)

// benchHeaderLen is the size of that first byte, which the figures leave
// out.
const benchHeaderLen = 1

// benchMaxLine bounds one control message.
const benchMaxLine = 64 << 10

// benchRequest is what the client asks for.
type benchRequest struct {
	Version  int           `json:"bpcat_bench"`
	Cookie   string        `json:"cookie"`
	Up       int           `json:"up"`   // streams the client sends on
	Down     int           `json:"down"` // streams the server sends on
	Rate     uint64        `json:"rate"` // bytes per second per stream; 0: unlimited
	Duration time.Duration `json:"duration"`
}

// benchReply accepts or refuses a request.
type benchReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// benchResult is what the server measured, sent at the end.
type benchResult struct {
	CPU     cpuPercent          `json:"cpu"`
	Streams []benchStreamResult `json:"streams"`
}

// benchStreamResult is one data stream as the server saw it.
type benchStreamResult struct {
	ID uint64 `json:"id"`
	// Sender is true for a stream the server sent on (benchDown).
	Sender bool `json:"sender"`
	// Bytes the server sent (Sender) or its application read.
	Bytes       uint64        `json:"bytes"`
	Seconds     float64       `json:"seconds"`
	Stalls      uint64        `json:"stalls"`
	TimeStalled time.Duration `json:"time_stalled"`
	PeakLag     uint64        `json:"peak_in_flight"`
	Window      uint64        `json:"window"`
}

// writeJSONLine writes v as one line.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readJSONLine reads one line of at most benchMaxLine bytes into v.
func readJSONLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return err
		}
		line = append(line, chunk...)
		if len(line) > benchMaxLine {
			return errors.New("control message too long")
		}
		if !isPrefix {
			break
		}
	}
	return json.Unmarshal(line, v)
}

// benchPacer paces a sender to rate bytes per second. It keeps the time
// at which the next byte may go: each write pushes it on by its size over
// the rate, so the long-run rate is exact however coarse the timer. A
// sender held back (by flow control) catches up by at most benchBurst's
// worth of bytes.
type benchPacer struct {
	rate float64
	next time.Time
}

// benchBurst bounds how far behind schedule a paced sender may fall
// before the schedule is moved on (the catch-up burst).
const benchBurst = 50 * time.Millisecond

func newBenchPacer(rate uint64) *benchPacer {
	if rate == 0 {
		return nil
	}
	return &benchPacer{rate: float64(rate), next: time.Now()}
}

// chunk is the size of one paced write: about 100 writes a second,
// between 1 KiB and one copy buffer.
func (p *benchPacer) chunk() int {
	if p == nil {
		return copyBufSize
	}
	return int(min(max(p.rate/100, 1<<10), copyBufSize))
}

// wait waits until the schedule allows the next write; it returns false
// if ctx ended first.
func (p *benchPacer) wait(ctx context.Context) bool {
	if p == nil {
		return ctx.Err() == nil
	}
	now := time.Now()
	if d := p.next.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
		now = time.Now()
	}
	if floor := now.Add(-benchBurst); p.next.Before(floor) {
		p.next = floor
	}
	return ctx.Err() == nil
}

// sent moves the schedule on by n bytes.
func (p *benchPacer) sent(n int) {
	if p != nil {
		p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	}
}

// benchSend writes to s, paced to rate, until stop ends (or the write
// deadline passes), then half-closes s and waits, up to benchDrain, until
// the peer's application has read everything. doing names the stream in
// errors.
func benchSend(stop context.Context, s *mux.Stream, rate uint64, f *sessionFlags, doing string) error {
	p := newBenchPacer(rate)
	buf := make([]byte, p.chunk())
	unblock := context.AfterFunc(stop, func() { s.SetWriteDeadline(time.Now()) })
	defer unblock()
	for p.wait(stop) {
		n, err := s.Write(buf)
		p.sent(n)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return f.describeSend(doing, err)
		}
	}
	if !unblock() {
		s.SetWriteDeadline(time.Time{})
	}
	s.CloseWrite()
	if err := benchDrain(s, f, doing); err != nil {
		return err
	}
	// The peer's direction carries nothing: read it to its end, so that
	// the stream retires and the session can end gracefully.
	s.SetReadDeadline(time.Now().Add(benchSetupTimeout))
	if _, err := io.Copy(io.Discard, onlyReader{s}); err != nil {
		return f.describe(doing+": waiting for the peer to end the stream", err)
	}
	return nil
}

// benchDrainTimeout bounds the wait for the peer to read what was sent
// once sending stopped.
const benchDrainTimeout = 30 * time.Second

// benchDrain waits until the peer's application has read all s carried.
func benchDrain(s *mux.Stream, f *sessionFlags, doing string) error {
	ctx, cancel := context.WithTimeout(context.Background(), benchDrainTimeout)
	defer cancel()
	if err := s.WaitConsumed(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: the peer did not read what was sent within %v", doing, benchDrainTimeout)
		}
		return f.describeSend(doing+": waiting for the peer to read", err)
	}
	return nil
}

// benchReceive reads s to its end, then ends this side's direction (which
// carries nothing).
func benchReceive(ctx context.Context, s *mux.Stream, f *sessionFlags, doing string) error {
	if _, err := copyData(ctx, io.Discard, s, 0); err != nil {
		return f.describe(doing, err)
	}
	s.CloseWrite()
	return nil
}
