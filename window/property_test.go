package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// frame is what the simulated peer sends a receiver: data, or BLOCKED.
type frame struct {
	data    uint64
	blocked bool
	limit   uint64
}

// simStream is one stream: our Receiver, the peer's Sender, and the frames
// in flight each way.
type simStream struct {
	id        int
	r         *Receiver
	s         Sender
	toRecv    []frame  // peer -> us, in order (BLOCKED may be reordered)
	toPeer    []uint64 // our WINDOW_UPDATEs -> peer
	inFlight  uint64   // data bytes in toRecv
	lastLimit uint64
	stalled   bool // the application never reads
}

type sim struct {
	t      *testing.T
	rng    *rand.Rand
	cfg    Config
	b      *Budget
	now    time.Time
	rtt    time.Duration
	live   []*simStream
	nextID int
	where  string // run/step/op, for failure messages

	// urgencies: streams open with random urgencies, which change now and
	// then; off, every stream has the zero Config's urgency 0.
	urgencies bool

	// counters, to check the simulation explored what it should
	opened, refused, closed, grants, blockedGrants, shrinks, grownBeyondInitial int
	priorityRefusals                                                            int
}

func (m *sim) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("%s: %s", m.where, fmt.Sprintf(format, args...))
}

func (m *sim) open() {
	if len(m.live) >= 16 {
		return
	}
	free := m.b.Total() - m.b.Used()
	cfg := m.cfg
	if m.urgencies {
		cfg.Urgency = uint8(m.rng.IntN(8))
	}
	r, err := NewReceiver(cfg, m.b, m.now)
	if err != nil {
		if !errors.Is(err, ErrBudgetExhausted) {
			m.fatalf("NewReceiver: %v", err)
		}
		if free >= m.cfg.Initial {
			m.fatalf("refused with %d free for a window of %d", free, m.cfg.Initial)
		}
		m.refused++
		return
	}
	if free < m.cfg.Initial {
		m.fatalf("admitted with %d free for a window of %d", free, m.cfg.Initial)
	}
	r.SetRTT(m.rtt)
	m.nextID++
	m.live = append(m.live, &simStream{
		id: m.nextID, r: r, s: NewSender(m.cfg.Initial),
		lastLimit: r.Limit(), stalled: m.rng.IntN(8) == 0,
	})
	m.opened++
}

func (m *sim) pick() *simStream {
	if len(m.live) == 0 {
		return nil
	}
	return m.live[m.rng.IntN(len(m.live))]
}

// upTo returns a random amount in [0, n], often all of it.
func (m *sim) upTo(n uint64) uint64 {
	switch m.rng.IntN(3) {
	case 0:
		return n
	default:
		return m.rng.Uint64N(n + 1)
	}
}

func (m *sim) newLimit(st *simStream, limit uint64, ok bool, what string) {
	if !ok {
		if limit != 0 {
			m.fatalf("stream %d: %s returned limit %d without ok", st.id, what, limit)
		}
		return
	}
	if limit != st.r.Limit() {
		m.fatalf("stream %d: %s returned %d, limit is %d", st.id, what, limit, st.r.Limit())
	}
	if limit <= st.lastLimit {
		m.fatalf("stream %d: %s granted %d, not above the previous %d", st.id, what, limit, st.lastLimit)
	}
	st.toPeer = append(st.toPeer, limit)
	m.grants++
}

func (m *sim) step() {
	if m.urgencies {
		m.stepUrgent()
		return
	}
	m.step1()
}

// stepUrgent is a step with urgencies: now and then a stream's urgency
// changes, and a step in which a stream's window grew must not have taken
// the budget's use past that stream's share (unless it was past already).
func (m *sim) stepUrgent() {
	if st := m.pick(); st != nil && m.rng.IntN(50) == 0 {
		st.r.SetUrgency(uint8(m.rng.IntN(8)))
	}
	before := m.b.Used()
	growths := make(map[*simStream]uint64, len(m.live))
	for _, st := range m.live {
		growths[st] = st.r.Counts().Growths
	}
	m.step1()
	for _, st := range m.live {
		g, ok := growths[st]
		if !ok || st.r.Counts().Growths == g {
			continue
		}
		if share := m.b.Share(st.r.Urgency()); m.b.Used() > max(before, share) {
			m.fatalf("stream %d (urgency %d) grew the budget's use from %d to %d past its share %d",
				st.id, st.r.Urgency(), before, m.b.Used(), share)
		}
	}
}

func (m *sim) step1() {
	st := m.pick()
	op := m.rng.IntN(100)
	m.where += fmt.Sprintf(" op %d", op)
	switch {
	case op < 20: // the peer writes within its credit
		if st == nil {
			return
		}
		n := m.upTo(st.s.Available())
		if err := st.s.OnSent(n); err != nil {
			m.fatalf("stream %d: peer within credit: %v", st.id, err)
		}
		if n > 0 {
			st.toRecv = append(st.toRecv, frame{data: n})
			st.inFlight += n
		}
	case op < 40: // a frame from the peer arrives
		if st == nil || len(st.toRecv) == 0 {
			return
		}
		i := 0
		if m.rng.IntN(8) == 0 { // a BLOCKED overtakes data (separate paths)
			for j, f := range st.toRecv {
				if f.blocked {
					i = j
					break
				}
			}
		}
		f := st.toRecv[i]
		st.toRecv = append(st.toRecv[:i], st.toRecv[i+1:]...)
		if f.blocked {
			limit, ok := st.r.OnBlocked(f.limit, m.now)
			if ok {
				m.blockedGrants++
			}
			m.newLimit(st, limit, ok, "OnBlocked")
			return
		}
		st.inFlight -= f.data
		if err := st.r.OnData(f.data); err != nil {
			m.fatalf("stream %d: peer that respected its credit got %v", st.id, err)
		}
	case op < 50: // the peer, out of credit, says so
		if st == nil {
			return
		}
		if limit, send := st.s.Blocked(); send {
			if limit != st.s.Max() || st.s.Available() != 0 {
				m.fatalf("stream %d: BLOCKED at %d with max %d, %d available", st.id, limit, st.s.Max(), st.s.Available())
			}
			st.toRecv = append(st.toRecv, frame{blocked: true, limit: limit})
		}
	case op < 70: // the application reads
		if st == nil || st.stalled {
			return
		}
		limit, ok := st.r.OnConsumed(m.upTo(st.r.Buffered()), m.now)
		m.newLimit(st, limit, ok, "OnConsumed")
	case op < 80: // a WINDOW_UPDATE reaches the peer
		if st == nil || len(st.toPeer) == 0 {
			return
		}
		i := 0
		if m.rng.IntN(8) == 0 { // updates may be reordered: stale ones are ignored
			i = m.rng.IntN(len(st.toPeer))
		}
		l := st.toPeer[i]
		st.toPeer = append(st.toPeer[:i], st.toPeer[i+1:]...)
		st.s.OnUpdate(l)
	case op < 85:
		for _, st := range m.live {
			if st.r.OnTick(m.now) {
				m.shrinks++
			}
		}
	case op < 89:
		if st == nil {
			return
		}
		st.r.SetBufferCap(m.rng.Uint64N(max(st.r.Window(), st.r.BufferSize()) + 1))
	case op < 95: // time passes
		var d time.Duration
		switch m.rng.IntN(4) {
		case 0:
			d = 0
		case 1:
			d = time.Duration(m.rng.Int64N(int64(m.rtt) + 1))
		case 2:
			d = time.Duration(m.rng.Int64N(int64(8*m.rtt) + 1))
		default:
			d = time.Duration(m.rng.Int64N(int64(2*m.cfg.IdleAfter) + 1))
		}
		m.now = m.now.Add(d)
		if m.rng.IntN(20) == 0 {
			m.rtt = []time.Duration{0, ms(1), ms(10), ms(100)}[m.rng.IntN(4)]
			for _, st := range m.live {
				st.r.SetRTT(m.rtt)
			}
		}
	case op < 97:
		if st == nil {
			return
		}
		st.r.Close()
		m.priorityRefusals += int(st.r.Counts().PriorityRefusals)
		for i, x := range m.live {
			if x == st {
				m.live = append(m.live[:i], m.live[i+1:]...)
				break
			}
		}
		m.closed++
	default:
		m.open()
	}
}

func (m *sim) check() {
	var sum uint64
	for _, st := range m.live {
		r, s := st.r, &st.s
		if !(r.Consumed() <= r.Received() && r.Received() <= r.Limit()) {
			m.fatalf("stream %d: consumed %d, received %d, limit %d", st.id, r.Consumed(), r.Received(), r.Limit())
		}
		if r.Limit() < st.lastLimit {
			m.fatalf("stream %d: limit went down from %d to %d", st.id, st.lastLimit, r.Limit())
		}
		st.lastLimit = r.Limit()
		if r.Buffered() > r.Reserved() {
			m.fatalf("stream %d: %d buffered, %d reserved", st.id, r.Buffered(), r.Reserved())
		}
		if need := r.needed(r.Window()); r.Reserved() < need || r.Reserved()-need >= 4096 {
			m.fatalf("stream %d: reserved %d, needs %d (limit-consumed %d, window %d, cap %d)",
				st.id, r.Reserved(), need, r.BufferSize(), r.Window(), r.bufCap)
		}
		if r.Window() < m.cfg.Initial || r.Window() > m.cfg.Max {
			m.fatalf("stream %d: window %d outside [%d, %d]", st.id, r.Window(), m.cfg.Initial, m.cfg.Max)
		}
		if r.Window() > m.cfg.Initial {
			m.grownBeyondInitial++
		}
		if c := r.Counts(); c.PriorityRefusals > c.Refusals {
			m.fatalf("stream %d: %d priority refusals of %d refusals", st.id, c.PriorityRefusals, c.Refusals)
		}
		if s.Sent() > s.Max() {
			m.fatalf("stream %d: peer sent %d with max %d", st.id, s.Sent(), s.Max())
		}
		if s.Max() > r.Limit() {
			m.fatalf("stream %d: peer holds credit to %d, receiver granted %d", st.id, s.Max(), r.Limit())
		}
		if r.Received()+st.inFlight != s.Sent() {
			m.fatalf("stream %d: received %d + in flight %d != sent %d", st.id, r.Received(), st.inFlight, s.Sent())
		}
		sum += r.Reserved()
	}
	if used := m.b.Used(); sum != used || used > m.b.Total() {
		m.fatalf("sum of reservations %d, budget used %d of %d", sum, used, m.b.Total())
	}
}

func pickU(rng *rand.Rand, xs ...uint64) uint64 { return xs[rng.IntN(len(xs))] }

// TestProperties drives several receivers sharing one budget through random
// interleavings and checks every invariant after every step.
func TestProperties(t *testing.T) { runProperties(t, false) }

// TestPropertiesUrgencies is TestProperties with streams of random,
// changing urgencies.
func TestPropertiesUrgencies(t *testing.T) { runProperties(t, true) }

func runProperties(t *testing.T, urgencies bool) {
	const (
		seed  = 0x62702f31 // "bp/1"
		runs  = 200
		steps = 2000
	)
	var total sim
	for run := 0; run < runs; run++ {
		rng := rand.New(rand.NewPCG(seed, uint64(run)))
		initial := pickU(rng, 1, 3, 1000, 4096, 10000, 16*kib, 64*kib)
		cfg := Config{
			Initial:   initial,
			Max:       initial*pickU(rng, 1, 2, 3, 8, 32) + pickU(rng, 0, 0, 777),
			IdleAfter: []time.Duration{0, ms(50), time.Second}[rng.IntN(3)],
		}
		m := &sim{
			t:   t,
			rng: rng,
			cfg: cfg,
			b:   NewBudget(initial*(1+rng.Uint64N(12)) + rng.Uint64N(initial)),
			now: t0,
			rtt: []time.Duration{0, ms(1), ms(10), ms(100)}[rng.IntN(4)],

			urgencies: urgencies,
		}
		m.where = fmt.Sprintf("run %d (%+v, budget %d)", run, cfg, m.b.Total())
		m.open() // the budget always fits one stream
		if len(m.live) != 1 {
			t.Fatalf("%s: first stream refused", m.where)
		}
		for i := 0; i < steps; i++ {
			m.where = fmt.Sprintf("run %d step %d (%+v, budget %d)", run, i, cfg, m.b.Total())
			m.step()
			m.check()
		}
		for _, st := range m.live {
			st.r.Close()
		}
		for _, st := range m.live {
			m.priorityRefusals += int(st.r.Counts().PriorityRefusals)
		}
		if m.b.Used() != 0 {
			t.Fatalf("run %d: %d bytes still used after closing every stream", run, m.b.Used())
		}
		total.opened += m.opened
		total.refused += m.refused
		total.closed += m.closed
		total.grants += m.grants
		total.blockedGrants += m.blockedGrants
		total.shrinks += m.shrinks
		total.grownBeyondInitial += m.grownBeyondInitial
		total.priorityRefusals += m.priorityRefusals
	}
	t.Logf("opened %d, refused %d, closed %d, grants %d (%d on BLOCKED), idle shrinks %d, grown stream-steps %d, priority refusals %d",
		total.opened, total.refused, total.closed, total.grants, total.blockedGrants, total.shrinks, total.grownBeyondInitial, total.priorityRefusals)
	if urgencies && total.priorityRefusals == 0 {
		t.Errorf("the simulation never refused growth for priority")
	}
	// The simulation must have reached every interesting state.
	for name, n := range map[string]int{
		"refused": total.refused, "closed": total.closed, "grants on BLOCKED": total.blockedGrants,
		"idle shrinks": total.shrinks, "growth": total.grownBeyondInitial,
	} {
		if n == 0 {
			t.Errorf("the simulation never exercised %s", name)
		}
	}
}

// TestStalledStreamIsolation: one stream grows to Max, then its application
// stops reading with its whole grant buffered. The stream holds exactly what
// it granted, no more; every other stream is admitted with at least Initial
// and keeps getting updates as it reads.
func TestStalledStreamIsolation(t *testing.T) {
	const (
		floor = 64 * kib
		maxW  = mib
		k     = 4
	)
	b := NewBudget(maxW + k*floor)
	cfg := Config{Initial: floor, Max: maxW, IdleAfter: time.Second}
	a := newReceiver(t, cfg, b, t0)
	a.SetRTT(ms(10))
	as := NewSender(floor)
	now := growTo(t, a, &as, t0, maxW)

	// A stalls: its peer fills the window, nobody reads.
	require.NoError(t, as.OnSent(as.Available()))
	require.NoError(t, a.OnData(as.Sent()-a.Received()))
	aLimit := a.Limit()
	require.Equal(t, uint64(maxW), a.Buffered())
	require.Equal(t, uint64(maxW), a.Reserved())

	others := make([]*Receiver, k)
	senders := make([]Sender, k)
	for i := range others {
		others[i] = newReceiver(t, cfg, b, now)
		others[i].SetRTT(ms(10))
		senders[i] = NewSender(floor)
	}
	_, err := NewReceiver(cfg, b, now)
	require.ErrorIs(t, err, ErrBudgetExhausted, "the budget is exactly full")

	for rnd := 0; rnd < 200; rnd++ {
		for i, r := range others {
			before := r.Limit()
			now = round(t, r, &senders[i], now, ms(1)) // fast: they would like to grow
			require.Greater(t, r.Limit(), before, "stream %d round %d: an update as it reads", i, rnd)
			require.GreaterOrEqual(t, r.Limit()-r.Consumed(), uint64(floor))
			require.Equal(t, uint64(floor), r.Window(), "no budget to grow into")
		}
		// A's peer keeps saying it is blocked; A keeps ticking.
		if l, ok := a.OnBlocked(aLimit, now); ok {
			t.Fatalf("stalled stream granted %d on BLOCKED", l)
		}
		a.OnTick(now)
		require.Equal(t, aLimit, a.Limit())
		require.Equal(t, uint64(maxW), a.Reserved(), "A holds what it granted, no more")
		require.Equal(t, b.Total(), b.Used())
	}
	now = now.Add(time.Second)
	require.True(t, a.OnTick(now), "idle shrink")
	require.Equal(t, uint64(floor), a.Window())
	require.Equal(t, uint64(maxW), a.Reserved(), "the outstanding grant stays reserved")
	for i, r := range others {
		require.Equal(t, uint64(200*floor), r.Consumed(), "stream %d flowed", i)
	}

	// A wakes up and reads: its growth returns to the budget and the
	// others can grow into it. (A reads its backlog slowly: the epoch
	// restarted at the shrink, and reading the 16-window backlog within
	// 4*RTT*16 would count as fast and grow A again.)
	now = now.Add(time.Second)
	l, ok := a.OnConsumed(a.Buffered(), now)
	require.True(t, ok)
	require.Equal(t, a.Consumed()+floor, l)
	require.Equal(t, uint64(floor), a.Reserved())
	now = round(t, others[0], &senders[0], now, ms(1)) // slow since the last round: new epoch
	round(t, others[0], &senders[0], now, ms(1))
	require.Equal(t, uint64(2*floor), others[0].Window())
	require.Equal(t, b.Used(), a.Reserved()+others[0].Reserved()+3*floor)
}

// TestStalledStreamsRandom is the randomized form: several streams grow and
// stall at random points; the others keep flowing with at least Initial.
func TestStalledStreamsRandom(t *testing.T) {
	const seed = 0x5741
	for run := 0; run < 100; run++ {
		rng := rand.New(rand.NewPCG(seed, uint64(run)))
		floor := pickU(rng, 4096, 10000, 64*kib)
		cfg := Config{Initial: floor, Max: floor * pickU(rng, 2, 4, 16), IdleAfter: time.Second}
		n := 2 + rng.IntN(6)
		b := NewBudget(uint64(n)*floor + rng.Uint64N(uint64(n)*cfg.Max))
		now := t0
		rs := make([]*Receiver, n)
		ss := make([]Sender, n)
		stallAt := make([]int, n) // round at which the reader stops, or -1
		for i := range rs {
			rs[i] = newReceiver(t, cfg, b, now)
			rs[i].SetRTT(ms(10))
			ss[i] = NewSender(floor)
			stallAt[i] = -1
			if i > 0 && rng.IntN(2) == 0 { // stream 0 never stalls
				stallAt[i] = rng.IntN(50)
			}
		}
		for rnd := 0; rnd < 100; rnd++ {
			now = now.Add(time.Duration(rng.Int64N(int64(ms(20)))))
			for i, r := range rs {
				s := &ss[i]
				require.NoError(t, s.OnSent(s.Available()))
				require.NoError(t, r.OnData(s.Sent()-r.Received()))
				stalled := stallAt[i] >= 0 && rnd >= stallAt[i]
				if stalled {
					r.OnTick(now)
					if l, ok := r.OnBlocked(s.Max(), now); ok {
						t.Fatalf("run %d: stalled stream %d granted %d on BLOCKED", run, i, l)
					}
					require.Equal(t, r.Limit()-r.Consumed(), r.Reserved(), "run %d: a stalled stream holds its grant", run)
					continue
				}
				before := r.Limit()
				l, ok := r.OnConsumed(r.Buffered(), now)
				require.True(t, ok, "run %d stream %d round %d: a drained window is always worth an update", run, i, rnd)
				require.Greater(t, l, before)
				require.GreaterOrEqual(t, l-r.Consumed(), floor, "run %d stream %d round %d", run, i, rnd)
				s.OnUpdate(l)
			}
			var sum uint64
			for _, r := range rs {
				sum += r.Reserved()
			}
			require.Equal(t, sum, b.Used())
			require.LessOrEqual(t, b.Used(), b.Total())
		}
		for _, r := range rs {
			r.Close()
		}
		require.Zero(t, b.Used())
	}
}

// TestGrowthMayTakeNewStreamsHeadroom documents a property of the design:
// growth takes any free budget, so once running streams have grown, a new
// stream is refused (ErrBudgetExhausted) until some growth is returned.
// Running streams are never affected.
func TestGrowthMayTakeNewStreamsHeadroom(t *testing.T) {
	const floor = 64 * kib
	b := NewBudget(8 * floor)
	cfg := Config{Initial: floor, Max: 16 * floor, IdleAfter: time.Second}
	r := newReceiver(t, cfg, b, t0)
	r.SetRTT(ms(10))
	s := NewSender(floor)
	now := t0
	for i := 0; i < 8; i++ {
		now = round(t, r, &s, now, ms(1))
	}
	require.Equal(t, uint64(8*floor), r.Window())
	require.Equal(t, b.Total(), b.Used())
	_, err := NewReceiver(cfg, b, now)
	require.ErrorIs(t, err, ErrBudgetExhausted)

	// Only an idle shrink (data buffered, no reads for IdleAfter) gives
	// growth back; an idle stream with an empty buffer keeps it.
	require.False(t, r.OnTick(now.Add(time.Hour)))
	require.NoError(t, s.OnSent(1))
	require.NoError(t, r.OnData(1))
	require.True(t, r.OnTick(now.Add(time.Hour)))
	_, err = NewReceiver(cfg, b, now)
	require.ErrorIs(t, err, ErrBudgetExhausted, "the outstanding grant is still reserved")
	r.OnConsumed(1, now.Add(time.Hour))
	require.Equal(t, uint64(8*floor-1), r.Reserved(), "drains with the old grant")
	_, err = NewReceiver(cfg, b, now)
	require.ErrorIs(t, err, ErrBudgetExhausted)
}

// TestBlockedWithoutDataGrows documents a property of the design: a BLOCKED
// at the current limit grows the window whenever little is buffered, even
// if the data the peer claims to have sent up to that limit never came.
// On an ordered transport such a BLOCKED is a lie, yet it lets a peer grow
// every stream to Max (reserving budget) without sending a byte.
func TestBlockedWithoutDataGrows(t *testing.T) {
	// A BLOCKED for a limit the peer never reached is ignored: a peer
	// cannot make the receiver reserve budget without sending data.
	const floor = 64 * kib
	b := NewBudget(mib)
	cfg := Config{Initial: floor, Max: 8 * floor}
	r := newReceiver(t, cfg, b, t0)
	for i := 0; i < 10; i++ {
		_, ok := r.OnBlocked(r.Limit(), t0)
		require.False(t, ok)
	}
	require.Zero(t, r.Received())
	require.Equal(t, uint64(floor), r.Window())
	require.Equal(t, uint64(floor), r.Reserved())
}
