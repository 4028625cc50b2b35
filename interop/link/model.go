package link

import (
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// Times inside a link are int64 nanoseconds since Setup, read from the
// monotonic clock. The model takes them as arguments and never reads a
// clock, so that tests can drive it with any times.

// reason says what became of a packet.
type reason uint8

const (
	pass reason = iota
	dropLoss
	dropQueue
	dropBlackhole
)

func (r reason) String() string {
	switch r {
	case pass:
		return "pass"
	case dropLoss:
		return "loss"
	case dropQueue:
		return "queue"
	case dropBlackhole:
		return "blackhole"
	}
	return "?"
}

// verdict is the model's decision about one packet.
type verdict struct {
	reason    reason
	release   int64 // when to write the packet to the receiving device
	reordered bool  // held back by ReorderBy
	flipBit   int   // bit of the packet to flip, or -1
}

// draws is the number of random values every packet takes, whatever the
// configuration and whatever becomes of it.
const draws = 7

// model is the pure decision logic of one direction: no goroutines, no
// clock, no I/O. Its owner serializes access.
type model struct {
	d         Direction // normalized
	qPackets  int64     // effective queue bound in packets (0: none)
	qBytes    int64     // effective queue bound in bytes (0: none)
	reorderBy int64
	rng       *rand.Rand
	epoch     int64 // when the blackhole schedule was set
	bad       bool  // Gilbert-Elliott state

	linkFree int64    // when the rate-capped link has sent all admitted
	queue    []queued // admitted packets not yet sent, in order
	qHead    int      // first live entry of queue
	qSum     int64    // bytes of the live entries
	lastRel  int64    // release time of the last in-order packet
	peakPkts int64    // most packets in the queue at once
	peakB    int64    // most bytes in the queue at once
	scratch  [draws]uint64
}

// queued is a packet waiting for the rate cap: done is when its last byte
// has been sent.
type queued struct {
	done int64
	n    int64
}

// newModel returns the model of d, set at now, whose random stream is
// stream of seed.
func newModel(d Direction, seed, stream uint64, now int64) *model {
	m := &model{}
	m.reseed(seed, stream)
	m.set(d, now)
	m.epoch = now
	return m
}

// reseed restarts the random stream.
func (m *model) reseed(seed, stream uint64) {
	m.rng = rand.New(rand.NewPCG(seed, stream))
}

// set changes the impairment at now. A changed blackhole schedule starts
// at now; the queue, the chain's state and the random stream carry on.
func (m *model) set(d Direction, now int64) {
	d = normalize(d)
	if d.Blackhole != m.d.Blackhole {
		m.epoch = now
	}
	m.d = d
	qp, qb := d.queueBounds()
	m.qPackets, m.qBytes = int64(qp), int64(qb)
	m.reorderBy = int64(d.ReorderBy)
	if m.reorderBy == 0 {
		m.reorderBy = int64(max(d.Delay/2, time.Millisecond))
	}
}

// normalize clamps d into range.
func normalize(d Direction) Direction {
	d.Delay = max(d.Delay, 0)
	d.Jitter = max(d.Jitter, 0)
	d.ReorderBy = max(d.ReorderBy, 0)
	d.Rate = max(d.Rate, 0)
	d.QueuePackets = max(d.QueuePackets, 0)
	d.QueueBytes = max(d.QueueBytes, 0)
	d.Blackhole.Pass = max(d.Blackhole.Pass, 0)
	d.Blackhole.Drop = max(d.Blackhole.Drop, 0)
	d.Loss = clamp01(d.Loss)
	d.Reorder = clamp01(d.Reorder)
	d.Corrupt = clamp01(d.Corrupt)
	d.Burst.P = clamp01(d.Burst.P)
	d.Burst.R = clamp01(d.Burst.R)
	d.Burst.LossGood = clamp01(d.Burst.LossGood)
	d.Burst.LossBad = clamp01(d.Burst.LossBad)
	return d
}

// blackholed reports whether the blackhole schedule drops at t.
func (m *model) blackholed(t int64) bool {
	return m.d.Blackhole.active(m.epoch, t)
}

// unit maps a random value to [0, 1).
func unit(u uint64) float64 { return float64(u>>11) / (1 << 53) }

// decide decides the fate of packet pkt (an IP packet, not modified)
// arriving at now.
func (m *model) decide(now int64, pkt []byte) verdict {
	r := &m.scratch
	for i := range r {
		r[i] = m.rng.Uint64()
	}
	v := verdict{reason: pass, flipBit: -1}
	d := &m.d

	// The chain steps for every packet, so its state depends only on the
	// packet sequence.
	geLost := false
	if g := d.Burst; g.enabled() {
		p := g.LossGood
		if m.bad {
			p = g.lossBad()
		}
		geLost = unit(r[1]) < p
		if m.bad {
			m.bad = !(unit(r[2]) < g.R)
		} else {
			m.bad = unit(r[2]) < g.P
		}
	}
	m.purge(now)
	n := int64(len(pkt))

	switch {
	case m.blackholed(now):
		v.reason = dropBlackhole
		return v
	case unit(r[0]) < d.Loss || geLost:
		v.reason = dropLoss
		return v
	}

	dep := now
	if d.Rate > 0 {
		live := int64(len(m.queue) - m.qHead)
		if live > 0 && ((m.qPackets > 0 && live+1 > m.qPackets) || (m.qBytes > 0 && m.qSum+n > m.qBytes)) {
			v.reason = dropQueue
			return v
		}
		start := max(now, m.linkFree)
		m.linkFree = start + (n*1e9+d.Rate-1)/d.Rate
		m.queue = append(m.queue, queued{done: m.linkFree, n: n})
		m.qSum += n
		m.peakPkts = max(m.peakPkts, live+1)
		m.peakB = max(m.peakB, m.qSum)
		dep = m.linkFree
	}

	rel := dep + int64(d.Delay)
	if d.Jitter > 0 {
		rel += int64(unit(r[3]) * float64(d.Jitter))
	}
	rel = max(rel, m.lastRel)
	if unit(r[4]) < d.Reorder {
		v.reordered = true
		rel += m.reorderBy
	} else {
		m.lastRel = rel
	}
	v.release = rel

	if unit(r[5]) < d.Corrupt {
		if off := payloadOffset(pkt); off < len(pkt) {
			bits := uint64(len(pkt)-off) * 8
			v.flipBit = off*8 + int(r[6]%bits)
		}
	}
	return v
}

// purge forgets the queued packets that have been sent by now.
func (m *model) purge(now int64) {
	for m.qHead < len(m.queue) && m.queue[m.qHead].done <= now {
		m.qSum -= m.queue[m.qHead].n
		m.qHead++
	}
	if m.qHead == len(m.queue) {
		m.queue, m.qHead = m.queue[:0], 0
	} else if m.qHead >= 64 && m.qHead*2 >= len(m.queue) {
		k := copy(m.queue, m.queue[m.qHead:])
		m.queue, m.qHead = m.queue[:k], 0
	}
}

// queueLen returns the packets and bytes waiting for the rate cap at now
// (as last purged).
func (m *model) queueLen() (packets, bytes int64) {
	return int64(len(m.queue) - m.qHead), m.qSum
}

// IP protocol numbers whose checksum covers the whole transport payload.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// payloadOffset returns the offset of the transport payload of the IP
// packet pkt: the bytes that corruption may flip, all covered by a
// transport checksum the receiver verifies. It returns len(pkt) when there
// is nothing safe to flip: a malformed packet, a protocol other than TCP,
// UDP, ICMP and ICMPv6, an IPv6 packet with extension headers, a UDP
// datagram over IPv4 without a checksum, or a non-first IPv4 fragment
// (its checksum would be checked only after reassembly).
func payloadOffset(pkt []byte) int {
	none := len(pkt)
	if len(pkt) < 1 {
		return none
	}
	var hdr, proto int
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return none
		}
		hdr = int(pkt[0]&0x0f) * 4
		if hdr < 20 || hdr > len(pkt) {
			return none
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or an offset
			return none
		}
		proto = int(pkt[9])
	case 6:
		if len(pkt) < 40 {
			return none
		}
		hdr, proto = 40, int(pkt[6])
	default:
		return none
	}
	t := pkt[hdr:]
	var th int
	switch proto {
	case protoTCP:
		if len(t) < 20 {
			return none
		}
		th = int(t[12]>>4) * 4
		if th < 20 {
			return none
		}
	case protoUDP:
		if len(t) < 8 || (pkt[0]>>4 == 4 && t[6] == 0 && t[7] == 0) {
			return none
		}
		th = 8
	case protoICMP, protoICMPv6:
		th = 8
	default:
		return none
	}
	if hdr+th > len(pkt) {
		return none
	}
	return hdr + th
}

// flip flips bit i of b (bit 0 is the high bit of b[0]).
func flip(b []byte, i int) {
	b[i/8] ^= 0x80 >> (i % 8)
}
