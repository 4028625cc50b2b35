package interop

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// This file has the cases about flow control across the path: a stalled
// stream beside a moving one, a long RTT, goodput, and GOAWAY.

// runStall: the server stops reading one stream for a while. Its writer
// must hold at one window while a sibling stream keeps moving; once the
// reader resumes, everything arrives intact.
func runStall(ctx context.Context, e *Env) (string, error) {
	const window = 256 << 10
	fixed := &mux.Config{InitialWindow: window, MaxWindow: window}
	stop := make(chan struct{})
	srv, err := e.serve(ctx, fixed, func(sess *mux.Session, s *mux.Stream) error {
		if s.ID() == 1 { // the stalled stream waits until told
			select {
			case <-stop:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return sink(sess, s)
	})
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, fixed)
	if err != nil {
		return "", err
	}
	stalled, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	sibling, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	n := e.size(4<<20, 1<<20)
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- send(ctx, stalled, 3, n) }()
	siblingDone := make(chan error, 1)
	go func() { siblingDone <- send(ctx, sibling, 4, n) }()

	// While the reader is stopped the writer holds at one window, and the
	// sibling finishes.
	deadline := time.Now().Add(30 * time.Second)
	for stalled.Stats().SendCredit != 0 || stalled.Stats().BytesSent == 0 {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the stalled writer never ran out of credit: %+v", stalled.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-siblingDone; err != nil {
		return "", fmt.Errorf("sibling stream, while the other was stalled: %w", err)
	}
	held := stalled.Stats()
	if held.BytesSent > window {
		return "", fmt.Errorf("the stalled writer sent %d bytes, more than the window of %d", held.BytesSent, window)
	}
	ss := srv.session(0)
	if ss == nil {
		return "", errors.New("no server session")
	}
	// What the budget holds besides the windows: codecs and fixed memory.
	if st := ss.Stats(); st.WindowBytes() > 2*window {
		return "", fmt.Errorf("the server's windows hold %d bytes for two fixed windows of %d (budget used %d, codecs %d, fixed memory %d)",
			st.WindowBytes(), window, st.BudgetUsed, st.Compression.CodecMemory, st.Overhead)
	}
	close(stop)
	if err := <-stalledDone; err != nil {
		return "", fmt.Errorf("stalled stream, after resuming: %w", err)
	}
	st := stalled.Stats()
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return "", err
	}
	return fmt.Sprintf("the writer held at %d of a %d-byte window while its sibling moved %s; then %s intact; stalled %v in %d stalls",
		held.BytesSent, window, mib(n), mib(n), st.TimeStalled.Round(time.Millisecond), st.Stalls), srv.firstErr()
}

// runLongRTT: over a 750 ms RTT, one stream's windows grow to the
// bandwidth-delay product with no configuration.
func runLongRTT(ctx context.Context, e *Env) (string, error) {
	p := DefaultPath()
	rtt := 2 * 375 * time.Millisecond
	bdp := int(float64(p.Up.Rate) * rtt.Seconds())
	var peak atomic.Uint64
	srv, err := e.serve(ctx, nil, func(_ *mux.Session, s *mux.Stream) error {
		defer s.Close()
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for i := 0; ; i++ {
			n, err := s.Read(buf)
			h.Write(buf[:n])
			if w := s.Stats().RecvWindow; i%16 == 0 && w > peak.Load() {
				peak.Store(w) // only this goroutine writes it
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("server read: %w", err)
			}
		}
		if _, err := s.Write(h.Sum(nil)); err != nil {
			return err
		}
		return s.CloseWrite()
	})
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, nil)
	if err != nil {
		return "", err
	}
	n := e.size(12<<20, 6<<20)
	s, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := send(ctx, s, 5, n); err != nil {
		return "", err
	}
	took := time.Since(start)
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return "", err
	}
	if peak.Load() < uint64(bdp) {
		return "", fmt.Errorf("the window grew to %d bytes, below the BDP of %d (%s in %v)", peak.Load(), bdp, mib(n), took.Round(time.Millisecond))
	}
	return fmt.Sprintf("the window grew to %.2f MiB for a BDP of %.2f MiB; %s in %v (%.1f Mbit/s)",
		float64(peak.Load())/(1<<20), float64(bdp)/(1<<20), mib(n), took.Round(time.Millisecond), mbit(n, took)), srv.firstErr()
}

// runGoodput: 10 MB over 10 Mbit/s, five runs, each a fresh session.
func runGoodput(ctx context.Context, e *Env) (string, error) {
	srv, err := e.serve(ctx, nil, sink)
	if err != nil {
		return "", err
	}
	runs, n := e.size(5, 1), e.size(10_000_000, 2_000_000)
	var rates []time.Duration // kbit/s, as durations for meanSD
	for i := range runs {
		sess, err := e.Dial(ctx, srv.addr, nil)
		if err != nil {
			return "", err
		}
		s, err := sess.Open(ctx)
		if err != nil {
			return "", err
		}
		start := time.Now()
		if err := send(ctx, s, uint64(10+i), n); err != nil {
			return "", fmt.Errorf("run %d: %w", i+1, err)
		}
		rates = append(rates, time.Duration(mbit(n, time.Since(start))*1000))
		sess.Close()
	}
	mean, sd := meanSD(rates)
	return fmt.Sprintf("%d runs of %.0f MB: %.2f ± %.2f Mbit/s", runs, float64(n)/1e6, float64(mean)/1000, float64(sd)/1000), srv.firstErr()
}

// runGoAway: the server ends its session gracefully in the middle of a
// transfer; the transfer completes intact, new streams are refused, and
// both ends see a graceful end.
func runGoAway(ctx context.Context, e *Env) (string, error) {
	started := make(chan *mux.Session, 1)
	srv, err := e.serve(ctx, nil, func(sess *mux.Session, s *mux.Stream) error {
		select {
		case started <- sess:
		default:
		}
		return sink(sess, s)
	})
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, nil)
	if err != nil {
		return "", err
	}
	s, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	n := e.size(4<<20, 1<<20)
	done := make(chan error, 1)
	go func() { done <- send(ctx, s, 6, n) }()
	var ss *mux.Session
	select {
	case ss = <-started:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	for s.Stats().BytesSent < uint64(n/4) { // mid-transfer
		select {
		case err := <-done:
			return "", fmt.Errorf("the transfer ended before GOAWAY: %v", err)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	sentAt := s.Stats().BytesSent
	shut := make(chan error, 1)
	go func() { shut <- ss.Shutdown(ctx) }()
	if err := <-done; err != nil {
		return "", fmt.Errorf("the transfer under GOAWAY: %w", err)
	}
	if _, err := sess.Open(ctx); !errors.Is(err, mux.ErrGoAway) && !errors.Is(err, mux.ErrSessionClosed) {
		return "", fmt.Errorf("a new stream after GOAWAY: %v, want ErrGoAway", err)
	}
	if err := sess.Shutdown(ctx); err != nil {
		return "", fmt.Errorf("client shutdown: %w", err)
	}
	if err := <-shut; err != nil {
		return "", fmt.Errorf("server shutdown: %w", err)
	}
	if st := sess.Stats(); st.CloseCode != uint64(framing.NoError) {
		return "", fmt.Errorf("client session closed with %v", framing.ErrorCode(st.CloseCode))
	}
	return fmt.Sprintf("GOAWAY at %s of %s; all of it arrived, new streams refused, both ends shut down gracefully", mib(int(sentAt)), mib(n)), srv.firstErr()
}
