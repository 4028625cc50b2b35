// Package link joins two network namespaces by a packet-level impaired
// link, so that every transport between them (QUIC and TCP alike) meets the
// same path: the same delay, loss, queue and rate cap, applied to IP packets.
//
// Setup makes two namespaces, A and B, each with a TUN device. The TUN
// devices are made in the calling process's namespace and then moved into
// A and B; their file descriptors stay with the process, which forwards
// every IP packet read from one device to the other, impaired per direction
// (AtoB, BtoA). Kernel netem is not needed.
//
// The model of one direction, in the order a packet meets it:
//
//  1. blackhole: while a blackhole period of the schedule lasts, every
//     packet is dropped, on arrival and on departure (a packet in flight
//     when the period starts is lost, as on a cut link);
//  2. loss: the packet is dropped with probability Loss, and independently
//     by a Gilbert-Elliott two-state chain (Burst) for bursty loss;
//  3. rate and queue: with Rate > 0 the packet waits its turn on a link that
//     sends Rate bytes of IP packet per second. A packet waits in the queue
//     from its arrival until its last byte has been sent; a packet that
//     would make the queue hold more than QueuePackets packets or
//     QueueBytes bytes is dropped (drop-tail);
//  4. delay line: the packet leaves the link and arrives Delay plus a
//     uniform jitter in [0, Jitter) later, never before the packet ahead of
//     it, so order is kept;
//  5. reordering: with probability Reorder a packet is held back ReorderBy
//     longer and does not hold up the packets behind it;
//  6. corruption: with probability Corrupt one bit of the packet's
//     transport payload (after the IP header and the TCP or UDP header) is
//     flipped and no checksum is recomputed, so the receiving kernel finds
//     the TCP or UDP checksum wrong and drops the packet. The IP header is
//     never touched, so corruption never misroutes a packet. A packet with
//     no transport payload (a bare TCP ACK) is never corrupted.
//
// Every random decision comes from a PCG seeded with Config.Seed (one
// stream per direction). Each packet draws the same number of random values
// whatever the configuration, so the same seed and the same packet sequence
// give the same decisions, and turning one impairment on does not change
// the decisions of another. The decisions are made by a pure model (no
// goroutines, time passed in), which is tested on its own.
//
// One reader goroutine and one scheduler goroutine per direction move the
// packets; no goroutine or timer is made per packet, and everything a
// direction holds is bounded (65536 packets, 64 MiB).
//
// Setting up needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), /dev/net/tun
// and the ip command of iproute2.
package link

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// Mbit is a rate of one megabit per second in the bytes per second that
// Direction.Rate counts: Rate: 10 * link.Mbit.
const Mbit int64 = 1e6 / 8

// Defaults modelled on the QUIC interop runner's network simulator.
const (
	// DefaultDelay is the one-way delay of DefaultDirection.
	DefaultDelay = 15 * time.Millisecond
	// DefaultRate is the rate of DefaultDirection: 10 Mbit/s.
	DefaultRate = 10 * Mbit
	// DefaultQueuePackets bounds the queue of a rate-capped direction
	// whose QueuePackets and QueueBytes are both zero.
	DefaultQueuePackets = 25
)

// DefaultDirection returns the impairment the QUIC interop runner uses by
// default: 15 ms one way, 10 Mbit/s, a 25-packet drop-tail queue.
func DefaultDirection() Direction {
	return Direction{Delay: DefaultDelay, Rate: DefaultRate, QueuePackets: DefaultQueuePackets}
}

// Direction describes the impairment of one direction of the link. The
// zero Direction forwards every packet at once.
type Direction struct {
	// Delay is a fixed one-way delay added to every packet.
	Delay time.Duration
	// Jitter adds a uniform random extra delay in [0, Jitter). It never
	// reorders packets by itself: a packet leaves no earlier than the one
	// ahead of it.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is dropped, each
	// packet independently.
	Loss float64
	// Burst adds bursty loss by a Gilbert-Elliott chain. The zero value
	// adds none.
	Burst GilbertElliott
	// Reorder is the probability in [0, 1] that a packet is held back by
	// ReorderBy, so that the packets sent just after it overtake it.
	Reorder float64
	// ReorderBy is how long a reordered packet is held back beyond its
	// normal release. Zero means max(Delay/2, 1ms).
	ReorderBy time.Duration
	// Rate caps the bandwidth in bytes of IP packet per second (no
	// link-layer overhead is counted). Zero means unlimited.
	Rate int64
	// QueuePackets bounds, in packets, the queue in front of the rate cap
	// (only used when Rate > 0), counting the packet being sent. Zero
	// means no bound in packets, unless QueueBytes is also zero, when it
	// means DefaultQueuePackets.
	QueuePackets int
	// QueueBytes bounds, in bytes of IP packet, the same queue. Zero
	// means no bound in bytes. A packet always fits an empty queue.
	QueueBytes int
	// Blackhole is a schedule of periods during which every packet is
	// dropped. The zero value never drops.
	Blackhole Blackhole
	// Corrupt is the probability in [0, 1] that one bit of a packet's
	// transport payload is flipped (see the package documentation).
	Corrupt float64
}

// GilbertElliott is a two-state Markov chain of bursty loss, stepped once
// per packet: in the good state a packet is lost with probability LossGood,
// in the bad state with probability LossBad. After each packet the chain
// moves from good to bad with probability P and from bad to good with
// probability R. The chain starts good. The long-run loss rate is
// (R*LossGood + P*LossBad) / (P + R), and the mean length of a bad spell
// is 1/R packets.
//
// The zero value (P == 0) never enters the bad state and, with LossGood
// zero, never drops.
type GilbertElliott struct {
	// P is the probability of moving from the good to the bad state.
	P float64
	// R is the probability of moving from the bad to the good state.
	R float64
	// LossGood is the loss probability in the good state (usually 0).
	LossGood float64
	// LossBad is the loss probability in the bad state. Zero means 1.
	LossBad float64
}

// enabled reports whether g can drop anything.
func (g GilbertElliott) enabled() bool { return g.P > 0 || g.LossGood > 0 }

// Blackhole is a schedule of blackhole periods: starting when the schedule
// is set (by Setup, or by SetConfig with a different schedule), the link
// passes packets for Pass, then drops everything for Drop, and repeats;
// with Once it passes for good after the first Drop.
//
// Blackhole{Drop: 2 * time.Second, Once: true} drops for two seconds from
// now; Blackhole{Pass: 5 * time.Second, Drop: 2 * time.Second} is "5 s on,
// 2 s off" for ever. With Drop zero nothing is dropped; with Pass zero and
// Once false everything is dropped until the schedule changes.
type Blackhole struct {
	// Pass is how long the link carries packets before each blackhole
	// period.
	Pass time.Duration
	// Drop is how long each blackhole period lasts.
	Drop time.Duration
	// Once ends the schedule after its first blackhole period.
	Once bool
}

// String formats b as "pass/drop" ("5s/2s"), with " once" if it applies.
func (b Blackhole) String() string {
	s := fmt.Sprintf("%v/%v", b.Pass, b.Drop)
	if b.Once {
		s += " once"
	}
	return s
}

// active reports whether the schedule, set at epoch, drops at t.
func (b Blackhole) active(epoch, t int64) bool {
	if b.Drop <= 0 || t < epoch {
		return false
	}
	e := t - epoch
	pass, drop := int64(b.Pass), int64(b.Drop)
	if b.Once {
		return e >= pass && e < pass+drop
	}
	if pass <= 0 {
		return true
	}
	return e%(pass+drop) >= pass
}

// String formats d on one line, leaving out what does not apply.
func (d Direction) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "delay=%v", d.Delay)
	if d.Jitter != 0 {
		fmt.Fprintf(&b, " jitter=%v", d.Jitter)
	}
	if d.Loss != 0 {
		fmt.Fprintf(&b, " loss=%g", d.Loss)
	}
	if g := d.Burst; g.enabled() {
		fmt.Fprintf(&b, " burst=(p=%g r=%g good=%g bad=%g)", g.P, g.R, g.LossGood, g.lossBad())
	}
	if d.Reorder != 0 {
		fmt.Fprintf(&b, " reorder=%g", d.Reorder)
		if d.ReorderBy != 0 {
			fmt.Fprintf(&b, " reorder-by=%v", d.ReorderBy)
		}
	}
	if d.Rate != 0 {
		fmt.Fprintf(&b, " rate=%gMbit/s", float64(d.Rate)/float64(Mbit))
		qp, qb := d.queueBounds()
		if qp > 0 {
			fmt.Fprintf(&b, " queue=%dpkt", qp)
		}
		if qb > 0 {
			fmt.Fprintf(&b, " queue=%dB", qb)
		}
	}
	if d.Blackhole.Drop != 0 {
		fmt.Fprintf(&b, " blackhole=%v", d.Blackhole)
	}
	if d.Corrupt != 0 {
		fmt.Fprintf(&b, " corrupt=%g", d.Corrupt)
	}
	return b.String()
}

func (g GilbertElliott) lossBad() float64 {
	if g.LossBad == 0 {
		return 1
	}
	return g.LossBad
}

// queueBounds returns the effective queue bounds in packets and bytes
// (zero: no bound of that kind).
func (d Direction) queueBounds() (packets, bytes int) {
	if d.QueuePackets == 0 && d.QueueBytes == 0 {
		return DefaultQueuePackets, 0
	}
	return d.QueuePackets, d.QueueBytes
}

// Validate reports the first value of d that is out of range: a negative
// duration, rate or queue bound, or a probability outside [0, 1].
func (d Direction) Validate() error {
	prob := func(name string, p float64) error {
		if !(p >= 0 && p <= 1) {
			return fmt.Errorf("%s %v is not in [0, 1]", name, p)
		}
		return nil
	}
	switch {
	case d.Delay < 0:
		return fmt.Errorf("delay %v is negative", d.Delay)
	case d.Jitter < 0:
		return fmt.Errorf("jitter %v is negative", d.Jitter)
	case d.ReorderBy < 0:
		return fmt.Errorf("reorder-by %v is negative", d.ReorderBy)
	case d.Rate < 0:
		return fmt.Errorf("rate %d is negative", d.Rate)
	case d.QueuePackets < 0:
		return fmt.Errorf("queue %d packets is negative", d.QueuePackets)
	case d.QueueBytes < 0:
		return fmt.Errorf("queue %d bytes is negative", d.QueueBytes)
	case d.Blackhole.Pass < 0 || d.Blackhole.Drop < 0:
		return fmt.Errorf("blackhole %v is negative", d.Blackhole)
	}
	for _, p := range []struct {
		name string
		p    float64
	}{
		{"loss", d.Loss}, {"reorder", d.Reorder}, {"corrupt", d.Corrupt},
		{"burst p", d.Burst.P}, {"burst r", d.Burst.R},
		{"burst loss-good", d.Burst.LossGood}, {"burst loss-bad", d.Burst.LossBad},
	} {
		if err := prob(p.name, p.p); err != nil {
			return err
		}
	}
	return nil
}

// Config describes a link.
type Config struct {
	// A and B name the two network namespaces (as ip netns does). Setup
	// deletes namespaces of these names left by an earlier run, so they
	// must not be used by anything else.
	A, B string
	// DevA and DevB name the TUN device inside each namespace. Empty
	// means "link0".
	DevA, DevB string
	// AddrA and AddrB are the addresses, with prefix length, of the
	// devices in A and B, like "10.99.0.1/24" and "10.99.0.2/24". Both
	// must be IPv4 or both IPv6. Each namespace gets a route to the other
	// address through its device.
	AddrA, AddrB string
	// MTU of both devices. Zero means 1500.
	MTU int
	// AtoB impairs packets sent from A to B.
	AtoB Direction
	// BtoA impairs packets sent from B to A.
	BtoA Direction
	// Seed seeds all randomness: the same seed and packet sequence give
	// the same decisions. Changing it with SetConfig restarts the random
	// sequences; keeping it continues them.
	Seed uint64
}

const (
	defaultDev = "link0"
	defaultMTU = 1500
	maxMTU     = 65535
)

func (c Config) devA() string { return cmpOr(c.DevA, defaultDev) }
func (c Config) devB() string { return cmpOr(c.DevB, defaultDev) }

func (c Config) mtu() int {
	if c.MTU == 0 {
		return defaultMTU
	}
	return c.MTU
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Validate reports the first problem of c: a bad name, address or MTU, or
// an impairment out of range.
func (c Config) Validate() error {
	for _, n := range []struct{ what, name string }{{"A", c.A}, {"B", c.B}} {
		if err := validNetns(n.name); err != nil {
			return fmt.Errorf("link: namespace %s: %w", n.what, err)
		}
	}
	if c.A == c.B {
		return fmt.Errorf("link: namespaces A and B are both %q", c.A)
	}
	for _, n := range []struct{ what, name string }{{"DevA", c.devA()}, {"DevB", c.devB()}} {
		if len(n.name) > 15 || strings.ContainsAny(n.name, "/ \t\n:") || n.name == "." || n.name == ".." {
			return fmt.Errorf("link: %s %q is not a device name (at most 15 characters, no '/', ':' or space)", n.what, n.name)
		}
	}
	pa, err := netip.ParsePrefix(c.AddrA)
	if err != nil {
		return fmt.Errorf("link: AddrA: %w", err)
	}
	pb, err := netip.ParsePrefix(c.AddrB)
	if err != nil {
		return fmt.Errorf("link: AddrB: %w", err)
	}
	if pa.Addr().Is4() != pb.Addr().Is4() {
		return fmt.Errorf("link: AddrA %v and AddrB %v are not of one family", pa, pb)
	}
	if pa.Addr() == pb.Addr() {
		return fmt.Errorf("link: AddrA and AddrB are both %v", pa.Addr())
	}
	if m := c.mtu(); m < 576 || m > maxMTU || (!pa.Addr().Is4() && m < 1280) {
		return fmt.Errorf("link: MTU %d is out of range (576 to %d, at least 1280 for IPv6)", c.MTU, maxMTU)
	}
	if err := c.AtoB.Validate(); err != nil {
		return fmt.Errorf("link: AtoB: %w", err)
	}
	if err := c.BtoA.Validate(); err != nil {
		return fmt.Errorf("link: BtoA: %w", err)
	}
	return nil
}

func validNetns(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case name == "." || name == ".." || strings.ContainsAny(name, "/ \t\n\x00"):
		return fmt.Errorf("%q is not a namespace name", name)
	case len(name) > 64:
		return fmt.Errorf("%q is longer than 64 bytes", name)
	}
	return nil
}

// Stats counts what a link has done since Setup.
type Stats struct {
	// AtoB counts packets from A to B.
	AtoB DirStats
	// BtoA counts packets from B to A.
	BtoA DirStats
}

// String formats s on two lines.
func (s Stats) String() string {
	return fmt.Sprintf("a->b: %v\nb->a: %v", s.AtoB, s.BtoA)
}

// DirStats counts the packets of one direction. Bytes are IP packet bytes.
type DirStats struct {
	// PacketsIn and BytesIn count the packets read from the sending
	// namespace's device.
	PacketsIn, BytesIn uint64
	// PacketsOut and BytesOut count the packets written to the receiving
	// namespace's device.
	PacketsOut, BytesOut uint64
	// DroppedLoss counts packets dropped by random or bursty loss.
	DroppedLoss uint64
	// DroppedQueue counts packets dropped because the queue in front of
	// the rate cap was full.
	DroppedQueue uint64
	// DroppedBlackhole counts packets dropped by a blackhole period, on
	// arrival or on departure.
	DroppedBlackhole uint64
	// DroppedOverflow counts packets dropped because the direction held
	// its bound (65536 packets or 64 MiB) in its delay line.
	DroppedOverflow uint64
	// DroppedBytes counts the bytes of all dropped packets.
	DroppedBytes uint64
	// Corrupted counts packets that had a bit flipped (and were sent on).
	Corrupted uint64
	// Reordered counts packets held back so that later ones could
	// overtake them.
	Reordered uint64
	// WriteErrors counts packets whose write to the receiving device
	// failed (the packet is lost).
	WriteErrors uint64
	// QueuePeakPackets and QueuePeakBytes are the most packets and bytes
	// seen waiting for the rate cap at once, counting the packet that
	// just joined and the one being sent.
	QueuePeakPackets, QueuePeakBytes int64
	// HeldPeak is the most packets the direction held at once (queue and
	// delay line).
	HeldPeak int64
	// WaitPeak is the longest a packet was to stay in the link, from
	// being read to its release time: queue, delay, jitter and
	// reordering, as the model decided.
	WaitPeak time.Duration
	// LatePeak is the most a batch of due packets was taken for writing
	// after its release time: the lateness of the scheduler's timer.
	LatePeak time.Duration
}

// Dropped returns the number of packets dropped for any reason.
func (s DirStats) Dropped() uint64 {
	return s.DroppedLoss + s.DroppedQueue + s.DroppedBlackhole + s.DroppedOverflow
}

// String formats s on one line.
func (s DirStats) String() string {
	return fmt.Sprintf("in=%d (%dB) out=%d (%dB) dropped=%d (loss=%d queue=%d blackhole=%d overflow=%d, %dB) corrupted=%d reordered=%d write_errors=%d queue_peak=%dpkt/%dB held_peak=%d wait_peak=%v late_peak=%v",
		s.PacketsIn, s.BytesIn, s.PacketsOut, s.BytesOut, s.Dropped(), s.DroppedLoss, s.DroppedQueue,
		s.DroppedBlackhole, s.DroppedOverflow, s.DroppedBytes, s.Corrupted, s.Reordered, s.WriteErrors,
		s.QueuePeakPackets, s.QueuePeakBytes, s.HeldPeak, s.WaitPeak, s.LatePeak)
}

// clamp01 maps NaN and negatives to 0 and caps at 1.
func clamp01(p float64) float64 {
	if !(p > 0) {
		return 0
	}
	return math.Min(p, 1)
}
