package impair

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// socketBuffer is the size asked of every UDP socket's kernel buffers. The
// kernel may grant less (net.core.rmem_max); the proxy works either way.
const socketBuffer = 4 << 20

// UDPProxy forwards UDP datagrams between clients and one target, impaired.
//
// Each distinct client address gets its own upstream socket, like a NAT, so
// the target sees one peer per client. At most Config.MaxFlows flows exist
// at once (the least recently active is evicted to make room) and a flow
// idle for Config.IdleTimeout is closed.
//
// Per direction, one scheduler goroutine releases the packets of every flow
// in order of their release time; a packet that needs no delay, when
// nothing is queued, is forwarded at once by the goroutine that read it.
// Everything a direction holds is bounded (65536 packets, 64 MiB); beyond
// that packets are dropped and counted.
type UDPProxy struct {
	clock
	ln     *net.UDPConn
	target *net.UDPAddr
	pool   bufPool
	up     udpDir
	down   udpDir

	blackhole atomic.Int64 // proxy time until which everything is dropped

	mu     sync.Mutex // guards cfg, flows and closed
	cfg    Config
	flows  map[netip.AddrPort]*udpFlow
	closed bool

	flowsTotal, evicted, expired atomic.Uint64

	cfgChanged chan struct{} // wakes the janitor
	done       chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

// udpFlow is one client address and its upstream socket.
type udpFlow struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // proxy time of the last packet either way
	closed atomic.Bool
}

func (f *udpFlow) close() {
	f.closed.Store(true)
	f.conn.Close()
}

// Scheduler states kept in udpDir.sleep besides a wake-up time.
const (
	schedBusy = math.MinInt64 // working through due packets: no signal needed
	schedIdle = math.MaxInt64 // nothing queued: any packet must signal
)

// udpDir is one direction: its shaper, its time-ordered queue and its
// scheduler.
type udpDir struct {
	p    *UDPProxy
	isUp bool
	c    counters
	wake chan struct{}

	mu      sync.Mutex
	sh      shaper
	lastRel int64   // release time of the last in-order packet
	fifo    ring    // in-order packets; release times never decrease
	held    pktHeap // reordered packets
	bytes   int64   // buffer capacity held in fifo and held
	payload int64   // payload bytes held in fifo and held
	seq     uint64
	sleep   int64 // schedBusy, schedIdle, or the time the scheduler sleeps until
}

// NewUDP starts a proxy that listens on the UDP address listen (for example
// "127.0.0.1:0") and forwards to target, impaired by cfg.
func NewUDP(listen, target string, cfg Config) (*UDPProxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("impair: listen address %q: %w", listen, err)
	}
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("impair: target address %q: %w", target, err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("impair: %w", err)
	}
	_ = ln.SetReadBuffer(socketBuffer)
	_ = ln.SetWriteBuffer(socketBuffer)
	p := &UDPProxy{
		clock:      clock{start: time.Now()},
		ln:         ln,
		target:     taddr,
		cfg:        cfg,
		flows:      make(map[netip.AddrPort]*udpFlow),
		cfgChanged: make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	for i, d := range []*udpDir{&p.up, &p.down} {
		d.p = p
		d.isUp = i == 0
		d.wake = make(chan struct{}, 1)
		d.sleep = schedIdle
	}
	p.up.sh = newShaper(cfg.Up, cfg.Seed, 1)
	p.down.sh = newShaper(cfg.Down, cfg.Seed, 2)
	p.wg.Add(4)
	go p.readClients()
	go p.up.run()
	go p.down.run()
	go p.janitor()
	return p, nil
}

// Addr returns the address clients send to.
func (p *UDPProxy) Addr() *net.UDPAddr { return p.ln.LocalAddr().(*net.UDPAddr) }

// SetConfig changes the impairment while the proxy runs. Packets already
// queued keep their release times; later packets are never released before
// earlier ones (unless reordered), so a shorter delay takes effect once the
// queue ahead has drained. Keeping the seed continues the random sequences;
// a new seed restarts them. Out-of-range values are clamped (see
// Config.Validate).
func (p *UDPProxy) SetConfig(cfg Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	reseed := cfg.Seed != p.cfg.Seed
	p.cfg = cfg
	for i, d := range []*udpDir{&p.up, &p.down} {
		d.mu.Lock()
		if i == 0 {
			d.sh.set(cfg.Up)
		} else {
			d.sh.set(cfg.Down)
		}
		if reseed {
			d.sh.reseed(cfg.Seed, uint64(i+1))
		}
		d.mu.Unlock()
	}
	select {
	case p.cfgChanged <- struct{}{}:
	default:
	}
}

// Blackhole drops every packet in both directions, arriving or queued, for
// d starting now. A later call replaces the period (Blackhole(0) ends it).
func (p *UDPProxy) Blackhole(d time.Duration) {
	p.blackhole.Store(p.now() + int64(max(d, 0)))
}

// Stats returns the counts so far.
func (p *UDPProxy) Stats() Stats {
	p.mu.Lock()
	flows := len(p.flows)
	p.mu.Unlock()
	p.up.mu.Lock()
	upPeak := p.up.sh.queuePeak
	p.up.mu.Unlock()
	p.down.mu.Lock()
	downPeak := p.down.sh.queuePeak
	p.down.mu.Unlock()
	return Stats{
		Up:           p.up.c.snapshot(upPeak),
		Down:         p.down.c.snapshot(downPeak),
		Flows:        flows,
		FlowsTotal:   p.flowsTotal.Load(),
		FlowsEvicted: p.evicted.Load(),
		FlowsExpired: p.expired.Load(),
	}
}

// Close stops the proxy: it closes the listening socket and every upstream
// socket, drops what is queued, and returns once all its goroutines have
// ended. Later calls return the first call's result.
func (p *UDPProxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		flows := p.flows
		p.flows = map[netip.AddrPort]*udpFlow{}
		p.mu.Unlock()
		close(p.done)
		p.closeErr = p.ln.Close()
		for _, f := range flows {
			f.close()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

// readClients reads what clients send and passes it up.
func (p *UDPProxy) readClients() {
	defer p.wg.Done()
	buf := make([]byte, 1<<16)
	var last *udpFlow
	errs := 0
	for {
		n, addr, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.isDone() {
				return
			}
			if errs++; errs > 100 {
				time.Sleep(time.Millisecond)
			}
			continue
		}
		errs = 0
		now := p.now()
		f := last
		if f == nil || f.client != addr || f.closed.Load() {
			if f = p.flow(addr, now); f == nil {
				p.up.c.writeErrs.Add(1) // no upstream socket
				continue
			}
			last = f
		}
		p.up.handle(f, buf[:n], now)
	}
}

// readTarget reads what the target sends to one flow and passes it down.
func (p *UDPProxy) readTarget(f *udpFlow) {
	defer p.wg.Done()
	buf := make([]byte, 1<<16)
	errs := 0
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			// A connected socket reports ICMP errors (ECONNREFUSED when the
			// target is not listening yet); only a closed socket ends this.
			if f.closed.Load() || errors.Is(err, net.ErrClosed) || p.isDone() {
				return
			}
			if errs++; errs > 100 {
				time.Sleep(time.Millisecond)
			}
			continue
		}
		errs = 0
		p.down.handle(f, buf[:n], p.now())
	}
}

func (p *UDPProxy) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// flow returns the flow of client address addr, making it if needed. It
// returns nil when the proxy is closed or no upstream socket can be made.
func (p *UDPProxy) flow(addr netip.AddrPort, now int64) *udpFlow {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if f, ok := p.flows[addr]; ok {
		return f
	}
	if len(p.flows) >= p.cfg.maxFlows() {
		var lru *udpFlow
		for _, f := range p.flows {
			if lru == nil || f.last.Load() < lru.last.Load() {
				lru = f
			}
		}
		delete(p.flows, lru.client)
		p.evicted.Add(1)
		lru.close()
	}
	conn, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	f := &udpFlow{client: addr, conn: conn}
	f.last.Store(now)
	p.flows[addr] = f
	p.flowsTotal.Add(1)
	p.wg.Add(1)
	go p.readTarget(f)
	return f
}

// janitor closes idle flows.
func (p *UDPProxy) janitor() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		idle := p.cfg.idleTimeout()
		p.mu.Unlock()
		timer.Reset(min(max(idle/4, 5*time.Millisecond), time.Second))
		select {
		case <-timer.C:
		case <-p.cfgChanged:
		case <-p.done:
			return
		}
		now := p.now()
		p.mu.Lock()
		for addr, f := range p.flows {
			if now-f.last.Load() >= int64(idle) {
				delete(p.flows, addr)
				p.expired.Add(1)
				f.close()
			}
		}
		p.mu.Unlock()
	}
}

// handle impairs one packet that arrived at now, data being the reader's
// buffer: it drops it, forwards it at once, or queues a copy.
func (d *udpDir) handle(f *udpFlow, data []byte, now int64) {
	n := len(data)
	f.last.Store(now)
	if now < d.p.blackhole.Load() {
		d.c.drop(&d.c.blackhole, n)
		return
	}
	size := int64(smallBuf)
	if n > midBuf {
		size = bigBuf
	} else if n > smallBuf {
		size = midBuf
	}
	d.mu.Lock()
	sh := &d.sh
	if d.fifo.len()+len(d.held) >= maxLinePackets || d.bytes+size > maxLineBytes {
		d.mu.Unlock()
		d.c.drop(&d.c.overflow, n)
		return
	}
	if sh.lost() {
		d.mu.Unlock()
		d.c.drop(&d.c.loss, n)
		return
	}
	if sh.d.Rate > 0 && !sh.fits(now, n) {
		d.mu.Unlock()
		d.c.drop(&d.c.queue, n)
		return
	}
	rel := sh.send(now, n) + sh.delay()
	reorder := sh.reordered()
	rel = max(rel, d.lastRel)
	if !reorder && rel <= now && d.sleep == schedIdle {
		// Nothing is queued and the scheduler is not writing: forward
		// now. Order holds: the next packet of this flow comes from this
		// goroutine, after this write.
		d.lastRel = rel
		d.mu.Unlock()
		d.write(f, data)
		return
	}
	b := d.p.pool.get(n)
	copy(*b, data)
	d.seq++
	pk := packet{buf: b, rel: rel, seq: d.seq, flow: f}
	if reorder {
		pk.rel += sh.reorderBy
		d.held.push(pk)
		d.c.reordered.Add(1)
	} else {
		d.lastRel = rel
		d.fifo.push(pk)
	}
	d.bytes += size
	d.payload += int64(n)
	d.c.held(d.payload)
	wake := pk.rel < d.sleep
	if wake {
		d.sleep = pk.rel
	}
	d.mu.Unlock()
	if wake {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// popDue removes and returns the earliest packet if it is due at now.
func (d *udpDir) popDue(now int64) (packet, bool) {
	var pk packet
	switch {
	case d.fifo.len() > 0 && (len(d.held) == 0 || d.fifo.front().before(&d.held[0])):
		if d.fifo.front().rel > now {
			return pk, false
		}
		pk = d.fifo.pop()
	case len(d.held) > 0:
		if d.held[0].rel > now {
			return pk, false
		}
		pk = d.held.pop()
	default:
		return pk, false
	}
	d.bytes -= int64(cap(*pk.buf))
	d.payload -= int64(len(*pk.buf))
	return pk, true
}

// next returns the release time of the earliest queued packet.
func (d *udpDir) next() (int64, bool) {
	switch {
	case d.fifo.len() > 0 && len(d.held) > 0:
		return min(d.fifo.front().rel, d.held[0].rel), true
	case d.fifo.len() > 0:
		return d.fifo.front().rel, true
	case len(d.held) > 0:
		return d.held[0].rel, true
	}
	return 0, false
}

// run is the scheduler: it sleeps until the earliest packet is due, then
// writes every due packet.
func (d *udpDir) run() {
	defer d.p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]packet, 0, 128)
	for {
		if d.p.isDone() {
			return
		}
		now := d.p.now()
		d.mu.Lock()
		for len(batch) < cap(batch) {
			pk, ok := d.popDue(now)
			if !ok {
				break
			}
			batch = append(batch, pk)
		}
		switch next, ok := d.next(); {
		case len(batch) > 0:
			d.sleep = schedBusy
		case ok:
			d.sleep = next
		default:
			d.sleep = schedIdle
		}
		sleep := d.sleep
		d.mu.Unlock()

		if len(batch) > 0 {
			for i := range batch {
				pk := &batch[i]
				if d.p.now() < d.p.blackhole.Load() {
					d.c.drop(&d.c.blackhole, len(*pk.buf))
				} else {
					d.write(pk.flow, *pk.buf)
				}
				d.p.pool.put(pk.buf)
				*pk = packet{}
			}
			batch = batch[:0]
			continue
		}
		if sleep == schedIdle {
			select {
			case <-d.wake:
			case <-d.p.done:
				return
			}
			continue
		}
		timer.Reset(time.Duration(sleep - now))
		select {
		case <-timer.C:
		case <-d.wake:
			timer.Stop()
		case <-d.p.done:
			timer.Stop()
			return
		}
	}
}

// write sends one packet on: up to the target through the flow's socket,
// down to the client through the listening socket.
//
// The packet is counted before it is written: the receiver (or a reply to
// it) may reach a caller of Stats before the write returns. A failed write
// takes the count back, then counts the error, so Packets+WriteErrors never
// exceeds the packets written or being written.
func (d *udpDir) write(f *udpFlow, b []byte) {
	n := uint64(len(b))
	d.c.packets.Add(1)
	d.c.bytes.Add(n)
	var err error
	if d.isUp {
		_, err = f.conn.Write(b)
	} else {
		_, err = d.p.ln.WriteToUDPAddrPort(b, f.client)
	}
	if err != nil {
		d.c.packets.Add(^uint64(0))
		d.c.bytes.Add(-n)
		d.c.writeErrs.Add(1)
	}
}
