package transport

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"
)

// This file is the admission control every listener shares: a token
// bucket on new connections (QUICConfig.SessionRate and SessionBurst,
// TCPConfig.SessionRate and SessionBurst). It is pure accounting with the
// time passed in; each listener holds one under its own lock and refuses a
// connection the bucket turns down the same cheap way it refuses one over
// its caps.

// admission is a token bucket of new connections: rate tokens a second,
// at most burst of them saved up, one taken per admitted connection.
// Unlike a bucket that queues callers (the mux's), a connection that finds
// no token is refused, not delayed, and owes nothing: a refusal takes no
// token, so a storm of refused clients does not push out the ones that
// come back later. The zero value admits everything.
type admission struct {
	rate   float64 // tokens per second; 0 means no limit
	burst  float64
	tokens float64
	last   time.Time // when tokens was last brought up to date; zero before the first call
}

// newAdmission returns a bucket of rate tokens a second holding at most
// burst, full at the start. rate 0 means no limit; burst below 1 means one
// second's worth of rate, and at least one token.
func newAdmission(rate float64, burst int) admission {
	if rate <= 0 {
		return admission{}
	}
	b := float64(burst)
	if burst < 1 {
		b = max(1, math.Ceil(rate))
	}
	return admission{rate: rate, burst: b, tokens: b}
}

// admit takes a token at now and reports whether there was one. When there
// was not, wait is how long until the next token is due: the earliest a
// client refused now could be admitted, were no one else to come first.
// A clock that goes backwards adds no tokens.
func (a *admission) admit(now time.Time) (ok bool, wait time.Duration) {
	if a.rate <= 0 {
		return true, 0
	}
	if !a.last.IsZero() {
		if dt := now.Sub(a.last).Seconds(); dt > 0 {
			a.tokens = min(a.burst, a.tokens+dt*a.rate)
		}
	}
	if a.last.IsZero() || now.After(a.last) {
		a.last = now
	}
	if a.tokens >= 1 {
		a.tokens--
		return true, 0
	}
	wait = time.Duration(math.Ceil((1 - a.tokens) / a.rate * float64(time.Second)))
	return false, max(wait, time.Nanosecond)
}

// clockNow is now(), or the system's time when a listener has no clock of
// its own.
func clockNow(now func() time.Time) time.Time {
	if now == nil {
		return time.Now()
	}
	return now()
}

// validateRate reports a SessionRate or SessionBurst a listener cannot
// use; kind names the configuration type in the message.
func validateRate(kind string, rate float64, burst int) error {
	switch {
	case math.IsNaN(rate) || math.IsInf(rate, 0):
		return fmt.Errorf("transport: %s.SessionRate %v is not a finite number", kind, rate)
	case rate < 0:
		return fmt.Errorf("transport: %s.SessionRate %v is negative", kind, rate)
	case burst < 0:
		return fmt.Errorf("transport: %s.SessionBurst %d is negative", kind, burst)
	}
	return nil
}

// rateReason is the text a listener that can give a reason with its
// refusal (the x/net/quic one) gives when the bucket refused.
func rateReason(rate float64, wait time.Duration) string {
	return fmt.Sprintf("connection refused: over the listener's rate of %g new sessions per second; retry after %v",
		rate, max(wait, time.Millisecond).Round(time.Millisecond))
}

// A quic-go client's first flight often takes two Initial packets (a
// ClientHello with a post-quantum key share does not fit in one), and
// quic-go asks the listener about each packet for which it has no
// connection. When the bucket refuses the first packet, the second one,
// microseconds later, would find a token that has come back meanwhile and
// be admitted: a connection with half a ClientHello, whose client has
// already given up, wasting the token and some state. So the QUIC
// listener remembers the addresses it refused over the rate in the last
// refusedEcho, and refuses their packets too, without a token.
// refusedSlots bounds what it remembers: under a flood of addresses, the
// oldest are forgotten first and the worst case is the waste above.
const (
	refusedEcho  = 10 * time.Millisecond
	refusedSlots = 128
)

// recentRefusals is a small ring of addresses refused in the last
// refusedEcho. The zero value is empty and ready to use.
type recentRefusals struct {
	slots [refusedSlots]struct {
		addr netip.AddrPort
		at   time.Time
	}
	next int
}

// add remembers that addr was refused at now.
func (r *recentRefusals) add(addr netip.AddrPort, now time.Time) {
	if !addr.IsValid() {
		return
	}
	r.slots[r.next].addr, r.slots[r.next].at = addr, now
	r.next = (r.next + 1) % refusedSlots
}

// has reports whether addr was refused within refusedEcho before now.
func (r *recentRefusals) has(addr netip.AddrPort, now time.Time) bool {
	if !addr.IsValid() {
		return false
	}
	for i := range r.slots {
		s := &r.slots[i]
		if s.addr == addr {
			d := now.Sub(s.at)
			return d >= 0 && d < refusedEcho
		}
	}
	return false
}

// addrPort returns a's address and port, or the zero AddrPort if a is not
// a UDP or TCP address.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
