package window

// Priority: under session-budget pressure, window growth is granted by
// urgency, in the manner of go-libp2p's resource manager, where a
// reservation at priority p succeeds only while
//
//	used + size <= limit·(1+p)/256.
//
// Here limit is the budget's total, used the sum of all reservations of
// the session (floors included), size the growth asked for, and p is
// derived from the stream's RFC 9218 urgency u by [BudgetPriority]:
//
//	p = 255 - 32·u, so the share (1+p)/256 = (8-u)/8
//
//	urgency  0     1      2     3      4    5      6     7
//	p        255   223    191   159    127  95     63    31
//	share    8/8   7/8    6/8   5/8    4/8  3/8    2/8   1/8
//
// The most urgent streams may grow into the whole budget; the least urgent
// stop growing once the session uses an eighth of it. As the session fills
// up, streams therefore stop growing from the least urgent up, and the
// part of the budget above a stream's share stays free for more urgent
// streams' growth. Floors (the initial window a stream gets on creation)
// and memory a stream holds by right (data within credit it was already
// granted) are never subject to priority, and nothing already granted is
// ever taken back: a stream whose urgency falls simply stops growing.
//
// Growth that the share cuts short is partial, as growth cut short by a
// full budget is: the stream takes what its share still allows.

// RFC 9218 urgencies.
const (
	// MostUrgent is urgency 0: growth may use the whole budget.
	MostUrgent uint8 = 0
	// DefaultUrgency is RFC 9218's default urgency, 3: growth may use
	// 5/8 of the budget.
	DefaultUrgency uint8 = 3
	// LeastUrgent is urgency 7: growth may use 1/8 of the budget.
	LeastUrgent uint8 = 7
)

// BudgetPriority maps an RFC 9218 urgency to the go-libp2p-style
// reservation priority p used against the budget: 255 - 32·urgency, so
// 0 → 255 (the whole budget) down to 7 → 31 (an eighth). Urgencies above
// 7 count as 7.
func BudgetPriority(urgency uint8) uint8 {
	return 255 - 32*min(urgency, LeastUrgent)
}

// Share returns how much of a budget of total bytes may be in use, floors
// included, for growth at urgency to be granted: total·(1+p)/256 with p
// from [BudgetPriority], rounded down. Share(total, MostUrgent) == total.
func Share(total uint64, urgency uint8) uint64 {
	p := uint64(BudgetPriority(urgency)) + 1
	// total·p/256 without overflow: split total into its 256ths and the rest.
	return total>>8*p + (total&0xff)*p>>8
}

// Urgency returns the stream's RFC 9218 urgency, 0 (most urgent) to 7.
func (r *Receiver) Urgency() uint8 { return r.urgency }

// SetUrgency changes the stream's urgency, which governs its growth from
// then on: the window it has, and the credit already granted, are kept.
// Urgencies above 7 count as 7 (the least urgent), as RFC 9218 asks of
// values it does not define.
func (r *Receiver) SetUrgency(u uint8) { r.urgency = min(u, LeastUrgent) }

// Share returns how much of the budget may be in use for growth at urgency
// to be granted: [Share] of the budget's total.
func (b *Budget) Share(urgency uint8) uint64 { return Share(b.total, urgency) }

// reserveUpToShare takes as much of n as is free within urgency's share of
// the budget. It returns how much it took, and how much it would have
// taken with no regard to urgency (min(n, free)): when free > got, the
// urgency is what refused the difference.
func (b *Budget) reserveUpToShare(n uint64, urgency uint8) (got, free uint64) {
	share := b.Share(urgency)
	b.lock()
	defer b.unlock()
	if b.used < b.total { // reserveAnyway may have taken used past total
		free = min(n, b.total-b.used)
	}
	if b.used < share {
		got = min(free, share-b.used)
	}
	b.used += got
	return got, free
}
