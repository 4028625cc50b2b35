// Package window is the flow-control logic of bp/1: receive-side accounting
// of one stream (what was granted, received and consumed), send-side credit,
// the rule for when a WINDOW_UPDATE is worth sending, auto-tuning of a
// stream's window toward its bandwidth-delay product, and the session
// budget that bounds the sum of all receive buffers, whose growth part is
// granted by stream urgency under pressure (priority.go).
//
// It is pure logic: no goroutines, no I/O, and no clock of its own. Every
// method that depends on time takes the current time as an argument, so
// tests drive it deterministically. Only [Budget] is safe for concurrent
// use; a [Receiver] or [Sender] belongs to one stream and is guarded by
// that stream's lock.
package window

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Errors returned by the accounting. Test with errors.Is.
var (
	// ErrFlowControl means the peer sent past the credit it was granted.
	ErrFlowControl = errors.New("flow control violation")
	// ErrBudgetExhausted means the session budget cannot give a new stream
	// its initial window; the stream must be refused.
	ErrBudgetExhausted = errors.New("session receive budget exhausted")
)

// Budget bounds the sum of the receive reservations of all streams of one
// session. A stream's reservation covers every byte the peer is allowed to
// make it buffer, and the memory its buffer really holds, so the session's
// receive buffering can never exceed the budget, whatever the peer does.
//
// Budget is safe for concurrent use. Its methods never block.
type Budget struct {
	mu    sync.Mutex // held only for arithmetic, never across I/O
	total uint64
	used  uint64
}

// NewBudget returns a budget of total bytes.
func NewBudget(total uint64) *Budget {
	return &Budget{total: total}
}

func (b *Budget) lock()   { b.mu.Lock() }
func (b *Budget) unlock() { b.mu.Unlock() }

// Total returns the size of the budget.
func (b *Budget) Total() uint64 { return b.total }

// Used returns the sum of all current reservations.
func (b *Budget) Used() uint64 {
	b.lock()
	defer b.unlock()
	return b.used
}

// reserveExactly takes n bytes if all of them are free.
func (b *Budget) reserveExactly(n uint64) bool {
	b.lock()
	defer b.unlock()
	if b.total-b.used < n {
		return false
	}
	b.used += n
	return true
}

// reserveUpTo takes as much of n as is free and returns how much it took.
func (b *Budget) reserveUpTo(n uint64) uint64 {
	b.lock()
	defer b.unlock()
	if b.used >= b.total { // reserveAnyway may have taken used past total
		return 0
	}
	n = min(n, b.total-b.used)
	b.used += n
	return n
}

// reserveAnyway takes n bytes even past the total. It serves memory the
// stream already holds by right (its buffer can only grow within credit it
// was granted), so it cannot push buffering past what was reserved before.
func (b *Budget) reserveAnyway(n uint64) {
	b.lock()
	defer b.unlock()
	b.used += n
}

func (b *Budget) release(n uint64) {
	b.lock()
	defer b.unlock()
	if n > b.used {
		panic(fmt.Sprintf("window: releasing %d bytes of a budget with %d used", n, b.used))
	}
	b.used -= n
}

// Config sets the window policy of a stream's receive side.
type Config struct {
	// Initial is the window every stream starts with, and the floor that
	// an idle stream shrinks back to. It is the SETTINGS_INITIAL_WINDOW
	// this endpoint announces.
	Initial uint64
	// Max is the largest window auto-tuning may grow to. Max == Initial
	// gives a fixed window.
	Max uint64
	// IdleAfter is how long a stream with unread data may go without a
	// read before its window shrinks back to Initial. Zero disables it.
	IdleAfter time.Duration
	// Urgency is the stream's RFC 9218 urgency, 0 (most urgent) to 7
	// (least urgent), which decides how much of the session budget its
	// growth beyond Initial may use (see [Share]); Initial itself is never
	// subject to it. The zero value is urgency 0, whose growth may use the
	// whole budget, first come first served: what a Config without an
	// urgency has always meant. A stream that follows RFC 9218's default
	// sets [DefaultUrgency]. [Receiver.SetUrgency] changes it later.
	Urgency uint8
	// Overhead is what the stream costs besides its receive buffer: its
	// state, its reader, the transport's stream. It is taken from the
	// budget with Initial, for the stream's whole life, so that the budget
	// bounds what the peer's streams make this side hold, not only what
	// they buffer. Zero: nothing.
	Overhead uint64
}

// UpdateFraction is the share of the window that must have been consumed
// since the last WINDOW_UPDATE before a new one is worth sending: a quarter.
const UpdateFraction = 4

// Receiver is the receive-side accounting of one stream:
//
//	consumed <= received <= limit
//
// limit is the highest offset granted to the peer, received the highest
// offset the peer sent, consumed what the application read. The stream
// holds a reservation in the session budget of at least
// max(limit-consumed, window, buffer capacity).
type Receiver struct {
	cfg    Config
	budget *Budget

	limit, received, consumed uint64
	window                    uint64
	bufCap                    uint64 // memory the stream's buffer holds
	reserved                  uint64
	overhead                  uint64 // cfg.Overhead while the stream lives; not in reserved

	rtt         time.Duration
	epochStart  time.Time
	epochOffset uint64
	lastRead    time.Time

	// budgetLimited: the last attempt to grow the window got less than it
	// wanted from the budget, and the window has not grown or shrunk since.
	budgetLimited bool
	urgency       uint8
	counts        Counts
}

// Counts are a Receiver's window-sizing events, ever.
type Counts struct {
	Growths uint64 // times the window grew
	Shrinks uint64 // times an idle stream's window shrank back to Initial
	// Refusals counts growth attempts the budget cut short, for any reason:
	// the budget was full, or the stream's urgency share of it was.
	Refusals uint64
	// Refused is the growth, in bytes, the latest refusal denied.
	Refused uint64
	// PriorityRefusals counts the refusals (a subset of Refusals) that the
	// stream's urgency caused: the budget had free bytes the stream wanted,
	// but using them would have taken the session past its urgency's share
	// (see [Share]), the part kept for more urgent streams.
	PriorityRefusals uint64
	// PriorityRefused is the growth, in bytes, that the latest priority
	// refusal denied although the budget had them free.
	PriorityRefused uint64
}

// NewReceiver returns the accounting of a new stream, with its initial
// window granted and reserved in budget. It returns ErrBudgetExhausted if
// the budget cannot cover the initial window: such a stream must be
// refused rather than given no credit.
func NewReceiver(cfg Config, budget *Budget, now time.Time) (*Receiver, error) {
	if cfg.Initial == 0 || cfg.Max < cfg.Initial {
		return nil, fmt.Errorf("window: invalid config: initial %d, max %d", cfg.Initial, cfg.Max)
	}
	if cfg.Urgency > LeastUrgent {
		return nil, fmt.Errorf("window: invalid config: urgency %d, want 0 to %d", cfg.Urgency, LeastUrgent)
	}
	if !budget.reserveExactly(cfg.Initial + cfg.Overhead) {
		return nil, fmt.Errorf("%w: %d of %d bytes in use, stream needs %d",
			ErrBudgetExhausted, budget.Used(), budget.Total(), cfg.Initial+cfg.Overhead)
	}
	return &Receiver{
		cfg:        cfg,
		budget:     budget,
		limit:      cfg.Initial,
		window:     cfg.Initial,
		reserved:   cfg.Initial,
		overhead:   cfg.Overhead,
		epochStart: now,
		lastRead:   now,
		urgency:    cfg.Urgency,
	}, nil
}

// Limit returns the highest offset granted to the peer.
func (r *Receiver) Limit() uint64 { return r.limit }

// Received returns the highest offset received.
func (r *Receiver) Received() uint64 { return r.received }

// Consumed returns the bytes the application has read.
func (r *Receiver) Consumed() uint64 { return r.consumed }

// Buffered returns the bytes received and not yet read.
func (r *Receiver) Buffered() uint64 { return r.received - r.consumed }

// Window returns the current window size.
func (r *Receiver) Window() uint64 { return r.window }

// BudgetLimited reports whether the budget, rather than the reader, is
// what limits the stream now: the window is smaller than auto-tuning
// wanted because the session budget refused the rest (set when a growth
// gets less than it asked for, cleared when the window next grows in full
// or shrinks), and the reader keeps up (at most a quarter of the window
// waits unread, the test OnBlocked uses to grow). The receiver tells its
// sender so (SPEC.md 5.2, BUDGET_LIMITED), and the sender's stalls are
// then the budget's; a reader that falls behind is never blamed on it.
func (r *Receiver) BudgetLimited() bool {
	return r.budgetLimited && r.Buffered() <= r.window/UpdateFraction
}

// Counts returns the receiver's window-sizing counts.
func (r *Receiver) Counts() Counts { return r.counts }

// Reserved returns the bytes this stream holds in the session budget.
func (r *Receiver) Reserved() uint64 { return r.reserved }

// BufferSize returns how large the stream's buffer must be to hold all the
// data the peer may send now: limit-consumed.
func (r *Receiver) BufferSize() uint64 { return r.limit - r.consumed }

// OnData records n bytes arriving from the peer. Data past the granted
// limit is a flow-control violation; the caller closes the session.
func (r *Receiver) OnData(n uint64) error {
	if n > r.limit-r.received {
		return fmt.Errorf("%w: %d bytes at offset %d exceed limit %d", ErrFlowControl, n, r.received, r.limit)
	}
	r.received += n
	return nil
}

// SetBufferCap records how much memory the stream's buffer holds, so that
// the reservation covers real memory, not only payload bytes. The buffer
// must never be larger than max(Window(), BufferSize()).
func (r *Receiver) SetBufferCap(c uint64) {
	r.bufCap = c
	r.rebalance()
}

// SetRTT gives the receiver the connection's smoothed RTT, used to judge
// whether the window or the reader limits throughput.
func (r *Receiver) SetRTT(rtt time.Duration) { r.rtt = rtt }

// OnConsumed records that the application read n bytes and returns the new
// limit to announce in a WINDOW_UPDATE, with ok false when no update is due
// yet (less than a quarter of the window consumed since the last one).
func (r *Receiver) OnConsumed(n uint64, now time.Time) (limit uint64, ok bool) {
	if n > r.received-r.consumed {
		panic(fmt.Sprintf("window: consumed %d bytes with %d buffered", n, r.received-r.consumed))
	}
	r.consumed += n
	r.lastRead = now
	// After an idle shrink, limit-consumed can exceed the window: then
	// consumed+window <= limit and there is nothing to grant yet. Testing
	// that first keeps the subtraction from wrapping, which would grant a
	// limit below the one the peer already holds.
	if due := r.consumed + r.window; due <= r.limit || due-r.limit < r.window/UpdateFraction {
		r.rebalance()
		return 0, false
	}
	r.autoTune(now)
	return r.grant()
}

// OnBlocked handles the peer's BLOCKED at limit, which tells that the
// sender had data but no credit once it reached limit. Lanes are ordered,
// so all data up to limit has arrived before the BLOCKED; a BLOCKED for a
// limit the peer never reached is ignored, so a peer cannot inflate
// windows without sending data.
//
// A BLOCKED below the current limit means the sender ran dry before the
// last WINDOW_UPDATE reached it: if the application keeps up (at most a
// quarter of the window unread), the window, not the reader, limits
// throughput, and the window grows. Either way, whatever the reader has
// freed is granted at once, below the usual threshold, since the sender
// is waiting. The returned limit should be sent at once when ok.
func (r *Receiver) OnBlocked(limit uint64, now time.Time) (uint64, bool) {
	if limit > r.received {
		return 0, false
	}
	// A limit below Initial is the protocol's default window, which the
	// peer used before it saw SETTINGS: being blocked there says nothing
	// about the window this receiver chose.
	if limit < r.limit && limit >= r.cfg.Initial && r.Buffered() <= r.window/UpdateFraction {
		r.grow(now)
	}
	if r.consumed+r.window <= r.limit {
		return 0, false
	}
	return r.grant()
}

// OnTick lets time pass: a stream whose application has not read for
// IdleAfter while data waits shrinks its window back to Initial, so that
// when it wakes up it does not re-grant a large window at once, and its
// growth returns to the budget as the old grant drains.
func (r *Receiver) OnTick(now time.Time) (shrunk bool) {
	if r.cfg.IdleAfter == 0 || r.window == r.cfg.Initial || r.Buffered() == 0 ||
		now.Sub(r.lastRead) < r.cfg.IdleAfter {
		return false
	}
	r.window = r.cfg.Initial
	r.epochStart, r.epochOffset = now, r.consumed
	r.budgetLimited = false
	r.counts.Shrinks++
	r.rebalance()
	return true
}

// Close releases the stream's whole reservation. The Receiver must not be
// used afterwards.
func (r *Receiver) Close() {
	r.budget.release(r.reserved + r.overhead)
	r.reserved, r.overhead = 0, 0
	r.window, r.limit, r.bufCap = 0, r.received, 0
}

// autoTune is quic-go's epoch rule: once more than half the window has been
// consumed, if that took less than 4 RTT times the consumed fraction, the
// window was the bottleneck and it grows; either way a new epoch starts.
func (r *Receiver) autoTune(now time.Time) {
	inEpoch := r.consumed - r.epochOffset
	if inEpoch <= r.window/2 {
		return
	}
	if r.rtt > 0 {
		fraction := float64(inEpoch) / float64(r.window)
		if now.Sub(r.epochStart) < time.Duration(4*fraction*float64(r.rtt)) {
			r.grow(now)
			return
		}
	}
	r.epochStart, r.epochOffset = now, r.consumed
}

// grow doubles the window within Max and the part of the budget the
// stream's urgency may use.
func (r *Receiver) grow(now time.Time) {
	want := min(2*r.window, r.cfg.Max)
	if want <= r.window {
		return
	}
	need := r.needed(want)
	limited := false
	if need > r.reserved {
		got, free := r.budget.reserveUpToShare(need-r.reserved, r.urgency)
		r.reserved += got
		if r.reserved < need {
			limited = true
			r.counts.Refusals++
			r.counts.Refused = need - r.reserved
			if free > got {
				r.counts.PriorityRefusals++
				r.counts.PriorityRefused = free - got
			}
			want -= need - r.reserved // take what the budget can give
		}
	}
	if want > r.window {
		r.window = roundWindow(want, r.window)
		r.counts.Growths++
	}
	r.budgetLimited = limited
	r.epochStart, r.epochOffset = now, r.consumed
}

// roundWindow keeps partial growth to whole 4 KiB pages, never below the
// current window.
func roundWindow(w, cur uint64) uint64 {
	const page = 4096
	if w%page != 0 && w-w%page > cur {
		return w - w%page
	}
	return w
}

func (r *Receiver) grant() (uint64, bool) {
	r.limit = r.consumed + r.window
	r.rebalance()
	return r.limit, true
}

func (r *Receiver) needed(window uint64) uint64 {
	return max(r.limit-r.consumed, window, r.bufCap)
}

// rebalance sets the reservation to what the stream needs now, returning
// what it no longer needs to the budget.
func (r *Receiver) rebalance() {
	need := r.needed(r.window)
	switch {
	case need > r.reserved:
		// Only reached when granting within the current window or when the
		// buffer grows inside granted credit: both are covered by right.
		r.budget.reserveAnyway(need - r.reserved)
	case need < r.reserved:
		r.budget.release(r.reserved - need)
	}
	r.reserved = need
}

// Sender is the send-side credit of one stream: sent <= max, where max is
// the highest Maximum Offset the peer granted.
type Sender struct {
	sent, max   uint64
	blockedSent bool // a BLOCKED was sent for the current max
}

// NewSender returns send-side credit with the peer's initial window.
func NewSender(initial uint64) Sender { return Sender{max: initial} }

// Available returns how many bytes may be sent now.
func (s *Sender) Available() uint64 { return s.max - s.sent }

// Sent returns the bytes sent so far.
func (s *Sender) Sent() uint64 { return s.sent }

// Max returns the highest offset the peer allows.
func (s *Sender) Max() uint64 { return s.max }

// OnSent records n bytes sent. Sending past the credit is a bug in the
// caller, reported as ErrFlowControl.
func (s *Sender) OnSent(n uint64) error {
	if n > s.max-s.sent {
		return fmt.Errorf("%w: sending %d bytes with %d of credit", ErrFlowControl, n, s.max-s.sent)
	}
	s.sent += n
	return nil
}

// OnUpdate applies a WINDOW_UPDATE. It reports whether the limit grew;
// updates that do not raise it are stale duplicates and are ignored.
func (s *Sender) OnUpdate(max uint64) bool {
	if max <= s.max {
		return false
	}
	s.max = max
	s.blockedSent = false
	return true
}

// Blocked reports whether a BLOCKED frame should be sent now, for a writer
// that has data but no credit: once per value of the limit.
func (s *Sender) Blocked() (limit uint64, send bool) {
	if s.sent < s.max || s.blockedSent {
		return 0, false
	}
	s.blockedSent = true
	return s.max, true
}
