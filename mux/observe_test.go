package mux

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eventLog collects the events of a session, for tests.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) hook(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// of returns the events of kind k (any kind if k is 0) on stream id (any
// stream if id is 0).
func (l *eventLog) of(k EventKind, id uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, ev := range l.evs {
		if (k == 0 || ev.Kind == k) && (id == 0 || ev.Stream == id) {
			out = append(out, ev)
		}
	}
	return out
}

// withReason returns the events of reason r.
func withReason(evs []Event, r BlockReason) []Event {
	var out []Event
	for _, ev := range evs {
		if ev.Reason == r {
			out = append(out, ev)
		}
	}
	return out
}

// sendingReasons are the reasons a writer can be blocked for.
var sendingReasons = []BlockReason{ReasonPeerWindow, ReasonSessionBudget, ReasonTransport}

// TestLevelFor is the threshold rule, with its hysteresis, as a table.
func TestLevelFor(t *testing.T) {
	th := Thresholds{LagWarning: 100, LagCritical: 200}
	cases := []struct {
		cur  Level
		v    uint64
		want Level
	}{
		{LevelNormal, 0, LevelNormal},
		{LevelNormal, 99, LevelNormal},
		{LevelNormal, 100, LevelWarning},
		{LevelNormal, 200, LevelCritical},
		{LevelWarning, 76, LevelWarning}, // within the quarter below the level: stays
		{LevelWarning, 74, LevelNormal},  // below three quarters: leaves
		{LevelCritical, 151, LevelCritical},
		{LevelCritical, 149, LevelWarning},
		{LevelCritical, 74, LevelNormal},
		{LevelWarning, 199, LevelWarning},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, th.levelFor(MetricLag, c.cur, c.v), "from %v at %d", c.cur, c.v)
	}
	// A metric with only a critical level set.
	crit := Thresholds{UnreadCritical: 1000}
	assert.Equal(t, LevelNormal, crit.levelFor(MetricUnread, LevelNormal, 999))
	assert.Equal(t, LevelCritical, crit.levelFor(MetricUnread, LevelNormal, 1000))
	assert.Equal(t, LevelCritical, crit.levelFor(MetricUnread, LevelCritical, 800))
	assert.Equal(t, LevelNormal, crit.levelFor(MetricUnread, LevelCritical, 700))
	assert.Equal(t, LevelNormal, Thresholds{}.levelFor(MetricStall, LevelNormal, 1<<40))
}

func TestThresholdsValidate(t *testing.T) {
	for _, th := range []Thresholds{
		{LagWarning: 10, LagCritical: 5},
		{UnreadWarning: 10, UnreadCritical: 5},
		{StallWarning: time.Second, StallCritical: time.Millisecond},
		{StallWarning: -1},
	} {
		assert.Error(t, (&Config{Thresholds: th}).Validate(), "%+v", th)
	}
	assert.NoError(t, (&Config{Thresholds: Thresholds{LagCritical: 5}}).Validate())
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, 100 * time.Microsecond, 101 * time.Microsecond, time.Millisecond, time.Hour} {
		h.Observe(d)
	}
	bounds := HistogramBounds()
	assert.Equal(t, uint64(5), h.Count)
	assert.Equal(t, time.Hour, h.Max)
	assert.Equal(t, uint64(2), h.Buckets[0], "0 and 100µs are <= the first bound")
	assert.Equal(t, uint64(1), h.Buckets[1], "101µs")
	assert.Equal(t, uint64(1), h.Buckets[4], "1ms is <= 1.6ms, above 800µs")
	assert.Equal(t, uint64(1), h.Buckets[HistogramBuckets], "an hour overflows %v", bounds[HistogramBuckets-1])
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	assert.Equal(t, 2*h.Count, m.Count)
	assert.Equal(t, h.Mean(), m.Mean())
}

// writeInBackground writes n bytes of a pattern on s in a goroutine, then
// closes its writing, and returns a channel with the first error.
func writeInBackground(s *Stream, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(s, newPattern(1), int64(n))
		if err == nil {
			err = s.CloseWrite()
		}
		done <- err
	}()
	return done
}

// readSlowly reads everything from s, chunk bytes every pause, and
// returns how much it read.
func readSlowly(t *testing.T, s *Stream, chunk int, pause time.Duration) int {
	t.Helper()
	buf := make([]byte, chunk)
	total := 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n, err := io.ReadFull(s, buf)
		total += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total
		}
		require.NoError(t, err)
		time.Sleep(pause)
	}
	t.Fatal("reader did not finish in time")
	return total
}

// TestBlockedPeerWindow: a reader that stops holds its writer at the
// window; the writer's time blocked for the peer's window grows, its
// other reasons do not, and every stall has its events and a signal
// latency.
func TestBlockedPeerWindow(t *testing.T) {
	const window = 64 << 10
	var clientLog, serverLog eventLog
	p := newPair(t,
		&Config{InitialWindow: window, MaxWindow: window, OnEvent: clientLog.hook},
		&Config{InitialWindow: window, MaxWindow: window, OnEvent: serverLog.hook})
	c, s := p.openPair(t)

	done := writeInBackground(c, 4*window)
	require.Eventually(t, func() bool { return c.Stats().Stalls > 0 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the reader has stopped
	_ = readSlowly(t, s, 32<<10, 0)
	require.NoError(t, <-done)

	st := c.Stats()
	pw := st.Blocked.Of(ReasonPeerWindow)
	require.GreaterOrEqual(t, pw.Time, 150*time.Millisecond, "the stop shows as peer-window time: %+v", st.Blocked)
	assert.Zero(t, st.Blocked.Of(ReasonSessionBudget), "no budget limit")
	assert.Less(t, st.Blocked.Of(ReasonTransport).Time, pw.Time/4, "the transport was not the bottleneck")
	assert.Equal(t, pw.Count, st.Stalls)
	assert.Equal(t, pw.Time, st.TimeStalled)

	// Every stall is a blocked/unblocked pair with its reason.
	blocked := withReason(clientLog.of(EventBlocked, c.ID()), ReasonPeerWindow)
	unblocked := withReason(clientLog.of(EventUnblocked, c.ID()), ReasonPeerWindow)
	require.Len(t, blocked, int(pw.Count))
	require.Len(t, unblocked, int(pw.Count))
	var sum time.Duration
	for i, ev := range unblocked {
		assert.Equal(t, ReasonPeerWindow, blocked[i].Reason)
		assert.Equal(t, ReasonPeerWindow, ev.Reason)
		assert.False(t, ev.Time.Before(blocked[i].Time))
		sum += ev.Duration
	}
	assert.Equal(t, pw.Time, sum, "the events' durations add up to the stats")

	// Signal latency: one per stall a WINDOW_UPDATE ended (the first may
	// end with the peer's SETTINGS instead), each no longer than its stall
	// plus the one-way delay, and the scheduler's delay in waking the
	// goroutines on both ends (a few ms on a busy 2-core machine: 0.43 ms
	// over once in CI).
	sl := st.SignalLatency
	signalled := 0
	for _, ev := range unblocked {
		if ev.Signal > 0 {
			signalled++
		}
		assert.LessOrEqual(t, ev.Signal, ev.Duration+p.client.rtt()+20*time.Millisecond)
	}
	require.Equal(t, uint64(signalled), sl.Count)
	require.GreaterOrEqual(t, signalled, int(pw.Count)-1)
	assert.Positive(t, sl.Max)
	assert.LessOrEqual(t, sl.Mean(), sl.Max)
	sess := p.client.Stats()
	assert.Equal(t, pw, sess.Blocked.Of(ReasonPeerWindow), "the session adds up its streams")
	assert.Equal(t, sl.Count, sess.SignalLatency.Count)

	// The receiver held the credit: its side shows unread time, and the
	// WINDOW_UPDATEs it sent after reads were timed.
	rs := s.Stats()
	assert.Positive(t, rs.Blocked.Of(ReasonUnread).Time)
	for _, r := range sendingReasons {
		assert.Zero(t, rs.Blocked.Of(r), "the receiver wrote nothing: %v", r)
	}
	assert.Positive(t, rs.UpdateDelay.Count)
	assert.Len(t, withReason(serverLog.of(EventUnblocked, s.ID()), ReasonUnread), int(rs.Blocked.Of(ReasonUnread).Count))
}

// TestBlockedSlowReader: an application that reads slowly keeps data
// unread: the receiver's unread time grows, and nothing on its sending
// side does.
func TestBlockedSlowReader(t *testing.T) {
	const window = 64 << 10
	cfg := &Config{InitialWindow: window, MaxWindow: window}
	p := newPair(t, cfg, cfg)
	c, s := p.openPair(t)
	done := writeInBackground(c, 8*window)
	n := readSlowly(t, s, 16<<10, 10*time.Millisecond)
	require.Equal(t, 8*window, n)
	require.NoError(t, <-done)

	rs := s.Stats()
	unread := rs.Blocked.Of(ReasonUnread)
	require.Positive(t, unread.Count)
	assert.GreaterOrEqual(t, unread.Time, 100*time.Millisecond, "32 reads 10 ms apart, most of it with the window full")
	for _, r := range sendingReasons {
		assert.Zero(t, rs.Blocked.Of(r), "%v", r)
	}
	// The writer saw the same stalls as the peer's window.
	cs := c.Stats()
	assert.Positive(t, cs.Blocked.Of(ReasonPeerWindow).Time)
	assert.Zero(t, cs.Blocked.Of(ReasonSessionBudget))
	assert.Zero(t, cs.Blocked.Of(ReasonUnread), "the writer read nothing")
}

// TestBlockedSessionBudget: a receiver whose reader keeps up but whose
// session budget cannot let the window grow says so in its updates; the
// writer's stalls are then the budget's, and its peer-window time stops
// growing.
func TestBlockedSessionBudget(t *testing.T) {
	const initial = DefaultInitialWindow
	var serverLog eventLog
	p := newPair(t, nil, &Config{InitialWindow: initial, MaxWindow: 1 << 20, SessionBudget: withOverhead(2*initial, 1), OnEvent: serverLog.hook})
	c, s := p.openPair(t)
	done := writeInBackground(c, 32<<20)

	// The reader keeps up; the window tries to grow past the budget.
	buf := make([]byte, 64<<10)
	read := func(n int) {
		for got := 0; got < n; {
			m, err := s.Read(buf)
			require.NoError(t, err)
			got += m
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().RecvWindow < 2*initial || p.server.Stats().BudgetRefusals == 0 {
		require.True(t, time.Now().Before(deadline), "the window never reached the budget: %+v", s.Stats())
		read(64 << 10)
	}
	read(1 << 20) // the flag is on the updates now
	before := c.Stats().Blocked
	read(4 << 20)
	after := c.Stats().Blocked
	grew := func(r BlockReason) Stall {
		return Stall{Count: after[r].Count - before[r].Count, Time: after[r].Time - before[r].Time}
	}
	require.Positive(t, grew(ReasonSessionBudget).Count, "stalls once the budget limits the window: %+v", after)
	// A reader that keeps up may still lag now and then (scheduling, the
	// race detector): such stalls are the peer window's, but few.
	assert.LessOrEqual(t, 4*grew(ReasonPeerWindow).Count, grew(ReasonSessionBudget).Count,
		"the stalls are the budget's, hardly the peer window's: %+v", after)
	assert.Positive(t, len(serverLog.of(EventBudgetRefused, s.ID())))
	assert.Positive(t, p.server.Stats().WindowGrowths)
	_, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	require.NoError(t, <-done)
}

// TestBlockedTransport: a peer that grants credit but stops reading its
// QUIC stream holds the writer inside the transport: the stream's
// transport time grows (live, while the write is held, and with an
// EventBlocked from housekeeping), its credit reasons do not.
func TestBlockedTransport(t *testing.T) {
	requireStack(t, "quic", "x/net/quic buffers 17 MiB of writes per lane, so a small QUIC window never holds a lane write")
	var log eventLog
	srv := newRawServer(t, &Config{DeadPeerTimeout: time.Second, OnEvent: log.hook}, transport.QUICConfig{})
	p := srv.dial(t, &quic.Config{InitialStreamReceiveWindow: 32 << 10, MaxStreamReceiveWindow: 32 << 10})
	p.settings(framing.Settings{InitialWindow: 16 << 20})
	l := p.openStream()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	s, err := p.sess.Accept(ctx)
	require.NoError(t, err)
	// The raw peer reads nothing from its QUIC stream from here on.
	done := writeInBackground(s, 4<<20)
	require.Eventually(t, func() bool {
		return s.Stats().Blocked.Of(ReasonTransport).Time > 300*time.Millisecond
	}, 10*time.Second, 10*time.Millisecond, "the held write counts while it lasts")
	require.Eventually(t, func() bool {
		for _, ev := range log.of(EventBlocked, s.ID()) {
			if ev.Reason == ReasonTransport {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "housekeeping reports the long stall live")
	st := s.Stats()
	assert.Zero(t, st.Blocked.Of(ReasonPeerWindow), "credit was plenty")
	assert.Zero(t, st.Blocked.Of(ReasonSessionBudget))
	require.NoError(t, s.Reset(framing.Cancel))
	require.Error(t, <-done)
	_ = l
}

// TestThresholdEvents: a writer whose reader stops crosses the lag and
// stall levels up, and back down once the reader drains everything.
func TestThresholdEvents(t *testing.T) {
	const window = 256 << 10
	var log eventLog
	th := Thresholds{LagWarning: 32 << 10, LagCritical: 128 << 10, StallWarning: 50 * time.Millisecond, StallCritical: 150 * time.Millisecond}
	p := newPair(t,
		&Config{InitialWindow: window, MaxWindow: window, Thresholds: th, DeadPeerTimeout: time.Second, OnEvent: log.hook},
		&Config{InitialWindow: window, MaxWindow: window, Thresholds: Thresholds{UnreadWarning: 64 << 10}})
	c, s := p.openPair(t)
	done := writeInBackground(c, 2*window)
	require.Eventually(t, func() bool { return c.Stats().Levels[MetricStall] == LevelCritical }, 10*time.Second, 10*time.Millisecond)
	st := c.Stats()
	assert.Equal(t, LevelCritical, st.Levels[MetricLag], "a whole window unread")
	assert.Equal(t, LevelCritical, st.Level)
	assert.Equal(t, LevelWarning, s.Stats().Levels[MetricUnread], "the receiver's own threshold")
	_ = readSlowly(t, s, 64<<10, 0)
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { return c.Stats().Level == LevelNormal }, 10*time.Second, 10*time.Millisecond,
		"everything consumed: back to normal")

	levels := map[Metric][]Level{}
	for _, ev := range log.of(EventThreshold, c.ID()) {
		levels[ev.Metric] = append(levels[ev.Metric], ev.Level)
	}
	assert.Equal(t, []Level{LevelWarning, LevelCritical}, levels[MetricLag][:2], "up in order")
	assert.Equal(t, LevelNormal, levels[MetricLag][len(levels[MetricLag])-1])
	assert.Equal(t, []Level{LevelWarning, LevelCritical}, levels[MetricStall][:2])
	assert.Equal(t, LevelNormal, levels[MetricStall][len(levels[MetricStall])-1])
	ss := p.client.Stats()
	assert.GreaterOrEqual(t, ss.ThresholdWarnings, uint64(2))
	assert.GreaterOrEqual(t, ss.ThresholdCriticals, uint64(2))
}

// TestLifecycleEvents: opening, resetting and retiring streams, GOAWAY,
// RTT samples and the session's end are all events.
func TestLifecycleEvents(t *testing.T) {
	var cl, sl eventLog
	p := newPair(t, &Config{OnEvent: cl.hook, DeadPeerTimeout: time.Second},
		&Config{OnEvent: sl.hook})
	c, s := p.openPair(t)
	require.NoError(t, c.Reset(framing.Cancel))
	require.Eventually(t, func() bool { return len(sl.of(EventStreamReset, s.ID())) > 0 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Close())
	require.Eventually(t, func() bool { return len(cl.of(EventRTT, 0)) > 0 }, 5*time.Second, 10*time.Millisecond, "keepalive PINGs measure the RTT")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.client.Shutdown(ctx))

	opened := cl.of(EventStreamOpened, c.ID())
	require.Len(t, opened, 1)
	assert.False(t, opened[0].Remote)
	sopened := sl.of(EventStreamOpened, s.ID())
	require.Len(t, sopened, 1)
	assert.True(t, sopened[0].Remote)
	reset := cl.of(EventStreamReset, c.ID())
	require.Len(t, reset, 2, "this side's RESET, then the peer's answering its STOP_SENDING")
	assert.Equal(t, uint64(framing.Cancel), reset[0].Code)
	assert.False(t, reset[0].Remote)
	assert.True(t, reset[1].Remote)
	assert.True(t, sl.of(EventStreamReset, s.ID())[0].Remote)
	assert.Len(t, cl.of(EventStreamClosed, c.ID()), 1)
	assert.Positive(t, len(cl.of(EventGoAway, 0)))
	require.Eventually(t, func() bool {
		evs := sl.of(EventGoAway, 0)
		return len(evs) > 0 && evs[0].Remote
	}, 5*time.Second, 5*time.Millisecond, "the server received it")
	end := cl.of(EventSessionClosed, 0)
	require.Len(t, end, 1)
	assert.Equal(t, uint64(framing.NoError), end[0].Code)
	all := cl.of(0, 0)
	assert.Equal(t, EventSessionClosed, all[len(all)-1].Kind, "the last event")
	assert.Positive(t, p.client.Stats().RTTSamples.Count)
	st := p.client.Stats()
	assert.True(t, st.Closed)
}

// TestSessionLogger: the session logs its opening and its end, at Warn
// for a peer that broke a limit, and nothing without a Logger.
func TestSessionLogger(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := newRawServer(t, &Config{Logger: logger, MaxUselessFramesPerSecond: 10}, transport.QUICConfig{})
	p := srv.dial(t, nil)
	p.settings(framing.Settings{})
	ping := rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypePing}})
	for range 50 {
		if p.writeControl(ping) != nil {
			break
		}
	}
	select {
	case <-p.sess.Done():
	case <-time.After(rawWait):
		t.Fatal("the flood did not close the session")
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	assert.Contains(t, out, "bp: session opened")
	assert.Contains(t, out, "level=WARN")
	assert.Contains(t, out, "code=ENHANCE_YOUR_CALM")
	assert.Contains(t, out, "the peer broke a limit")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
