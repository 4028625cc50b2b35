package window

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// t0 is the fake time base: nothing in this package reads the clock.
var t0 = time.Unix(1000, 0)

const (
	kib = 1 << 10
	mib = 1 << 20
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func newReceiver(t *testing.T, cfg Config, b *Budget, now time.Time) *Receiver {
	t.Helper()
	r, err := NewReceiver(cfg, b, now)
	require.NoError(t, err)
	return r
}

// checkReceiver asserts the per-stream invariants of a live receiver.
func checkReceiver(t *testing.T, r *Receiver) {
	t.Helper()
	require.LessOrEqual(t, r.Consumed(), r.Received(), "consumed <= received")
	require.LessOrEqual(t, r.Received(), r.Limit(), "received <= limit")
	require.GreaterOrEqual(t, r.Window(), r.cfg.Initial, "window >= Initial")
	require.LessOrEqual(t, r.Window(), r.cfg.Max, "window <= Max")
	require.GreaterOrEqual(t, r.Reserved(), r.needed(r.Window()), "reservation covers max(limit-consumed, window, bufCap)")
	require.LessOrEqual(t, r.Buffered(), r.Reserved(), "buffered <= reserved")
}

// round makes the peer send all its credit, delivers it, lets d pass and
// has the application read everything, applying any update to the peer.
// It returns the time after the round.
func round(t *testing.T, r *Receiver, s *Sender, now time.Time, d time.Duration) time.Time {
	t.Helper()
	n := s.Available()
	require.NoError(t, s.OnSent(n))
	require.NoError(t, r.OnData(n))
	now = now.Add(d)
	if l, ok := r.OnConsumed(r.Buffered(), now); ok {
		s.OnUpdate(l)
	}
	checkReceiver(t, r)
	return now
}

// growTo pumps fast rounds until the window reaches w.
func growTo(t *testing.T, r *Receiver, s *Sender, now time.Time, w uint64) time.Time {
	t.Helper()
	for i := 0; i < 64 && r.Window() < w; i++ {
		now = round(t, r, s, now, ms(1))
	}
	require.Equal(t, w, r.Window())
	return now
}

func TestNewReceiver(t *testing.T) {
	b := NewBudget(mib)
	r := newReceiver(t, Config{Initial: 64 * kib, Max: 256 * kib}, b, t0)
	assert.Equal(t, uint64(64*kib), r.Limit())
	assert.Equal(t, uint64(64*kib), r.Window())
	assert.Equal(t, uint64(64*kib), r.Reserved())
	assert.Equal(t, uint64(64*kib), r.BufferSize())
	assert.Zero(t, r.Received())
	assert.Zero(t, r.Consumed())
	assert.Zero(t, r.Buffered())
	assert.Equal(t, uint64(64*kib), b.Used())
	assert.Equal(t, uint64(mib), b.Total())
}

func TestNewReceiverInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Initial: 0, Max: 10},
		{Initial: 0, Max: 0},
		{Initial: 10, Max: 9},
	} {
		b := NewBudget(mib)
		r, err := NewReceiver(cfg, b, t0)
		assert.Error(t, err, "%+v", cfg)
		assert.False(t, errors.Is(err, ErrBudgetExhausted), "%+v", cfg)
		assert.Nil(t, r)
		assert.Zero(t, b.Used(), "an invalid config reserves nothing")
	}
	// Max == Initial is a valid fixed window.
	r := newReceiver(t, Config{Initial: 10, Max: 10}, NewBudget(10), t0)
	assert.Equal(t, uint64(10), r.Window())
}

func TestOnData(t *testing.T) {
	const initial = 64 * kib
	tests := []struct {
		name    string
		before  []uint64 // accepted data before the case
		n       uint64
		wantErr bool
	}{
		{"zero", nil, 0, false},
		{"zero at limit", []uint64{initial}, 0, false},
		{"one", nil, 1, false},
		{"exactly the limit", nil, initial, false},
		{"exactly the rest", []uint64{1000}, initial - 1000, false},
		{"one past the limit", nil, initial + 1, true},
		{"one past the rest", []uint64{1000}, initial - 999, true},
		{"any byte when at limit", []uint64{initial}, 1, true},
		{"max uint64", nil, math.MaxUint64, true},
		{"max uint64 after data", []uint64{10}, math.MaxUint64, true},
		// received+n wraps to 4, far below the limit.
		{"wraps to small offset", []uint64{10}, math.MaxUint64 - 5, true},
		{"wraps to zero", []uint64{100}, math.MaxUint64 - 99, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, Config{Initial: initial, Max: 4 * initial}, NewBudget(mib), t0)
			for _, n := range tc.before {
				require.NoError(t, r.OnData(n))
			}
			before := *r
			err := r.OnData(tc.n)
			if tc.wantErr {
				require.Error(t, err)
				assert.True(t, errors.Is(err, ErrFlowControl), "%v", err)
				assert.Equal(t, before, *r, "a rejected frame changes nothing")
			} else {
				require.NoError(t, err)
				assert.Equal(t, before.received+tc.n, r.Received())
				assert.Equal(t, before.limit, r.Limit())
			}
			checkReceiver(t, r)
		})
	}
}

func TestOnConsumedPastBufferedPanics(t *testing.T) {
	r := newReceiver(t, Config{Initial: 100, Max: 100}, NewBudget(100), t0)
	require.NoError(t, r.OnData(10))
	assert.Panics(t, func() { r.OnConsumed(11, t0) })
	assert.Panics(t, func() { r.OnConsumed(math.MaxUint64, t0) })
	assert.NotPanics(t, func() { r.OnConsumed(10, t0) })
	assert.Equal(t, uint64(10), r.Consumed())
}

func TestUpdateThreshold(t *testing.T) {
	type step struct {
		consume   uint64
		wantOK    bool
		wantLimit uint64 // Limit() after the step
	}
	tests := []struct {
		name   string
		window uint64
		steps  []step
	}{
		{"64KiB", 64 * kib, []step{
			{0, false, 64 * kib},
			{16*kib - 1, false, 64 * kib},
			{1, true, 16*kib + 64*kib},
			{1, false, 80 * kib},
			{16*kib - 2, false, 80 * kib},
			{1, true, 32*kib + 64*kib},
			{32 * kib, true, 64*kib + 64*kib},
		}},
		{"window not a multiple of 4", 10, []step{
			{1, false, 10},
			{1, true, 12}, // a quarter of 10 is 2
			{1, false, 12},
			{7, true, 20},
		}},
		{"window below 4: every read updates", 3, []step{
			{0, false, 3}, // nothing read: nothing to grant
			{1, true, 4},
			{2, true, 6},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, Config{Initial: tc.window, Max: tc.window}, NewBudget(mib), t0)
			require.NoError(t, r.OnData(r.Limit()))
			last := r.Limit()
			for i, st := range tc.steps {
				if st.consume > r.Buffered() {
					require.NoError(t, r.OnData(r.Limit()-r.Received()))
				}
				limit, ok := r.OnConsumed(st.consume, t0)
				require.Equal(t, st.wantOK, ok, "step %d", i)
				if ok {
					require.Equal(t, r.Limit(), limit, "step %d: returned limit is the new limit", i)
					require.Equal(t, r.Consumed()+r.Window(), limit, "step %d: limit = consumed + window", i)
				} else {
					require.Zero(t, limit, "step %d", i)
				}
				require.Equal(t, st.wantLimit, r.Limit(), "step %d", i)
				require.GreaterOrEqual(t, r.Limit(), last, "step %d: limit never decreases", i)
				last = r.Limit()
				checkReceiver(t, r)
			}
		})
	}
}

func TestAutoTuneQuarters(t *testing.T) {
	// The peer sends a full window at once; the application reads it a
	// quarter at a time, every perQuarter. At 3/4 of the window (the first
	// update past half), the epoch is judged: it grows if 3*perQuarter <
	// 4 * RTT * 3/4, i.e. perQuarter < RTT.
	tests := []struct {
		name       string
		rtt        time.Duration
		perQuarter time.Duration
		want       uint64
	}{
		{"instant", ms(10), 0, 128 * kib},
		{"fast", ms(10), ms(1), 128 * kib},
		{"just under", ms(10), ms(10) - 1, 128 * kib},
		{"exactly at the bound", ms(10), ms(10), 64 * kib},
		{"reader limited", ms(10), ms(50), 64 * kib},
		{"no RTT: no time based growth", 0, 0, 64 * kib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(mib)
			r := newReceiver(t, Config{Initial: 64 * kib, Max: mib}, b, t0)
			r.SetRTT(tc.rtt)
			require.NoError(t, r.OnData(64*kib))
			now := t0
			for q := 1; q <= 3; q++ {
				now = now.Add(tc.perQuarter)
				limit, ok := r.OnConsumed(16*kib, now)
				require.True(t, ok, "quarter %d", q)
				require.Equal(t, uint64(q)*16*kib+r.Window(), limit)
				if q < 3 {
					require.Equal(t, uint64(64*kib), r.Window(), "no judgement before half the window")
				}
			}
			assert.Equal(t, tc.want, r.Window())
			assert.Equal(t, r.Reserved(), b.Used())
			checkReceiver(t, r)
		})
	}
}

func TestAutoTuneRounds(t *testing.T) {
	tests := []struct {
		name    string
		rtt     time.Duration
		perRead time.Duration // time to read each full window
		rounds  int
		max     uint64
		want    []uint64 // window after each round
	}{
		{"doubles to Max and stops", ms(10), ms(1), 5, 256 * kib,
			[]uint64{128 * kib, 256 * kib, 256 * kib, 256 * kib, 256 * kib}},
		{"Max not a power of two", ms(10), ms(1), 4, 200 * kib,
			[]uint64{128 * kib, 200 * kib, 200 * kib, 200 * kib}},
		{"fixed window", ms(10), ms(1), 3, 64 * kib,
			[]uint64{64 * kib, 64 * kib, 64 * kib}},
		{"just under 4 RTT", ms(10), ms(40) - 1, 3, mib,
			[]uint64{128 * kib, 256 * kib, 512 * kib}},
		{"4 RTT", ms(10), ms(40), 3, mib,
			[]uint64{64 * kib, 64 * kib, 64 * kib}},
		{"slow reader", ms(10), ms(500), 5, mib,
			[]uint64{64 * kib, 64 * kib, 64 * kib, 64 * kib, 64 * kib}},
		{"RTT 0", 0, 0, 5, mib,
			[]uint64{64 * kib, 64 * kib, 64 * kib, 64 * kib, 64 * kib}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(16 * mib)
			r := newReceiver(t, Config{Initial: 64 * kib, Max: tc.max}, b, t0)
			r.SetRTT(tc.rtt)
			s := NewSender(64 * kib)
			now := t0
			for i := 0; i < tc.rounds; i++ {
				now = round(t, r, &s, now, tc.perRead)
				require.Equal(t, tc.want[i], r.Window(), "round %d", i)
				require.Equal(t, r.Consumed()+r.Window(), s.Max(), "round %d: peer holds the new grant", i)
				require.Equal(t, r.Reserved(), b.Used())
			}
		})
	}
}

func TestAutoTuneClippedByBudget(t *testing.T) {
	const initial = 64 * kib
	tests := []struct {
		name  string
		total uint64
		want  []uint64 // window after each fast round
	}{
		// 20000 free: 64Ki+20000 = 85536, rounded down to a page: 81920.
		// Then 3616 are left: rounding would lose all of it, so the window
		// takes it unrounded. Then nothing is left.
		{"partial growth rounded to pages", initial + 20000,
			[]uint64{81920, 85536, 85536}},
		{"page multiple", initial + 8*kib, []uint64{72 * kib, 72 * kib}},
		{"less than a page", initial + 100, []uint64{initial + 100, initial + 100}},
		{"no room: never below current", initial, []uint64{initial, initial, initial}},
		{"room for full growth", 4 * initial, []uint64{2 * initial, 4 * initial, 4 * initial}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(tc.total)
			r := newReceiver(t, Config{Initial: initial, Max: 64 * initial}, b, t0)
			r.SetRTT(ms(10))
			s := NewSender(initial)
			now := t0
			for i, w := range tc.want {
				now = round(t, r, &s, now, ms(1))
				require.Equal(t, w, r.Window(), "round %d", i)
				require.Equal(t, r.Reserved(), b.Used())
				require.LessOrEqual(t, b.Used(), b.Total())
				require.Equal(t, w, r.Reserved(), "an empty buffer reserves exactly the window")
			}
		})
	}
}

func TestAutoTuneEpochFromCreation(t *testing.T) {
	// The first epoch starts when the receiver is created, so a stream that
	// waits before its data comes is judged on the time since creation.
	r := newReceiver(t, Config{Initial: 64 * kib, Max: mib}, NewBudget(4*mib), t0)
	r.SetRTT(ms(10))
	require.NoError(t, r.OnData(64*kib))
	r.OnConsumed(64*kib, t0.Add(time.Second))
	assert.Equal(t, uint64(64*kib), r.Window(), "slow first epoch")
	// The epoch restarted at the judgement: the next fast window grows.
	require.NoError(t, r.OnData(64*kib))
	r.OnConsumed(64*kib, t0.Add(time.Second+ms(1)))
	assert.Equal(t, uint64(128*kib), r.Window())
}

func TestOnBlocked(t *testing.T) {
	const initial = 64 * kib
	// advance receives and reads a whole initial window, so that the
	// receiver grants a second one: a BLOCKED at initial is then stale.
	advance := func(t *testing.T, r *Receiver) {
		require.NoError(t, r.OnData(initial))
		_, ok := r.OnConsumed(initial, t0.Add(ms(100))) // slow: no growth
		require.True(t, ok)
		require.Equal(t, uint64(2*initial), r.Limit())
	}
	tests := []struct {
		name      string
		max       uint64
		total     uint64
		setup     func(t *testing.T, r *Receiver)
		blockedAt uint64
		wantOK    bool
		wantLimit uint64 // returned limit when ok
		wantWin   uint64
	}{
		{"never reached: ignored", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			require.NoError(t, r.OnData(10*kib))
		}, initial, false, 0, initial},
		{"above limit: ignored", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			require.NoError(t, r.OnData(initial))
		}, initial + 1, false, 0, initial},
		{"at limit, nothing read: nothing to grant", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			require.NoError(t, r.OnData(initial))
		}, initial, false, 0, initial},
		{"at limit, reader freed a little: granted at once, no growth", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			require.NoError(t, r.OnData(initial))
			_, ok := r.OnConsumed(10*kib, t0)
			require.False(t, ok, "below the update threshold")
		}, initial, true, 10*kib + initial, initial},
		{"ran dry before the update: reader keeps up, grows and grants", 4 * initial, mib, advance,
			initial, true, initial + 2*initial, 2 * initial},
		{"ran dry, reader a quarter behind: grows", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			advance(t, r)
			require.NoError(t, r.OnData(initial/4))
		}, initial, true, initial + 2*initial, 2 * initial},
		{"ran dry, reader more than a quarter behind: no growth", 4 * initial, mib, func(t *testing.T, r *Receiver) {
			advance(t, r)
			require.NoError(t, r.OnData(initial/2))
		}, initial, false, 0, initial},
		{"ran dry at Max: nothing more to grant", initial, mib, advance,
			initial, false, 0, initial},
		{"ran dry, budget allows 8 KiB more", 4 * initial, initial + 8*kib, advance,
			initial, true, initial + initial + 8*kib, initial + 8*kib},
		{"ran dry, budget full", 4 * initial, initial, advance,
			initial, false, 0, initial},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(tc.total)
			r := newReceiver(t, Config{Initial: initial, Max: tc.max}, b, t0)
			r.SetRTT(ms(10))
			tc.setup(t, r)
			oldLimit := r.Limit()
			before := *r
			limit, ok := r.OnBlocked(tc.blockedAt, t0.Add(ms(200)))
			require.Equal(t, tc.wantOK, ok)
			if ok {
				assert.Equal(t, tc.wantLimit, limit)
				assert.Equal(t, limit, r.Limit())
				assert.Greater(t, limit, oldLimit, "a grant on BLOCKED raises the limit")
			} else {
				assert.Zero(t, limit)
				assert.Equal(t, oldLimit, r.Limit())
				assert.Equal(t, before.window, r.Window())
			}
			assert.Equal(t, tc.wantWin, r.Window())
			assert.Equal(t, r.Reserved(), b.Used())
			assert.LessOrEqual(t, b.Used(), b.Total())
			checkReceiver(t, r)
		})
	}
}

func TestOnBlockedRepeated(t *testing.T) {
	// A peer repeating a stale BLOCKED grows the window at most to Max, and
	// only for a limit it really reached by sending data.
	const initial = 64 * kib
	r := newReceiver(t, Config{Initial: initial, Max: 4 * initial}, NewBudget(4*mib), t0)
	require.NoError(t, r.OnData(initial))
	_, ok := r.OnConsumed(initial, t0.Add(ms(100)))
	require.True(t, ok)
	for i := 0; i < 10; i++ {
		r.OnBlocked(initial, t0.Add(ms(200)))
	}
	require.Equal(t, uint64(4*initial), r.Window())
	_, ok = r.OnBlocked(initial, t0.Add(ms(200)))
	require.False(t, ok, "nothing more to grant")
}

func TestOnTickIdleShrink(t *testing.T) {
	const (
		initial = 64 * kib
		idle    = time.Second
	)
	b := NewBudget(4 * mib)
	r := newReceiver(t, Config{Initial: initial, Max: 512 * kib, IdleAfter: idle}, b, t0)
	r.SetRTT(ms(10))
	s := NewSender(initial)
	now := growTo(t, r, &s, t0, 512*kib)
	lastRead := now

	// The peer fills the whole grant; the application stops reading.
	require.NoError(t, s.OnSent(s.Available()))
	require.NoError(t, r.OnData(s.Sent()-r.Received()))
	require.Equal(t, uint64(512*kib), r.Buffered())

	assert.False(t, r.OnTick(lastRead.Add(idle-1)), "not idle long enough")
	assert.Equal(t, uint64(512*kib), r.Window())
	assert.True(t, r.OnTick(lastRead.Add(idle)))
	assert.Equal(t, uint64(initial), r.Window())
	assert.False(t, r.OnTick(lastRead.Add(2*idle)), "already at Initial")
	now = lastRead.Add(2 * idle)

	// The grant is outstanding: the reservation still covers it.
	limit := r.Limit()
	assert.Equal(t, uint64(512*kib), r.Reserved())
	assert.Equal(t, r.Reserved(), b.Used())
	checkReceiver(t, r)

	// As the application reads, the reservation drains with the old grant,
	// and the limit does not move (nor go down) until a quarter of the new
	// window is free beyond it.
	for r.Buffered() > 0 {
		n := min(uint64(4*kib), r.Buffered())
		now = now.Add(ms(100)) // slow: no regrowth
		l, ok := r.OnConsumed(n, now)
		if ok {
			require.Greater(t, l, limit)
			require.Equal(t, r.Consumed()+initial, l)
			require.GreaterOrEqual(t, r.Consumed()+initial-limit, uint64(initial/4))
			limit = l
			require.True(t, s.OnUpdate(l))
		} else {
			require.Equal(t, limit, r.Limit())
		}
		require.Equal(t, max(r.Limit()-r.Consumed(), uint64(initial)), r.Reserved())
		require.Equal(t, r.Reserved(), b.Used())
		checkReceiver(t, r)
	}
	assert.Equal(t, uint64(initial), r.Reserved(), "growth returned to the budget")
	assert.Equal(t, uint64(initial), b.Used())
}

// Regression: after an idle shrink, limit-consumed exceeds the window. The
// first read used to compute consumed+window-limit with wraparound, declare
// an update due and grant a limit below the peer's, after which
// limit-received wrapped as well and OnData accepted any amount of data.
func TestOnTickShrinkNeverLowersLimit(t *testing.T) {
	const initial = 16 * kib
	b := NewBudget(mib)
	r := newReceiver(t, Config{Initial: initial, Max: 64 * kib, IdleAfter: time.Second}, b, t0)
	r.SetRTT(ms(10))
	s := NewSender(initial)
	now := growTo(t, r, &s, t0, 64*kib)

	require.NoError(t, s.OnSent(s.Available()))
	half := (s.Sent() - r.Received()) / 2
	require.NoError(t, r.OnData(half)) // the rest is in flight
	now = now.Add(2 * time.Second)
	require.True(t, r.OnTick(now))

	oldLimit := r.Limit()
	l, ok := r.OnConsumed(1, now)
	assert.False(t, ok, "nothing to grant: the outstanding grant exceeds the new window")
	assert.Zero(t, l)
	assert.Equal(t, oldLimit, r.Limit())

	// The in-flight data, within the peer's credit, is accepted...
	require.NoError(t, r.OnData(s.Sent()-r.Received()))
	// ...and nothing past it.
	err := r.OnData(1)
	require.True(t, errors.Is(err, ErrFlowControl), "%v", err)
	err = r.OnData(math.MaxUint64)
	require.True(t, errors.Is(err, ErrFlowControl), "%v", err)
	checkReceiver(t, r)
	assert.Equal(t, r.Reserved(), b.Used())
}

func TestOnTickNoShrink(t *testing.T) {
	const initial = 64 * kib
	tests := []struct {
		name      string
		idleAfter time.Duration
		grow      bool
		buffered  uint64
		elapsed   time.Duration
	}{
		{"buffer empty", time.Second, true, 0, time.Hour},
		{"disabled", 0, true, kib, time.Hour},
		{"at Initial already", time.Second, false, kib, time.Hour},
		{"not idle long enough", time.Second, true, kib, time.Second - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(4 * mib)
			r := newReceiver(t, Config{Initial: initial, Max: 256 * kib, IdleAfter: tc.idleAfter}, b, t0)
			r.SetRTT(ms(10))
			s := NewSender(initial)
			now := t0
			if tc.grow {
				now = growTo(t, r, &s, now, 256*kib)
			}
			require.NoError(t, s.OnSent(tc.buffered))
			require.NoError(t, r.OnData(tc.buffered))
			before := *r
			assert.False(t, r.OnTick(now.Add(tc.elapsed)))
			assert.Equal(t, before, *r, "nothing changes")
		})
	}
}

func TestOnTickReadResetsIdle(t *testing.T) {
	r := newReceiver(t, Config{Initial: 64 * kib, Max: 256 * kib, IdleAfter: time.Second}, NewBudget(mib), t0)
	r.SetRTT(ms(10))
	s := NewSender(64 * kib)
	now := growTo(t, r, &s, t0, 256*kib)
	require.NoError(t, s.OnSent(s.Available()))
	require.NoError(t, r.OnData(s.Sent()-r.Received()))
	// A small read (no update due) still counts as the application reading.
	now = now.Add(ms(900))
	_, ok := r.OnConsumed(1, now)
	require.False(t, ok)
	assert.False(t, r.OnTick(now.Add(ms(999))))
	assert.True(t, r.OnTick(now.Add(time.Second)))
}

func TestBudgetRefusesStream(t *testing.T) {
	b := NewBudget(100 * kib)
	cfg := Config{Initial: 64 * kib, Max: 64 * kib}
	r1 := newReceiver(t, cfg, b, t0)
	r2, err := NewReceiver(cfg, b, t0)
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrBudgetExhausted), "%v", err)
	assert.False(t, errors.Is(err, ErrFlowControl))
	assert.Nil(t, r2)
	assert.Equal(t, uint64(64*kib), b.Used(), "a refused stream reserves nothing")

	// A smaller stream still fits exactly.
	r3 := newReceiver(t, Config{Initial: 36 * kib, Max: 36 * kib}, b, t0)
	assert.Equal(t, b.Total(), b.Used())
	_, err = NewReceiver(Config{Initial: 1, Max: 1}, b, t0)
	assert.True(t, errors.Is(err, ErrBudgetExhausted))

	r1.Close()
	assert.Equal(t, uint64(36*kib), b.Used())
	r2 = newReceiver(t, cfg, b, t0)
	r2.Close()
	r3.Close()
	assert.Zero(t, b.Used())
}

// TestOverhead: a stream's Overhead is taken with its initial window, a
// stream refused for it takes nothing, growth never uses it, and Close
// gives it back once.
func TestOverhead(t *testing.T) {
	b := NewBudget(100 * kib)
	cfg := Config{Initial: 32 * kib, Max: 256 * kib, Overhead: 8 * kib}
	r1 := newReceiver(t, cfg, b, t0)
	assert.Equal(t, uint64(40*kib), b.Used())
	assert.Equal(t, uint64(32*kib), r1.Reserved(), "Reserved is the window's alone")
	r2 := newReceiver(t, cfg, b, t0)
	assert.Equal(t, uint64(80*kib), b.Used())
	_, err := NewReceiver(Config{Initial: 16 * kib, Max: 16 * kib, Overhead: 8 * kib}, b, t0)
	assert.ErrorIs(t, err, ErrBudgetExhausted, "20 KiB free, 24 KiB needed")
	assert.Equal(t, uint64(80*kib), b.Used(), "a refused stream takes nothing")

	// Growth takes only what is free after the overheads.
	r1.SetRTT(ms(10))
	s := NewSender(32 * kib)
	now := t0
	for range 4 {
		now = round(t, r1, &s, now, ms(1))
	}
	assert.Equal(t, uint64(52*kib), r1.Reserved(), "32 KiB plus the 20 KiB free")
	assert.Equal(t, b.Total(), b.Used())

	r1.Close()
	assert.Equal(t, uint64(40*kib), b.Used())
	r1.Close()
	assert.Equal(t, uint64(40*kib), b.Used(), "a second Close gives back nothing")
	r2.Close()
	assert.Zero(t, b.Used())
}

func TestCloseReleasesEverything(t *testing.T) {
	b := NewBudget(4 * mib)
	cfg := Config{Initial: 64 * kib, Max: mib, IdleAfter: time.Second}
	var rs []*Receiver
	now := t0
	for i := 0; i < 4; i++ {
		r := newReceiver(t, cfg, b, now)
		r.SetRTT(ms(10))
		s := NewSender(64 * kib)
		for j := 0; j < i; j++ { // grow some of them
			now = round(t, r, &s, now, ms(1))
		}
		// Leave data buffered and a large buffer capacity.
		n := s.Available() / 2
		require.NoError(t, s.OnSent(n))
		require.NoError(t, r.OnData(n))
		r.SetBufferCap(max(r.Window(), r.BufferSize()))
		rs = append(rs, r)
	}
	var sum uint64
	for _, r := range rs {
		sum += r.Reserved()
	}
	require.Equal(t, sum, b.Used())
	for i, r := range rs {
		sum -= r.Reserved()
		r.Close()
		assert.Zero(t, r.Reserved())
		assert.Equal(t, sum, b.Used(), "after closing %d", i)
	}
	assert.Zero(t, b.Used())
	rs[0].Close() // a second Close releases nothing
	assert.Zero(t, b.Used())
}

func TestSetBufferCap(t *testing.T) {
	const initial = 64 * kib
	b := NewBudget(mib)
	r := newReceiver(t, Config{Initial: initial, Max: 256 * kib, IdleAfter: time.Second}, b, t0)
	r.SetRTT(ms(10))

	steps := []struct {
		cap  uint64
		want uint64 // Reserved()
	}{
		{0, initial},
		{initial / 2, initial},
		{initial, initial},
		{0, initial},
	}
	for i, st := range steps {
		r.SetBufferCap(st.cap)
		require.Equal(t, st.want, r.Reserved(), "step %d", i)
		require.Equal(t, r.Reserved(), b.Used())
	}

	// After an idle shrink the buffer may legitimately be as large as the
	// outstanding grant (BufferSize > Window); the reservation covers it
	// until the buffer is shrunk, even once the data has been read.
	s := NewSender(initial)
	now := growTo(t, r, &s, t0, 256*kib)
	require.NoError(t, s.OnSent(s.Available()))
	require.NoError(t, r.OnData(s.Sent()-r.Received()))
	r.SetBufferCap(256 * kib)
	now = now.Add(2 * time.Second)
	require.True(t, r.OnTick(now))
	require.Equal(t, uint64(initial), r.Window())
	require.Equal(t, uint64(256*kib), r.BufferSize())
	require.Equal(t, uint64(256*kib), r.Reserved())

	now = now.Add(time.Second) // slow read: no regrowth
	_, ok := r.OnConsumed(r.Buffered(), now)
	require.True(t, ok)
	require.Equal(t, uint64(initial), r.Window())
	require.Equal(t, uint64(initial), r.BufferSize())
	assert.Equal(t, uint64(256*kib), r.Reserved(), "the buffer still holds its memory")
	assert.Equal(t, r.Reserved(), b.Used())

	// Shrinking the buffer returns memory. (100 KiB is above
	// max(Window(), BufferSize()), which the doc of SetBufferCap forbids,
	// but a buffer that shrinks lazily passes through such sizes; any
	// value <= Reserved() is safe.)
	r.SetBufferCap(100 * kib)
	assert.Equal(t, uint64(100*kib), r.Reserved())
	r.SetBufferCap(0)
	assert.Equal(t, uint64(initial), r.Reserved())
	assert.Equal(t, r.Reserved(), b.Used())
	checkReceiver(t, r)
}

func TestBudgetReleasePastUsedPanics(t *testing.T) {
	b := NewBudget(10)
	require.True(t, b.reserveExactly(5))
	assert.Panics(t, func() { b.release(6) })
	assert.Equal(t, uint64(5), b.Used())
	assert.False(t, b.reserveExactly(6))
	assert.Equal(t, uint64(5), b.reserveUpTo(100))
	assert.Equal(t, uint64(0), b.reserveUpTo(1))
	assert.Equal(t, uint64(10), b.Used())
}

func TestBudgetConcurrent(t *testing.T) {
	// Streams of one session are driven by different goroutines; only the
	// Budget is shared. Run under -race.
	b := NewBudget(16 * 64 * kib)
	cfg := Config{Initial: 64 * kib, Max: 256 * kib, IdleAfter: time.Second}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := t0
			for i := 0; i < 200; i++ {
				r, err := NewReceiver(cfg, b, now)
				if err != nil {
					if !errors.Is(err, ErrBudgetExhausted) {
						t.Error(err)
						return
					}
					continue
				}
				r.SetRTT(ms(10))
				s := NewSender(cfg.Initial)
				for j := 0; j < 4; j++ {
					n := s.Available()
					_ = s.OnSent(n)
					if err := r.OnData(n); err != nil {
						t.Error(err)
					}
					now = now.Add(ms(1))
					if l, ok := r.OnConsumed(r.Buffered(), now); ok {
						s.OnUpdate(l)
					}
				}
				r.Close()
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, b.Used())
}

func TestSender(t *testing.T) {
	s := NewSender(100)
	assert.Equal(t, uint64(100), s.Available())
	assert.Equal(t, uint64(100), s.Max())
	assert.Zero(t, s.Sent())

	l, send := s.Blocked()
	assert.False(t, send, "credit left: not blocked")
	assert.Zero(t, l)

	require.NoError(t, s.OnSent(0))
	require.NoError(t, s.OnSent(60))
	assert.Equal(t, uint64(40), s.Available())

	for _, n := range []uint64{41, math.MaxUint64, math.MaxUint64 - 59} {
		before := s
		err := s.OnSent(n)
		require.Error(t, err, "n=%d", n)
		assert.True(t, errors.Is(err, ErrFlowControl), "%v", err)
		assert.Equal(t, before, s, "a refused send changes nothing")
	}
	require.NoError(t, s.OnSent(40))
	assert.Zero(t, s.Available())
	assert.Equal(t, uint64(100), s.Sent())

	l, send = s.Blocked()
	assert.True(t, send)
	assert.Equal(t, uint64(100), l)
	for i := 0; i < 3; i++ {
		_, send = s.Blocked()
		assert.False(t, send, "BLOCKED once per limit")
	}

	// Non-increasing updates are ignored and keep the blocked state.
	for _, m := range []uint64{0, 50, 99, 100} {
		assert.False(t, s.OnUpdate(m), "update %d", m)
		assert.Equal(t, uint64(100), s.Max())
		_, send = s.Blocked()
		assert.False(t, send)
	}

	assert.True(t, s.OnUpdate(150))
	assert.Equal(t, uint64(50), s.Available())
	_, send = s.Blocked()
	assert.False(t, send, "credit again")
	assert.False(t, s.OnUpdate(120), "stale update after a newer one")
	assert.Equal(t, uint64(150), s.Max())

	require.NoError(t, s.OnSent(50))
	l, send = s.Blocked()
	assert.True(t, send, "a new limit exhausted: BLOCKED again")
	assert.Equal(t, uint64(150), l)
	_, send = s.Blocked()
	assert.False(t, send)

	// An update arriving after BLOCKED and exhausted at once blocks again.
	assert.True(t, s.OnUpdate(151))
	require.NoError(t, s.OnSent(1))
	l, send = s.Blocked()
	assert.True(t, send)
	assert.Equal(t, uint64(151), l)

	// Huge limits do not wrap.
	assert.True(t, s.OnUpdate(math.MaxUint64))
	assert.Equal(t, uint64(math.MaxUint64-151), s.Available())
	require.NoError(t, s.OnSent(s.Available()))
	assert.True(t, errors.Is(s.OnSent(1), ErrFlowControl))
}

func TestSenderZeroInitial(t *testing.T) {
	s := NewSender(0)
	assert.Zero(t, s.Available())
	require.NoError(t, s.OnSent(0))
	assert.True(t, errors.Is(s.OnSent(1), ErrFlowControl))
	l, send := s.Blocked()
	assert.True(t, send)
	assert.Zero(t, l)
	_, send = s.Blocked()
	assert.False(t, send)
	assert.False(t, s.OnUpdate(0))
	assert.True(t, s.OnUpdate(1))
}
