package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bpmux/bp/mux"
)

// viewInterval is how often the view samples the counters and refreshes
// the live line on a terminal; a non-terminal gets a line every
// nonTTYEvery samples.
const (
	viewInterval = 250 * time.Millisecond
	nonTTYEvery  = 4
)

// view is the live window view: a line on stderr refreshed a few times a
// second while the transfer runs, and a one-line summary at the end.
type view struct {
	w      io.Writer
	tty    bool
	sample func() (mux.StreamStats, bool) // the stream's counters; false: none yet
	start  time.Time

	live bool

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards peakLag
	peakLag uint64     // the most ever seen in flight
}

// startView starts sampling the counters (sample returns them, or false
// if there are none yet) and, if live is set, shows them on w. The
// returned view's finish ends it.
func startView(w io.Writer, tty, live bool, sample func() (mux.StreamStats, bool)) *view {
	v := &view{w: w, tty: tty, live: live, sample: sample, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go v.loop()
	return v
}

// loop samples until finish, drawing the live line if asked to.
func (v *view) loop() {
	defer close(v.done)
	t := time.NewTicker(viewInterval)
	defer t.Stop()
	var prev mux.StreamStats
	prevT := time.Now()
	drawn := false
	for n := 1; ; n++ {
		select {
		case <-v.stop:
			if drawn && v.tty {
				fmt.Fprint(v.w, "\r\x1b[K")
			}
			return
		case now := <-t.C:
			st, ok := v.sample()
			if !ok {
				continue
			}
			v.notePeak(st.ConsumerLag)
			if !v.live || (!v.tty && n%nonTTYEvery != 0) {
				continue
			}
			line := v.line(st, prev, now.Sub(prevT).Seconds(), now.Sub(v.start))
			prev, prevT = st, now
			if v.tty {
				fmt.Fprintf(v.w, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(v.w, line)
			}
			drawn = true
		}
	}
}

func (v *view) notePeak(lag uint64) {
	v.mu.Lock()
	v.peakLag = max(v.peakLag, lag)
	v.mu.Unlock()
}

// line formats one refresh: the send side (rate, the window the peer
// granted, credit left, bytes in flight, stalls), then the receive side.
func (v *view) line(st, prev mux.StreamStats, dt float64, elapsed time.Duration) string {
	up := float64(st.BytesSent-prev.BytesSent) / dt
	down := float64(st.BytesConsumed-prev.BytesConsumed) / dt
	return fmt.Sprintf("%5.1fs  send %10s  peer window %9s  credit %9s  in flight %9s  stalls %d (%.1fs)  |  recv %10s  window %9s",
		elapsed.Seconds(), formatRate(up), formatSize(st.SendLimit-st.PeerConsumed), formatSize(st.SendCredit),
		formatSize(st.ConsumerLag), st.Stalls, st.TimeStalled.Seconds(), formatRate(down), formatSize(st.RecvWindow))
}

// finish stops the live view and, if summary is set, prints the summary
// line for the final counters.
func (v *view) finish(summary bool) {
	select {
	case <-v.stop:
	default:
		close(v.stop)
	}
	<-v.done
	if !summary {
		return
	}
	st, ok := v.sample()
	if !ok {
		return
	}
	v.notePeak(st.ConsumerLag)
	fmt.Fprintln(v.w, summaryLine(st, time.Since(v.start), v.peakLag))
}

// summaryLine describes a finished transfer in one line.
func summaryLine(st mux.StreamStats, elapsed time.Duration, peakLag uint64) string {
	secs := max(elapsed.Seconds(), 1e-9)
	return fmt.Sprintf("sent %s (%s), received %s (%s) in %.2fs; writer stalled %d times for %.2fs; at most %s in flight",
		formatSize(st.BytesSent), formatRate(float64(st.BytesSent)/secs),
		formatSize(st.BytesConsumed), formatRate(float64(st.BytesConsumed)/secs),
		elapsed.Seconds(), st.Stalls, st.TimeStalled.Seconds(), formatSize(peakLag))
}
