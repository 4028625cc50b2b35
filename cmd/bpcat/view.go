package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/mux"
)

// viewInterval is how often the view samples the counters and refreshes
// the live line on a terminal; a non-terminal gets a line every
// nonTTYEvery samples.
const (
	viewInterval = 250 * time.Millisecond
	nonTTYEvery  = 4
)

// viewConfig says where and how the view shows itself.
type viewConfig struct {
	w     io.Writer
	tty   bool       // w is a terminal: one line, refreshed in place
	live  bool       // show the live line (else only sample, for the summary)
	size  uint64     // bytes expected (pv -s), for percent and ETA; 0: unknown
	width func() int // w's width in columns; nil or 0: unknown (full detail)
}

// view is the live window view: on a terminal, one line on stderr
// refreshed in place a few times a second, fitted to the terminal's width;
// elsewhere, a line a second; and a summary at the end.
type view struct {
	viewConfig
	sample func() (mux.StreamStats, bool) // the stream's counters; false: none yet
	start  time.Time

	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex // serializes writes to w and to the terminal's other writers
	drawn bool       // the live line is on the terminal
}

// startView starts sampling the counters (sample returns them, or false if
// there are none yet) and, if cfg.live is set, shows them. The returned
// view's finish ends it.
func startView(cfg viewConfig, sample func() (mux.StreamStats, bool)) *view {
	v := &view{viewConfig: cfg, sample: sample, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go v.loop()
	return v
}

// loop refreshes the live line until finish.
func (v *view) loop() {
	defer close(v.done)
	if !v.live {
		<-v.stop
		return
	}
	t := time.NewTicker(viewInterval)
	defer t.Stop()
	var prev mux.StreamStats
	prevT := v.start
	for n := 1; ; n++ {
		select {
		case <-v.stop:
			v.clear()
			return
		case now := <-t.C:
			if !v.tty && n%nonTTYEvery != 0 {
				continue
			}
			st, ok := v.sample()
			if !ok {
				continue
			}
			width := 0
			if v.tty && v.width != nil {
				width = v.width()
			}
			line := v.line(st, prev, now.Sub(prevT).Seconds(), now.Sub(v.start), width)
			prev, prevT = st, now
			v.mu.Lock()
			if v.tty {
				// Back to the start of the line, the new line, and erase
				// what an older, longer one left: it never wraps.
				fmt.Fprintf(v.w, "\r%s\x1b[K", line)
				v.drawn = true
			} else {
				fmt.Fprintln(v.w, line)
			}
			v.mu.Unlock()
		}
	}
}

// clear erases the live line, if it is drawn.
func (v *view) clear() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearLocked()
}

func (v *view) clearLocked() {
	if v.drawn {
		fmt.Fprint(v.w, "\r\x1b[K")
		v.drawn = false
	}
}

// writer returns w wrapped so that each write first erases the live line:
// for received text going to the terminal the view is drawn on, so that
// the two never mix. The line comes back at the next refresh.
func (v *view) writer(w io.Writer) io.Writer { return &clearingWriter{v: v, w: w} }

type clearingWriter struct {
	v *view
	w io.Writer
}

func (c *clearingWriter) Write(p []byte) (int, error) {
	c.v.mu.Lock()
	defer c.v.mu.Unlock()
	c.v.clearLocked()
	return c.w.Write(p)
}

// line formats one refresh at most width-1 columns wide (0: no limit), in
// as much detail as fits: each direction that has carried data, with its
// bytes so far, its rate since the last refresh and, when the size is
// known, percent and ETA; then the window's state: for sending, the window
// the peer granted, the credit left of it, the bytes in flight (sent, not
// yet consumed by the peer's application: the window less the credit) and
// the writer's stalls; for receiving, the window this side grants. A
// stream at a threshold's level (--warn-lag and the like) is marked WARN
// or CRIT after the time, with the metrics at that level when there is
// room.
func (v *view) line(st, prev mux.StreamStats, dt float64, elapsed time.Duration, width int) string {
	dt = max(dt, 1e-9)
	up := float64(st.BytesSent-prev.BytesSent) / dt
	down := float64(st.BytesConsumed-prev.BytesConsumed) / dt
	sendProg, recvProg := "", ""
	if v.size > 0 {
		if st.BytesSent >= st.BytesConsumed {
			sendProg = progress(st.BytesSent, v.size, elapsed)
		} else {
			recvProg = progress(st.BytesConsumed, v.size, elapsed)
		}
	}
	sending, receiving := st.BytesSent > 0, st.BytesReceived > 0
	sendZ, recvZ := compressionTags(st)
	send := [...]string{
		fmt.Sprintf("send %10s %12s%s%s  peer window %10s  credit %10s  in flight %10s  stalls %d (%.1fs)",
			formatSize(st.BytesSent), formatRate(up), sendProg, sendZ, formatSize(st.SendLimit-st.PeerConsumed),
			formatSize(st.SendCredit), formatSize(st.ConsumerLag), st.Stalls, st.TimeStalled.Seconds()),
		fmt.Sprintf("send %s %s%s%s  credit %s of %s  stalls %d",
			formatSize(st.BytesSent), formatRate(up), sendProg, sendZ, formatSize(st.SendCredit), formatSize(st.SendLimit-st.PeerConsumed), st.Stalls),
		fmt.Sprintf("send %s %s%s%s  credit %s of %s",
			formatSize(st.BytesSent), formatRate(up), sendProg, sendZ, formatSize(st.SendCredit), formatSize(st.SendLimit-st.PeerConsumed)),
		fmt.Sprintf("send %s %s%s%s", formatSize(st.BytesSent), formatRate(up), sendProg, sendZ),
	}
	recv := [...]string{
		fmt.Sprintf("recv %10s %12s%s%s  window %10s", formatSize(st.BytesConsumed), formatRate(down), recvProg, recvZ, formatSize(st.RecvWindow)),
		fmt.Sprintf("recv %s %s%s%s  window %s", formatSize(st.BytesConsumed), formatRate(down), recvProg, recvZ, formatSize(st.RecvWindow)),
		fmt.Sprintf("recv %s %s%s%s", formatSize(st.BytesConsumed), formatRate(down), recvProg, recvZ),
	}
	head := fmt.Sprintf("%5.1fs  ", elapsed.Seconds())
	if !sending && !receiving {
		return fit(head+"waiting for data", width)
	}
	var line string
	for _, lv := range [][2]int{{0, 0}, {1, 0}, {1, 1}, {2, 1}, {3, 1}, {3, 2}} {
		var parts []string
		if sending {
			parts = append(parts, send[lv[0]])
		}
		if receiving {
			parts = append(parts, recv[lv[1]])
		}
		sep := "  |  "
		if lv[0] == 3 {
			sep = " | "
		}
		line = head + levelTag(st, lv[0] <= 1) + strings.Join(parts, sep)
		if width == 0 || utf8.RuneCountInString(line) < width {
			return line
		}
	}
	return fit(line, width)
}

// compressionTags say how much each direction's compression saves: "
// zstd 5.7x" for what this side sends with zstd (application bytes per
// byte on the wire), " z 4.1x" for what arrived compressed; "" for a
// direction that is not compressed.
func compressionTags(st mux.StreamStats) (send, recv string) {
	c := st.Compression
	if c.Codec != codec.None && c.FramesCompressed+c.FramesPlain > 0 {
		send = fmt.Sprintf(" %s %.1fx", c.Codec, mux.Ratio(st.BytesSent, c.WireBytesSent))
	}
	if c.FramesDecompressed > 0 {
		recv = fmt.Sprintf(" z %.1fx", mux.Ratio(st.BytesReceived, c.WireBytesReceived))
	}
	return send, recv
}

// levelTag marks a stream at a threshold's level: "WARN  " or "CRIT  ",
// or, if long, with the metrics at that level ("CRIT lag stall  "); ""
// for a stream at no level.
func levelTag(st mux.StreamStats, long bool) string {
	var tag string
	switch st.Level {
	case mux.LevelNormal:
		return ""
	case mux.LevelWarning:
		tag = "WARN"
	default:
		tag = "CRIT"
	}
	if long {
		for _, m := range []struct {
			metric mux.Metric
			name   string
		}{{mux.MetricLag, "lag"}, {mux.MetricUnread, "unread"}, {mux.MetricStall, "stall"}} {
			if st.Levels[m.metric] == st.Level {
				tag += " " + m.name
			}
		}
	}
	return tag + "  "
}

// fit cuts s to fewer than width columns (0: no limit), so that it never
// reaches the terminal's last column and wraps.
func fit(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) < width {
		return s
	}
	r := []rune(s)
	return string(r[:max(width-1, 0)])
}

// progress is " 42% ETA 0:07": the share of size done and the time left
// at the average rate so far.
func progress(done, size uint64, elapsed time.Duration) string {
	if done >= size {
		return " 100%"
	}
	pct := done * 100 / size
	if done == 0 || elapsed <= 0 {
		return fmt.Sprintf(" %3d%%", pct)
	}
	left := time.Duration(float64(size-done) / float64(done) * float64(elapsed))
	return fmt.Sprintf(" %3d%% ETA %s", pct, formatETA(left))
}

// formatETA writes d as m:ss or h:mm:ss.
func formatETA(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
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
	v.mu.Lock()
	fmt.Fprintln(v.w, summaryLine(st, time.Since(v.start)))
	v.mu.Unlock()
}

// summaryLine describes a finished transfer in one line: what moved each
// way, and for what was sent, how the window held the writer back and the
// most that was ever in flight (sent and not yet consumed).
func summaryLine(st mux.StreamStats, elapsed time.Duration) string {
	secs := max(elapsed.Seconds(), 1e-9)
	var parts []string
	if st.BytesSent > 0 || st.BytesReceived == 0 {
		parts = append(parts, fmt.Sprintf("sent %s (%s)", formatSize(st.BytesSent), formatRate(float64(st.BytesSent)/secs)))
	}
	if st.BytesReceived > 0 || st.BytesSent == 0 {
		parts = append(parts, fmt.Sprintf("received %s (%s)", formatSize(st.BytesConsumed), formatRate(float64(st.BytesConsumed)/secs)))
	}
	line := fmt.Sprintf("%s in %.2fs", strings.Join(parts, ", "), elapsed.Seconds())
	if st.BytesSent > 0 {
		line += fmt.Sprintf("; writer stalled %d times for %.2fs%s", st.Stalls, st.TimeStalled.Seconds(), budgetShare(st.Blocked))
		if tr := st.Blocked.Of(mux.ReasonTransport); tr.Count > 0 {
			line += fmt.Sprintf("; the transport held writes %d times for %.2fs", tr.Count, tr.Time.Seconds())
		}
		line += "; at most " + formatSize(st.PeakConsumerLag) + " in flight"
	}
	if c := st.Compression; c.FramesCompressed > 0 {
		line += fmt.Sprintf("; %s sent %s as %s (%.2fx)", c.Codec, formatSize(st.BytesSent), formatSize(c.WireBytesSent), mux.Ratio(st.BytesSent, c.WireBytesSent))
	}
	if c := st.Compression; c.FramesDecompressed > 0 {
		line += fmt.Sprintf("; received %s as %s compressed (%.2fx)", formatSize(st.BytesReceived), formatSize(c.WireBytesReceived), mux.Ratio(st.BytesReceived, c.WireBytesReceived))
	}
	return line
}

// budgetShare splits the writer's stalls for credit when some were the
// peer's session budget's rather than its window's (the usual case, which
// "writer stalled" already says): " (peer window 3.20s, peer's budget
// 0.70s)".
func budgetShare(b mux.Blocked) string {
	budget := b.Of(mux.ReasonSessionBudget)
	if budget.Count == 0 {
		return ""
	}
	return fmt.Sprintf(" (peer window %.2fs, peer's budget %.2fs)", b.Of(mux.ReasonPeerWindow).Time.Seconds(), budget.Time.Seconds())
}
