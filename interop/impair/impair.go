// Package impair is a userspace network impairment proxy for tests and
// benchmarks on one machine, where kernel netem is not available.
//
// A UDPProxy forwards datagrams between clients and one target; a TCPProxy
// does the same for TCP connections. Each adds, per direction, a fixed delay,
// jitter, random loss, reordering, a bandwidth cap with a bounded queue, and
// blackholing for a period. Every random decision comes from a PCG seeded
// with Config.Seed, so a given seed and packet sequence give the same
// decisions.
//
// The model of one direction, in the order a packet meets it:
//
//  1. blackhole: while a blackhole lasts every UDP packet is dropped (on
//     arrival and on departure); TCP bytes are held until it ends;
//  2. loss (UDP): the packet is dropped with probability Loss;
//  3. bandwidth: with Rate > 0 the packet waits its turn on a link that
//     sends Rate bytes per second; while the bytes waiting exceed Queue, UDP
//     drops the packet (drop-tail) and TCP stops reading (backpressure);
//  4. delay line: the packet leaves the link and arrives Delay plus a
//     uniform jitter in [0, Jitter) later, never before the packet ahead of
//     it, so order is kept;
//  5. reordering (UDP): with probability Reorder a packet is held back
//     ReorderBy longer and does not hold up the packets behind it.
//
// One scheduler goroutine per direction releases packets from a time-ordered
// queue; no goroutine or timer is made per packet. Every queue is bounded.
package impair

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Direction describes the impairment of one direction of traffic.
// Negative values count as zero and probabilities are clamped to [0, 1].
type Direction struct {
	// Delay is a fixed one-way delay added to every packet (or byte chunk
	// for TCP).
	Delay time.Duration
	// Jitter adds a uniform random extra delay in [0, Jitter). It never
	// reorders packets by itself: a packet leaves no earlier than the one
	// ahead of it. So packets closer together than Jitter bunch up behind
	// the most delayed one, and at high packet rates the delay tends to
	// Delay + Jitter.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a UDP packet is dropped. It is
	// ignored for TCP.
	Loss float64
	// Reorder is the probability in [0, 1] that a UDP packet is held back
	// by ReorderBy, so that the packets sent just after it overtake it. It
	// is ignored for TCP.
	Reorder float64
	// ReorderBy is how long a reordered packet is held back beyond its
	// normal release. Zero means max(Delay/2, 1ms).
	ReorderBy time.Duration
	// Rate caps the bandwidth in bytes per second. Zero means unlimited.
	Rate int64
	// Queue bounds, in bytes, what waits for the bandwidth cap (only used
	// when Rate > 0): UDP drops a packet that does not fit (drop-tail), TCP
	// stops reading (backpressure). Zero means DefaultQueue(Rate): 100 ms
	// worth of Rate, at least 64 KiB.
	Queue int
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
	if d.Reorder != 0 {
		fmt.Fprintf(&b, " reorder=%g", d.Reorder)
		if d.ReorderBy != 0 {
			fmt.Fprintf(&b, " reorder-by=%v", d.ReorderBy)
		}
	}
	if d.Rate != 0 {
		q := d.Queue
		if q == 0 {
			q = DefaultQueue(d.Rate)
		}
		fmt.Fprintf(&b, " rate=%dB/s queue=%dB", d.Rate, q)
	}
	return b.String()
}

// Config impairs both directions of a proxy.
type Config struct {
	// Up impairs client -> server traffic.
	Up Direction
	// Down impairs server -> client traffic.
	Down Direction
	// Seed seeds all randomness (loss, jitter, reordering): the same seed
	// and packet sequence give the same decisions. Changing it with
	// SetConfig restarts the random sequences; keeping it continues them.
	Seed uint64
	// MaxFlows bounds the number of client flows (UDP: distinct client
	// addresses, each with its own upstream socket; TCP: connections).
	// Zero means 1024. A UDP proxy at the bound evicts the least recently
	// active flow; a TCP proxy refuses (closes) new connections.
	MaxFlows int
	// IdleTimeout expires a UDP flow that has carried no packet in either
	// direction for this long. Zero means 60 s. TCP connections end only
	// when their endpoints end them.
	IdleTimeout time.Duration
}

const (
	defaultMaxFlows    = 1024
	defaultIdleTimeout = 60 * time.Second
	minQueue           = 64 << 10

	// maxLinePackets and maxLineBytes bound everything a UDP direction
	// holds (delay line and held-back packets). Bytes are counted by
	// buffer capacity, so they bound memory. Packets beyond are dropped
	// and counted as DroppedOverflow.
	maxLinePackets = 65536
	maxLineBytes   = 64 << 20
)

// DefaultQueue is the bandwidth queue used when Direction.Queue is zero:
// 100 ms worth of rate bytes, at least 64 KiB.
func DefaultQueue(rate int64) int {
	q := rate / 10
	if q < minQueue {
		q = minQueue
	}
	if q > math.MaxInt32 {
		q = math.MaxInt32
	}
	return int(q)
}

// Validate reports the first value of c that is out of range: a negative
// duration, rate, queue or flow bound, or a probability outside [0, 1].
func (c Config) Validate() error {
	if c.MaxFlows < 0 {
		return fmt.Errorf("impair: MaxFlows %d is negative", c.MaxFlows)
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("impair: IdleTimeout %v is negative", c.IdleTimeout)
	}
	if err := c.Up.validate(); err != nil {
		return fmt.Errorf("impair: up: %w", err)
	}
	if err := c.Down.validate(); err != nil {
		return fmt.Errorf("impair: down: %w", err)
	}
	return nil
}

func (d Direction) validate() error {
	switch {
	case d.Delay < 0:
		return fmt.Errorf("delay %v is negative", d.Delay)
	case d.Jitter < 0:
		return fmt.Errorf("jitter %v is negative", d.Jitter)
	case d.ReorderBy < 0:
		return fmt.Errorf("reorder-by %v is negative", d.ReorderBy)
	case !(d.Loss >= 0 && d.Loss <= 1):
		return fmt.Errorf("loss %v is not in [0, 1]", d.Loss)
	case !(d.Reorder >= 0 && d.Reorder <= 1):
		return fmt.Errorf("reorder %v is not in [0, 1]", d.Reorder)
	case d.Rate < 0:
		return fmt.Errorf("rate %d is negative", d.Rate)
	case d.Queue < 0:
		return fmt.Errorf("queue %d is negative", d.Queue)
	}
	return nil
}

// normalize clamps d into range.
func (d Direction) normalize() Direction {
	d.Delay = max(d.Delay, 0)
	d.Jitter = max(d.Jitter, 0)
	d.ReorderBy = max(d.ReorderBy, 0)
	d.Rate = max(d.Rate, 0)
	d.Queue = max(d.Queue, 0)
	d.Loss = clamp01(d.Loss)
	d.Reorder = clamp01(d.Reorder)
	return d
}

func clamp01(p float64) float64 {
	if !(p > 0) { // also NaN
		return 0
	}
	return min(p, 1)
}

func (c Config) maxFlows() int {
	if c.MaxFlows <= 0 {
		return defaultMaxFlows
	}
	return c.MaxFlows
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout <= 0 {
		return defaultIdleTimeout
	}
	return c.IdleTimeout
}

// Stats counts what a proxy has done since it started.
type Stats struct {
	// Up counts client -> server traffic.
	Up DirStats
	// Down counts server -> client traffic.
	Down DirStats
	// Flows is the number of client flows (UDP) or connections (TCP) open
	// now.
	Flows int
	// FlowsTotal counts the flows or connections ever opened.
	FlowsTotal uint64
	// FlowsEvicted counts UDP flows closed to make room under MaxFlows.
	FlowsEvicted uint64
	// FlowsExpired counts UDP flows closed after IdleTimeout.
	FlowsExpired uint64
	// FlowsRejected counts TCP connections refused under MaxFlows or
	// because the target could not be reached.
	FlowsRejected uint64
}

// String formats s on three lines: flows, up, down.
func (s Stats) String() string {
	return fmt.Sprintf("flows=%d total=%d evicted=%d expired=%d rejected=%d\nup:   %v\ndown: %v",
		s.Flows, s.FlowsTotal, s.FlowsEvicted, s.FlowsExpired, s.FlowsRejected, s.Up, s.Down)
}

// DirStats counts the traffic of one direction.
type DirStats struct {
	// Packets counts datagrams (UDP) or chunks (TCP) delivered.
	Packets uint64
	// Bytes counts the payload bytes delivered.
	Bytes uint64
	// DroppedLoss counts UDP packets dropped by random loss.
	DroppedLoss uint64
	// DroppedQueue counts UDP packets dropped because the bandwidth queue
	// was full.
	DroppedQueue uint64
	// DroppedBlackhole counts UDP packets dropped by a blackhole.
	DroppedBlackhole uint64
	// DroppedOverflow counts UDP packets dropped because the delay line
	// held its bound (65536 packets or 64 MiB).
	DroppedOverflow uint64
	// DroppedBytes counts the bytes of all dropped packets.
	DroppedBytes uint64
	// Reordered counts UDP packets held back so that later ones could
	// overtake them.
	Reordered uint64
	// WriteErrors counts packets or chunks whose write failed (for UDP the
	// packet is lost; for TCP the connection is closed).
	WriteErrors uint64
	// Stalls counts the times a TCP direction stopped reading because its
	// queue was full (backpressure).
	Stalls uint64
	// QueuePeak is the largest number of bytes seen waiting for the
	// bandwidth cap, including the packet or chunk that just joined.
	QueuePeak int64
	// HeldPeak is the largest number of payload bytes the proxy has held
	// for this direction at once: for UDP in the delay line, for TCP in
	// one connection's delay line and queue.
	HeldPeak int64
}

// Dropped returns the number of packets dropped for any reason.
func (s DirStats) Dropped() uint64 {
	return s.DroppedLoss + s.DroppedQueue + s.DroppedBlackhole + s.DroppedOverflow
}

// String formats s on one line.
func (s DirStats) String() string {
	return fmt.Sprintf("packets=%d bytes=%d dropped=%d (loss=%d queue=%d blackhole=%d overflow=%d) reordered=%d write_errors=%d stalls=%d queue_peak=%d held_peak=%d",
		s.Packets, s.Bytes, s.Dropped(), s.DroppedLoss, s.DroppedQueue, s.DroppedBlackhole, s.DroppedOverflow,
		s.Reordered, s.WriteErrors, s.Stalls, s.QueuePeak, s.HeldPeak)
}
