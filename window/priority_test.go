package window

import (
	"math"
	"testing"
	"time"
)

func TestBudgetPriority(t *testing.T) {
	tests := []struct {
		urgency uint8
		p       uint8
		share   uint64 // of a 1 MiB budget
	}{
		{0, 255, mib},
		{1, 223, 7 * mib / 8},
		{2, 191, 6 * mib / 8},
		{3, 159, 5 * mib / 8},
		{4, 127, 4 * mib / 8},
		{5, 95, 3 * mib / 8},
		{6, 63, 2 * mib / 8},
		{7, 31, 1 * mib / 8},
		{8, 31, 1 * mib / 8}, // past 7 counts as 7
		{255, 31, 1 * mib / 8},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.p, BudgetPriority(tc.urgency), "urgency %d", tc.urgency)
		assert.Equal(t, tc.share, Share(mib, tc.urgency), "urgency %d", tc.urgency)
		assert.Equal(t, tc.share, NewBudget(mib).Share(tc.urgency), "urgency %d", tc.urgency)
	}
	assert.Equal(t, DefaultUrgency, uint8(3))
}

func TestShareRoundsDownWithoutOverflow(t *testing.T) {
	tests := []struct {
		total   uint64
		urgency uint8
		want    uint64
	}{
		{0, 0, 0},
		{1, 0, 1},
		{1, 1, 0}, // 1·224/256
		{1000, 0, 1000},
		{1000, 3, 625}, // 1000·160/256 = 625
		{1000, 7, 125}, // 1000·32/256
		{1001, 7, 125}, // 1001·32/256 = 125.125
		{1023, 1, 895}, // 1023·224/256 = 895.125
		{255, 4, 127},  // 255·128/256 = 127.5
		{257, 6, 64},   // 257·64/256 = 64.25
		{math.MaxUint64, 0, math.MaxUint64},
		{math.MaxUint64, 4, math.MaxUint64 / 2}, // (2^64-1)·128/256
		{math.MaxUint64, 7, math.MaxUint64 / 8}, // (2^64-1)·32/256
		{math.MaxUint64, 1, 7<<61 - 1},          // 7·2^61 - 7/8, rounded down
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, Share(tc.total, tc.urgency), "Share(%d, %d)", tc.total, tc.urgency)
	}
}

func TestNewReceiverUrgency(t *testing.T) {
	b := NewBudget(mib)
	for u := uint8(0); u <= LeastUrgent; u++ {
		r := newReceiver(t, Config{Initial: 64 * kib, Max: mib, Urgency: u}, b, t0)
		assert.Equal(t, u, r.Urgency())
		r.Close()
	}
	_, err := NewReceiver(Config{Initial: 64 * kib, Max: mib, Urgency: 8}, b, t0)
	require.Error(t, err)
	assert.Zero(t, b.Used(), "an invalid config reserves nothing")

	r := newReceiver(t, Config{Initial: 64 * kib, Max: mib}, b, t0)
	assert.Equal(t, MostUrgent, r.Urgency(), "the zero Config is urgency 0")
	r.SetUrgency(DefaultUrgency)
	assert.Equal(t, DefaultUrgency, r.Urgency())
	r.SetUrgency(9)
	assert.Equal(t, LeastUrgent, r.Urgency(), "past 7 counts as 7")
}

// TestGrowthByUrgencyAlone: one stream alone on a 1 MiB budget grows by
// fast rounds (64 KiB doubling toward a 1 MiB Max) until the session uses
// its urgency's share, (8-u)/8 of the budget, and no further.
func TestGrowthByUrgencyAlone(t *testing.T) {
	const initial = 64 * kib
	tests := []struct {
		urgency uint8
		want    []uint64 // window after each fast round
		// counts after the rounds
		refusals, priorityRefusals uint64
		refused, priorityRefused   uint64
	}{
		{0, []uint64{128 * kib, 256 * kib, 512 * kib, mib, mib}, 0, 0, 0, 0},
		// 896 KiB share: from 512 KiB, 384 of the 512 KiB wanted. Then the
		// share is used up: 128 KiB more wanted and refused, though free.
		{1, []uint64{128 * kib, 256 * kib, 512 * kib, 896 * kib, 896 * kib}, 2, 2, 128 * kib, 128 * kib},
		{3, []uint64{128 * kib, 256 * kib, 512 * kib, 640 * kib, 640 * kib}, 2, 2, 384 * kib, 384 * kib},
		{4, []uint64{128 * kib, 256 * kib, 512 * kib, 512 * kib, 512 * kib}, 2, 2, 512 * kib, 512 * kib},
		{6, []uint64{128 * kib, 256 * kib, 256 * kib, 256 * kib, 256 * kib}, 3, 3, 256 * kib, 256 * kib},
		{7, []uint64{128 * kib, 128 * kib, 128 * kib, 128 * kib, 128 * kib}, 4, 4, 128 * kib, 128 * kib},
	}
	for _, tc := range tests {
		t.Run(string(rune('0'+tc.urgency)), func(t *testing.T) {
			b := NewBudget(mib)
			r := newReceiver(t, Config{Initial: initial, Max: mib, Urgency: tc.urgency}, b, t0)
			r.SetRTT(ms(10))
			s := NewSender(initial)
			now := t0
			for i, w := range tc.want {
				now = round(t, r, &s, now, ms(1))
				require.Equal(t, w, r.Window(), "round %d", i)
				require.Equal(t, w, b.Used(), "round %d: an empty buffer reserves exactly the window", i)
				require.LessOrEqual(t, b.Used(), b.Share(tc.urgency), "round %d", i)
			}
			c := r.Counts()
			assert.Equal(t, tc.refusals, c.Refusals, "refusals")
			assert.Equal(t, tc.priorityRefusals, c.PriorityRefusals, "priority refusals")
			assert.Equal(t, tc.refused, c.Refused, "refused")
			assert.Equal(t, tc.priorityRefused, c.PriorityRefused, "priority refused")
			assert.Equal(t, tc.urgency != 0, r.BudgetLimited(), "a refusal for priority is the budget's limit")
		})
	}
}

// TestGrowthUnderPressureByUrgency: streams of different urgencies share a
// tight budget, each doing one fast round in turn. The less urgent stop
// growing first while the more urgent keep growing; floors are kept.
func TestGrowthUnderPressureByUrgency(t *testing.T) {
	const initial = 64 * kib
	type want struct {
		windows                    []uint64 // after each round
		refusals, priorityRefusals uint64
		refused, priorityRefused   uint64
	}
	tests := []struct {
		name      string
		total     uint64
		urgencies []uint8
		want      []want // per stream
	}{
		{
			// 512 KiB: the two floors (128 KiB) already exceed urgency 7's
			// share (64 KiB), so the low stream never grows: refused for
			// priority while the budget has room, then for want of room.
			// The urgent one grows until the budget is full: 128, 256,
			// then 192 of the 256 KiB more it wants, then 0 of 448.
			name:      "least urgent never grows",
			total:     8 * initial,
			urgencies: []uint8{7, 0},
			want: []want{
				{[]uint64{initial, initial, initial, initial}, 4, 3, initial, initial},
				{[]uint64{128 * kib, 256 * kib, 448 * kib, 448 * kib}, 2, 0, 448 * kib, 0},
			},
		},
		{
			// 1 MiB, urgent first then default (5/8 = 640 KiB share).
			// Round 1: 0 to 128 (used 192), 3 to 128 (used 256).
			// Round 2: 0 to 256 (used 384); 3 wants 128 more and the share
			// has 256: 256 (used 512).
			// Round 3: 0 to 512 (used 768); 3 wants 256, used is past its
			// share: refused for priority with 256 KiB free.
			// Round 4: 0 wants 512 more, 256 are free: 768 (used 1 MiB);
			// 3 wants 256 and none are free: refused, not for priority.
			name:      "default stops before urgent",
			total:     mib,
			urgencies: []uint8{0, 3},
			want: []want{
				{[]uint64{128 * kib, 256 * kib, 512 * kib, 768 * kib}, 1, 0, 256 * kib, 0},
				{[]uint64{128 * kib, 256 * kib, 256 * kib, 256 * kib}, 2, 1, 256 * kib, 256 * kib},
			},
		},
		{
			// The same streams, the default one going first in each round:
			// the order of arrival does not let it take the urgent one's
			// part. Round 1: 3 to 128 (used 192), 0 to 128 (256).
			// Round 2: 3 to 256 (384), 0 to 256 (512).
			// Round 3: 3 wants 256 more, its share allows 128 of the 512
			// free: 384 (used 640); 0 to 512 (896).
			// Round 4: 3 wants 384 more (to 768), its share is used up:
			// refused, 128 of them for priority (the 128 still free);
			// 0 wants 512, 128 are free: 640.
			name:      "default first stops before urgent",
			total:     mib,
			urgencies: []uint8{3, 0},
			want: []want{
				{[]uint64{128 * kib, 256 * kib, 384 * kib, 384 * kib}, 2, 2, 384 * kib, 128 * kib},
				{[]uint64{128 * kib, 256 * kib, 512 * kib, 640 * kib}, 1, 0, 384 * kib, 0},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(tc.total)
			rs := make([]*Receiver, len(tc.urgencies))
			ss := make([]Sender, len(tc.urgencies))
			for i, u := range tc.urgencies {
				rs[i] = newReceiver(t, Config{Initial: initial, Max: 16 * initial, Urgency: u}, b, t0)
				rs[i].SetRTT(ms(10))
				ss[i] = NewSender(initial)
			}
			now := t0
			for round_ := range tc.want[0].windows {
				now = now.Add(ms(1))
				var sum uint64
				for i, r := range rs {
					round(t, r, &ss[i], now, ms(1))
					sum += r.Reserved()
				}
				now = now.Add(ms(1))
				for i, r := range rs {
					require.Equal(t, tc.want[i].windows[round_], r.Window(), "round %d, stream %d", round_, i)
					require.GreaterOrEqual(t, r.Window(), uint64(initial), "floors are kept")
				}
				require.Equal(t, sum, b.Used())
				require.LessOrEqual(t, b.Used(), b.Total())
			}
			for i, r := range rs {
				c := r.Counts()
				w := tc.want[i]
				assert.Equal(t, w.refusals, c.Refusals, "stream %d refusals", i)
				assert.Equal(t, w.priorityRefusals, c.PriorityRefusals, "stream %d priority refusals", i)
				assert.Equal(t, w.refused, c.Refused, "stream %d refused", i)
				assert.Equal(t, w.priorityRefused, c.PriorityRefused, "stream %d priority refused", i)
			}
		})
	}
}

// TestFloorsIgnoreUrgency: a new stream of the least urgency gets its
// floor as long as the budget has it, however far past its share the
// session is.
func TestFloorsIgnoreUrgency(t *testing.T) {
	const initial = 64 * kib
	b := NewBudget(8 * initial)
	var rs []*Receiver
	for i := 0; i < 8; i++ {
		rs = append(rs, newReceiver(t, Config{Initial: initial, Max: mib, Urgency: LeastUrgent}, b, t0))
	}
	assert.Equal(t, b.Total(), b.Used())
	_, err := NewReceiver(Config{Initial: initial, Max: mib, Urgency: MostUrgent}, b, t0)
	require.ErrorIs(t, err, ErrBudgetExhausted, "and urgency does not create budget")
	for _, r := range rs {
		r.Close()
	}
	assert.Zero(t, b.Used())
}

// TestSetUrgencyKeepsWhatWasGranted: lowering a stream's urgency stops its
// growth but takes nothing back; raising it again lets it grow.
func TestSetUrgencyKeepsWhatWasGranted(t *testing.T) {
	const initial = 64 * kib
	b := NewBudget(mib)
	r := newReceiver(t, Config{Initial: initial, Max: mib, IdleAfter: time.Second}, b, t0)
	r.SetRTT(ms(10))
	s := NewSender(initial)
	now := growTo(t, r, &s, t0, 256*kib)

	r.SetUrgency(LeastUrgent) // share 128 KiB, used 256 KiB
	for i := 0; i < 3; i++ {
		now = round(t, r, &s, now, ms(1))
		require.Equal(t, uint64(256*kib), r.Window(), "round %d: nothing taken back", i)
		require.Equal(t, uint64(256*kib), b.Used())
	}
	c := r.Counts()
	assert.Equal(t, uint64(3), c.PriorityRefusals)
	assert.Equal(t, uint64(256*kib), c.PriorityRefused)
	assert.True(t, r.BudgetLimited())

	// An idle shrink returns growth to the budget whatever the urgency.
	require.NoError(t, s.OnSent(1))
	require.NoError(t, r.OnData(1))
	require.True(t, r.OnTick(now.Add(time.Hour)))

	r.SetUrgency(MostUrgent)
	now = now.Add(time.Hour)
	r.OnConsumed(1, now)
	growTo(t, r, &s, now, mib)
	assert.Equal(t, uint64(mib), b.Used())
	assert.Equal(t, uint64(3), r.Counts().PriorityRefusals, "no new priority refusal")
}

// TestOnBlockedGrowthByUrgency: growth on a BLOCKED obeys the share too,
// and the BLOCKED still gets what the reader freed.
func TestOnBlockedGrowthByUrgency(t *testing.T) {
	const initial = 64 * kib
	tests := []struct {
		urgency uint8
		window  uint64
		limit   uint64
	}{
		// Budget 512 KiB; urgency 0 may double to 128 KiB: consumed
		// 56 KiB + 128 KiB.
		{MostUrgent, 128 * kib, 56*kib + 128*kib},
		// Urgency 7's share is 64 KiB, all used by the floor: the window
		// stays, and the BLOCKED gets 56 KiB + 64 KiB.
		{LeastUrgent, initial, 56*kib + initial},
	}
	for _, tc := range tests {
		b := NewBudget(8 * initial)
		r := newReceiver(t, Config{Initial: initial, Max: mib, Urgency: tc.urgency}, b, t0)
		// The peer sends its whole initial window and the reader takes
		// 48 KiB: an update to 112 KiB goes out (no RTT known, so no
		// growth) and crosses the peer's BLOCKED at 64 KiB. The reader
		// takes 8 KiB more, not enough for another update.
		require.NoError(t, r.OnData(initial))
		l, ok := r.OnConsumed(48*kib, t0.Add(ms(1)))
		require.True(t, ok)
		require.Equal(t, uint64(112*kib), l)
		_, ok = r.OnConsumed(8*kib, t0.Add(ms(2)))
		require.False(t, ok)

		l, ok = r.OnBlocked(initial, t0.Add(ms(2)))
		require.True(t, ok, "urgency %d", tc.urgency)
		assert.Equal(t, tc.window, r.Window(), "urgency %d", tc.urgency)
		assert.Equal(t, tc.limit, l, "urgency %d", tc.urgency)
		c := r.Counts()
		if tc.urgency == LeastUrgent {
			assert.Equal(t, uint64(1), c.PriorityRefusals)
			assert.Equal(t, uint64(initial), c.PriorityRefused)
		} else {
			assert.Zero(t, c.Refusals)
		}
		checkReceiver(t, r)
	}
}
