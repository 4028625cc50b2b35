package window

// Charge takes n bytes of the budget for memory that is not a stream's
// receive buffer but that the peer's use of the session makes this side
// hold, such as compression codecs' state. It reports false, taking
// nothing, when fewer than n bytes are free.
func (b *Budget) Charge(n uint64) bool { return b.reserveExactly(n) }

// Uncharge gives back n bytes taken by Charge.
func (b *Budget) Uncharge(n uint64) { b.release(n) }
