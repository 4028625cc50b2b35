package link

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// These tests drive the pure model with made-up times: no root, no TUN,
// no goroutines.

// ipv4 returns an IPv4 packet of protocol proto whose transport part is
// transport, with header checksums left zero (the model never reads them).
func ipv4(proto byte, transport []byte) []byte {
	p := make([]byte, 20+len(transport))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, proto
	copy(p[12:], []byte{10, 99, 0, 1, 10, 99, 0, 2})
	copy(p[20:], transport)
	return p
}

// udp returns a UDP header (checksum 0xbeef) and payload.
func udp(payload int) []byte {
	u := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	u[6], u[7] = 0xbe, 0xef
	return u
}

// tcp returns a TCP header of hdr bytes and payload.
func tcp(hdr, payload int) []byte {
	s := make([]byte, hdr+payload)
	s[12] = byte(hdr/4) << 4
	return s
}

func pkt(n int) []byte { return ipv4(protoUDP, udp(n-28)) }

const ms = int64(time.Millisecond)

func TestPayloadOffset(t *testing.T) {
	frag := ipv4(protoUDP, udp(100))
	frag[7] = 10 // fragment offset
	mf := ipv4(protoUDP, udp(100))
	mf[6] = 0x20 // more fragments
	noCsum := ipv4(protoUDP, udp(100))
	noCsum[26], noCsum[27] = 0, 0
	opts := ipv4(protoUDP, nil)
	opts = append(opts[:20], make([]byte, 8)...) // 8 bytes of options
	opts[0] = 0x47
	opts = append(opts, udp(10)...)
	v6 := make([]byte, 40, 40+8+50)
	v6[0], v6[6] = 0x60, protoUDP
	v6 = append(v6, udp(50)...)
	v6ext := append([]byte(nil), v6...)
	v6ext[6] = 0 // hop-by-hop options
	v6csum0 := append([]byte(nil), v6...)
	v6csum0[46], v6csum0[47] = 0, 0

	for _, tc := range []struct {
		name string
		pkt  []byte
		want int // -1: nothing to flip
	}{
		{"udp", ipv4(protoUDP, udp(100)), 28},
		{"udp empty", ipv4(protoUDP, udp(0)), -1},
		{"udp without checksum", noCsum, -1},
		{"ip options", opts, 36},
		{"tcp", ipv4(protoTCP, tcp(20, 10)), 40},
		{"tcp options", ipv4(protoTCP, tcp(32, 10)), 52},
		{"tcp bare ack", ipv4(protoTCP, tcp(32, 0)), -1},
		{"tcp bad offset", ipv4(protoTCP, tcp(20, 0)[:12]), -1},
		{"icmp", ipv4(protoICMP, make([]byte, 64)), 28},
		{"other protocol", ipv4(47, make([]byte, 64)), -1},
		{"fragment", frag, -1},
		{"first fragment", mf, -1},
		{"ipv6 udp", v6, 48},
		{"ipv6 udp checksum 0 (invalid, still checked)", v6csum0, 48},
		{"ipv6 extension header", v6ext, -1},
		{"short", []byte{0x45, 0}, -1},
		{"empty", nil, -1},
		{"not ip", make([]byte, 60), -1},
	} {
		want := tc.want
		if want < 0 {
			want = len(tc.pkt)
		}
		if got := payloadOffset(tc.pkt); got != want {
			t.Errorf("%s: payload at %d, want %d", tc.name, got, want)
		}
	}
}

func TestBlackholeSchedule(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		b    Blackhole
		at   time.Duration // since the epoch
		want bool
	}{
		{Blackhole{}, 0, false},
		{Blackhole{Pass: s}, 2 * s, false},
		{Blackhole{Drop: s}, 0, true}, // no Pass: always
		{Blackhole{Drop: s}, time.Hour, true},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 0, false},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 5*s - 1, false},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 5 * s, true},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 7*s - 1, true},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 7 * s, false},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, 12 * s, true},
		{Blackhole{Pass: 5 * s, Drop: 2 * s}, -s, false},
		{Blackhole{Drop: 2 * s, Once: true}, 0, true},
		{Blackhole{Drop: 2 * s, Once: true}, 2 * s, false},
		{Blackhole{Pass: s, Drop: 2 * s, Once: true}, s, true},
		{Blackhole{Pass: s, Drop: 2 * s, Once: true}, 3*s + time.Hour, false},
	} {
		const epoch = 10 * int64(time.Second)
		if got := tc.b.active(epoch, epoch+int64(tc.at)); got != tc.want {
			t.Errorf("%v at %v: %v, want %v", tc.b, tc.at, got, tc.want)
		}
	}

	// In the model, on arrival, from when the schedule was set.
	m := newModel(Direction{}, 1, 1, 0)
	m.set(Direction{Blackhole: Blackhole{Pass: 100 * time.Millisecond, Drop: 50 * time.Millisecond}}, 1000*ms)
	for _, tc := range []struct {
		at   int64
		want reason
	}{{1000 * ms, pass}, {1099 * ms, pass}, {1100 * ms, dropBlackhole}, {1149 * ms, dropBlackhole}, {1150 * ms, pass}} {
		if v := m.decide(tc.at, pkt(100)); v.reason != tc.want {
			t.Errorf("at %dms: %v, want %v", tc.at/ms, v.reason, tc.want)
		}
	}
	// Setting another field keeps the schedule's phase.
	d := m.d
	d.Delay = time.Millisecond
	m.set(d, 1160*ms)
	if !m.blackholed(1260 * ms) {
		t.Error("changing the delay restarted the blackhole schedule")
	}
}

func TestDelayJitterOrder(t *testing.T) {
	m := newModel(Direction{Delay: 15 * time.Millisecond, Jitter: 10 * time.Millisecond}, 7, 1, 0)
	var last int64
	for i := 0; i < 1000; i++ {
		now := int64(i) * ms / 4 // packets 250 µs apart, closer than the jitter
		v := m.decide(now, pkt(100))
		if v.reason != pass || v.flipBit >= 0 || v.reordered {
			t.Fatalf("packet %d: %+v", i, v)
		}
		if v.release < now+15*ms || v.release >= max(now+25*ms, last+1) {
			t.Fatalf("packet %d at %d released at %d: outside [delay, delay+jitter) and order", i, now, v.release)
		}
		if v.release < last {
			t.Fatalf("packet %d released at %d before the one ahead (%d)", i, v.release, last)
		}
		last = v.release
	}

	// The zero Direction passes everything at once.
	z := newModel(Direction{}, 1, 1, 0)
	for i := int64(0); i < 100; i++ {
		if v := z.decide(i, pkt(1500)); v.reason != pass || v.release != i || v.reordered || v.flipBit >= 0 {
			t.Fatalf("zero direction: %+v at %d", v, i)
		}
	}
}

func TestReorder(t *testing.T) {
	m := newModel(Direction{Delay: 10 * time.Millisecond, Reorder: 0.2, ReorderBy: 5 * time.Millisecond}, 3, 1, 0)
	var lastInOrder int64
	reordered := 0
	for i := 0; i < 1000; i++ {
		now := int64(i) * ms
		v := m.decide(now, pkt(100))
		if v.reordered {
			reordered++
			if v.release != max(now+10*ms, lastInOrder)+5*ms {
				t.Fatalf("reordered packet %d released at %d", i, v.release)
			}
			continue
		}
		if v.release < lastInOrder {
			t.Fatalf("in-order packet %d overtook", i)
		}
		lastInOrder = v.release
	}
	if reordered < 150 || reordered > 250 {
		t.Errorf("reordered %d of 1000 at 0.2", reordered)
	}
	// ReorderBy zero means max(Delay/2, 1ms).
	if m := newModel(Direction{Delay: 10 * time.Millisecond}, 1, 1, 0); m.reorderBy != 5*ms {
		t.Errorf("default reorder-by %v", time.Duration(m.reorderBy))
	}
	if m := newModel(Direction{}, 1, 1, 0); m.reorderBy != ms {
		t.Errorf("default reorder-by without delay %v", time.Duration(m.reorderBy))
	}
}

func TestRateQueue(t *testing.T) {
	const rate = 1_000_000 // 1 MB/s: a 1000-byte packet takes 1 ms
	for _, tc := range []struct {
		name     string
		d        Direction
		admitted int // of a burst of ten 1000-byte packets at once
	}{
		{"packets", Direction{Rate: rate, QueuePackets: 3}, 3},
		{"bytes", Direction{Rate: rate, QueueBytes: 4500}, 4},
		{"both, packets bind", Direction{Rate: rate, QueuePackets: 2, QueueBytes: 4500}, 2},
		{"both, bytes bind", Direction{Rate: rate, QueuePackets: 8, QueueBytes: 2500}, 2},
		{"default 25 packets", Direction{Rate: rate}, 10},
		{"one packet", Direction{Rate: rate, QueuePackets: 1}, 1},
		{"tiny byte bound: an empty queue takes any packet", Direction{Rate: rate, QueueBytes: 10}, 1},
	} {
		m := newModel(tc.d, 1, 1, 0)
		admitted := 0
		for i := 0; i < 10; i++ {
			v := m.decide(0, pkt(1000))
			switch v.reason {
			case pass:
				admitted++
				if want := int64(admitted) * ms; v.release != want {
					t.Errorf("%s: packet %d released at %v, want %v", tc.name, i, time.Duration(v.release), time.Duration(want))
				}
			case dropQueue:
			default:
				t.Errorf("%s: packet %d: %v", tc.name, i, v.reason)
			}
		}
		if admitted != tc.admitted {
			t.Errorf("%s: admitted %d of a burst of 10, want %d", tc.name, admitted, tc.admitted)
		}
		if m.peakPkts != int64(tc.admitted) || m.peakB != int64(tc.admitted)*1000 {
			t.Errorf("%s: peak %d packets %d bytes", tc.name, m.peakPkts, m.peakB)
		}
		// Once the first packet has been sent there is room for one more,
		// sent after the others.
		if tc.admitted < 10 {
			v := m.decide(ms, pkt(1000))
			if v.reason != pass || v.release != int64(tc.admitted+1)*ms {
				t.Errorf("%s: after 1 ms: %v at %v", tc.name, v.reason, time.Duration(v.release))
			}
		}
		// After everything has drained the link is idle again.
		if v := m.decide(time.Second.Nanoseconds(), pkt(1000)); v.reason != pass || v.release != int64(time.Second)+ms {
			t.Errorf("%s: idle link: %v at %v", tc.name, v.reason, time.Duration(v.release))
		}
		if p, b := m.queueLen(); p != 1 || b != 1000 {
			t.Errorf("%s: queue %d packets %d bytes after draining", tc.name, p, b)
		}
	}

	// A steady overload: the queue never holds more than its bound and
	// the link sends at the rate.
	m := newModel(Direction{Rate: rate, QueuePackets: 25, Delay: 15 * time.Millisecond}, 1, 1, 0)
	var passed, last int64
	for i := int64(0); i < 100000; i++ {
		now := i * ms / 2 // twice the rate
		v := m.decide(now, pkt(1000))
		if v.reason == pass {
			passed++
			last = v.release
			// Waiting at most 25 packets' time, plus the delay.
			if v.release-now > 25*ms+15*ms {
				t.Fatalf("packet %d waits %v", i, time.Duration(v.release-now))
			}
		}
		if p, _ := m.queueLen(); p > 25 {
			t.Fatalf("queue holds %d packets", p)
		}
	}
	if r := float64(passed*1000) / (float64(last-15*ms) / 1e9); math.Abs(r-rate) > rate*0.001 {
		t.Errorf("overloaded link sends %.0f B/s, rate %d", r, rate)
	}
	if m.peakPkts != 25 {
		t.Errorf("peak %d packets, bound 25", m.peakPkts)
	}
}

func TestLossRate(t *testing.T) {
	const n = 100000
	for _, p := range []float64{0, 0.01, 0.1, 0.5, 1} {
		m := newModel(Direction{Loss: p}, 42, 1, 0)
		lost := 0
		for i := 0; i < n; i++ {
			if m.decide(int64(i), pkt(100)).reason == dropLoss {
				lost++
			}
		}
		sigma := math.Sqrt(n * p * (1 - p))
		if math.Abs(float64(lost)-n*p) > 3*sigma+0.5 {
			t.Errorf("loss %g: lost %d of %d, want %.0f ± %.0f", p, lost, n, n*p, 3*sigma)
		}
	}
}

func TestGilbertElliott(t *testing.T) {
	const n = 200000
	g := GilbertElliott{P: 0.01, R: 0.25} // bad spells of 4 packets on average
	m := newModel(Direction{Burst: g}, 5, 1, 0)
	lost, runs, run := 0, 0, 0
	for i := 0; i < n; i++ {
		if m.decide(int64(i), pkt(100)).reason == dropLoss {
			lost++
			run++
			continue
		}
		if run > 0 {
			runs++
		}
		run = 0
	}
	want := g.P / (g.P + g.R) // stationary share of the bad state, all lost there
	if rate := float64(lost) / n; math.Abs(rate-want) > want*0.1 {
		t.Errorf("long-run loss %.4f, want %.4f", rate, want)
	}
	mean := float64(lost) / float64(runs)
	if math.Abs(mean-1/g.R) > 0.1/g.R {
		t.Errorf("mean burst %.2f packets, want %.2f", mean, 1/g.R)
	}
	t.Logf("Gilbert-Elliott p=%g r=%g: loss %.4f (want %.4f), %d bursts of %.2f packets on average", g.P, g.R, float64(lost)/n, want, runs, mean)

	// With loss in both states the rate is (R*LossGood + P*LossBad)/(P+R).
	g = GilbertElliott{P: 0.05, R: 0.2, LossGood: 0.01, LossBad: 0.5}
	m = newModel(Direction{Burst: g}, 9, 1, 0)
	lost = 0
	for i := 0; i < n; i++ {
		if m.decide(int64(i), pkt(100)).reason == dropLoss {
			lost++
		}
	}
	want = (g.R*g.LossGood + g.P*g.LossBad) / (g.P + g.R)
	if rate := float64(lost) / n; math.Abs(rate-want) > want*0.1 {
		t.Errorf("long-run loss %.4f, want %.4f", rate, want)
	}
}

func TestCorruptDecision(t *testing.T) {
	const n = 10000
	m := newModel(Direction{Corrupt: 0.1}, 11, 1, 0)
	flipped := 0
	for i := 0; i < n; i++ {
		p := pkt(200)
		v := m.decide(int64(i), p)
		if v.flipBit < 0 {
			continue
		}
		flipped++
		if v.flipBit < 28*8 || v.flipBit >= len(p)*8 {
			t.Fatalf("bit %d flipped outside the UDP payload", v.flipBit)
		}
		flip(p, v.flipBit)
		if payloadOffset(p) != 28 || p[0] != 0x45 {
			t.Fatal("flip touched the headers")
		}
	}
	if math.Abs(float64(flipped)-0.1*n) > 3*math.Sqrt(n*0.1*0.9) {
		t.Errorf("corrupted %d of %d at 0.1", flipped, n)
	}
	// Nothing to flip in a bare ACK.
	m = newModel(Direction{Corrupt: 1}, 1, 1, 0)
	if v := m.decide(0, ipv4(protoTCP, tcp(20, 0))); v.flipBit >= 0 {
		t.Errorf("flipped bit %d of a bare ACK", v.flipBit)
	}
	b := []byte{0, 0}
	flip(b, 0)
	flip(b, 15)
	if b[0] != 0x80 || b[1] != 0x01 {
		t.Errorf("flip: % x", b)
	}
}

// everything is a Direction with every impairment on.
var everything = Direction{
	Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05,
	Burst:   GilbertElliott{P: 0.02, R: 0.3},
	Reorder: 0.05, Rate: 1_000_000, QueuePackets: 10,
	Blackhole: Blackhole{Pass: 300 * time.Millisecond, Drop: 50 * time.Millisecond},
	Corrupt:   0.05,
}

// run feeds a fixed packet sequence (sizes and times from a fixed
// formula) to a model and returns its verdicts.
func runModel(d Direction, seed uint64, n int) []verdict {
	m := newModel(d, seed, 1, 0)
	out := make([]verdict, n)
	for i := range out {
		now := int64(i) * 700 * int64(time.Microsecond)
		out[i] = m.decide(now, pkt(100+(i*37)%1300))
	}
	return out
}

func TestDeterministic(t *testing.T) {
	const n = 5000
	a, b := runModel(everything, 99, n), runModel(everything, 99, n)
	counts := map[reason]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("packet %d: %+v and %+v from one seed", i, a[i], b[i])
		}
		counts[a[i].reason]++
	}
	t.Logf("decisions of %d packets: %v", n, counts)
	for _, r := range []reason{pass, dropLoss, dropQueue, dropBlackhole} {
		if counts[r] == 0 {
			t.Errorf("no packet got %v: the sequence does not exercise it", r)
		}
	}
	c := runModel(everything, 100, n)
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same > n/2 {
		t.Errorf("seeds 99 and 100 agree on %d of %d packets", same, n)
	}

	// Each packet draws the same random values whatever is configured:
	// turning jitter and reordering on does not change which packets
	// random loss drops.
	lossOnly := runModel(Direction{Loss: 0.1}, 7, n)
	more := runModel(Direction{Loss: 0.1, Jitter: time.Millisecond, Reorder: 0.3, Corrupt: 0.2}, 7, n)
	for i := range lossOnly {
		if (lossOnly[i].reason == dropLoss) != (more[i].reason == dropLoss) {
			t.Fatalf("packet %d: loss decision changed with other impairments on", i)
		}
	}
}

func TestReseedAndSet(t *testing.T) {
	m := newModel(Direction{Loss: 0.5}, 1, 1, 0)
	first := make([]reason, 100)
	for i := range first {
		first[i] = m.decide(int64(i), pkt(100)).reason
	}
	m.reseed(1, 1)
	for i := range first {
		if r := m.decide(int64(i), pkt(100)).reason; r != first[i] {
			t.Fatalf("after reseeding with the same seed packet %d: %v, first time %v", i, r, first[i])
		}
	}
	// Other streams of one seed differ (A->B and B->A are independent).
	o := newModel(Direction{Loss: 0.5}, 1, 2, 0)
	same := 0
	for i := range first {
		if o.decide(int64(i), pkt(100)).reason == first[i] {
			same++
		}
	}
	if same > 80 {
		t.Errorf("streams 1 and 2 agree on %d of 100", same)
	}
	// set clamps out-of-range values.
	m.set(Direction{Loss: 7, Delay: -time.Second, Rate: -1}, 0)
	if m.d.Loss != 1 || m.d.Delay != 0 || m.d.Rate != 0 {
		t.Errorf("normalized to %+v", m.d)
	}
}

func TestValidate(t *testing.T) {
	good := Config{A: "a", B: "b", AddrA: "10.0.0.1/24", AddrB: "10.0.0.2/24", AtoB: everything, BtoA: DefaultDirection()}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	v6 := good
	v6.AddrA, v6.AddrB = "fd00::1/64", "fd00::2/64"
	if err := v6.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no A", func(c *Config) { c.A = "" }},
		{"slash in B", func(c *Config) { c.B = "x/y" }},
		{"same names", func(c *Config) { c.B = c.A }},
		{"long device", func(c *Config) { c.DevA = "abcdefghijklmnop" }},
		{"bad address", func(c *Config) { c.AddrA = "10.0.0.1" }},
		{"mixed families", func(c *Config) { c.AddrB = "fd00::2/64" }},
		{"same address", func(c *Config) { c.AddrB = c.AddrA }},
		{"small MTU", func(c *Config) { c.MTU = 100 }},
		{"IPv6 MTU", func(c *Config) { c.AddrA, c.AddrB, c.MTU = "fd00::1/64", "fd00::2/64", 1000 }},
		{"negative delay", func(c *Config) { c.AtoB.Delay = -1 }},
		{"negative jitter", func(c *Config) { c.BtoA.Jitter = -1 }},
		{"loss > 1", func(c *Config) { c.AtoB.Loss = 1.5 }},
		{"NaN loss", func(c *Config) { c.AtoB.Loss = math.NaN() }},
		{"burst p", func(c *Config) { c.AtoB.Burst.P = -0.1 }},
		{"corrupt", func(c *Config) { c.BtoA.Corrupt = 2 }},
		{"negative rate", func(c *Config) { c.AtoB.Rate = -1 }},
		{"negative queue", func(c *Config) { c.AtoB.QueuePackets = -1 }},
		{"negative queue bytes", func(c *Config) { c.AtoB.QueueBytes = -1 }},
		{"negative blackhole", func(c *Config) { c.AtoB.Blackhole.Drop = -1 }},
	} {
		c := good
		tc.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestDirectionString(t *testing.T) {
	if got, want := DefaultDirection().String(), "delay=15ms rate=10Mbit/s queue=25pkt"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got := everything.String()
	want := "delay=10ms jitter=5ms loss=0.05 burst=(p=0.02 r=0.3 good=0 bad=1) reorder=0.05 rate=8Mbit/s queue=10pkt blackhole=300ms/50ms corrupt=0.05"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
