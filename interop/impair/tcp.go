package impair

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// tcpLineDefault bounds the bytes one TCP direction of one connection
	// holds when there is no rate cap.
	tcpLineDefault = 16 << 20
	// tcpLineChunks bounds the chunks one TCP direction of one connection
	// holds.
	tcpLineChunks = 8192
)

// TCPProxy forwards TCP connections to one target, impaired: each
// direction of each connection is delayed (with jitter that never reorders
// bytes) and rate-capped on a link shared by all connections. Loss and
// reordering do not apply: TCP would hide them behind retransmission.
//
// Nothing is ever dropped. When a direction holds as much as it may, the
// proxy stops reading from the sender (backpressure): with a rate cap, when
// Queue bytes wait for the cap or more than Queue + Rate×(Delay+Jitter)
// bytes are in the proxy; without one, at 16 MiB per connection and
// direction. A blackhole stalls delivery until it ends.
//
// The proxy leaves the kernel's socket buffers at their defaults (which
// auto-tune), half-closes the far side when one side half-closes, and closes
// both sides when both directions have ended or either fails.
type TCPProxy struct {
	clock
	ln     *net.TCPListener
	target string
	pool   bufPool
	up     tcpLink
	down   tcpLink

	blackhole atomic.Int64

	mu     sync.Mutex // guards cfg, conns, active, closed
	cfg    Config
	conns  map[*tcpConn]struct{}
	active int // accepted connections not yet ended, including those dialing
	closed bool

	flowsTotal, rejected atomic.Uint64

	ctx       context.Context // canceled by Close, for dialing
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// tcpLink is the shared model of one direction: rate cap, delay, jitter.
type tcpLink struct {
	c       counters
	lineCap atomic.Int64

	mu sync.Mutex
	sh shaper
}

func (l *tcpLink) set(d Direction) {
	l.sh.set(d)
	d = l.sh.d
	if d.Rate > 0 {
		inflight := float64(d.Rate) * (d.Delay + d.Jitter).Seconds()
		l.lineCap.Store(l.sh.queueCap + int64(inflight) + bigBuf)
	} else {
		l.lineCap.Store(tcpLineDefault)
	}
}

// tcpConn is one proxied connection.
type tcpConn struct {
	p              *TCPProxy
	client, server *net.TCPConn
	dead           chan struct{}
	killOnce       sync.Once
	writers        atomic.Int32
}

// kill ends the connection: both sockets close and its goroutines return.
// The connection leaves the counts before its sockets close, so a client
// that sees the close and connects again finds its place free, and Stats
// no longer counts it.
func (c *tcpConn) kill() {
	c.killOnce.Do(func() {
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.active--
		c.p.mu.Unlock()
		close(c.dead)
		c.client.Close()
		c.server.Close()
	})
}

// tcpPipe is one direction of one connection.
type tcpPipe struct {
	c        *tcpConn
	l        *tcpLink
	src, dst *net.TCPConn
	notEmpty chan struct{}
	notFull  chan struct{}

	mu      sync.Mutex
	q       ring
	bytes   int64
	lastRel int64
	seq     uint64
}

// NewTCP starts a proxy that listens on the TCP address listen (for example
// "127.0.0.1:0") and forwards each connection to target, impaired by cfg.
func NewTCP(listen, target string, cfg Config) (*TCPProxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("impair: target address %q: %w", target, err)
	}
	laddr, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("impair: listen address %q: %w", listen, err)
	}
	ln, err := net.ListenTCP("tcp", laddr)
	if err != nil {
		return nil, fmt.Errorf("impair: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &TCPProxy{
		clock:  clock{start: time.Now()},
		ln:     ln,
		target: target,
		cfg:    cfg,
		conns:  make(map[*tcpConn]struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	p.up.sh = newShaper(cfg.Up, cfg.Seed, 1)
	p.down.sh = newShaper(cfg.Down, cfg.Seed, 2)
	p.up.set(cfg.Up)
	p.down.set(cfg.Down)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address clients connect to.
func (p *TCPProxy) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

// SetConfig changes the impairment while the proxy runs. Bytes already
// queued keep their release times, and bytes never overtake earlier ones.
// Keeping the seed continues the random sequences; a new seed restarts
// them. Out-of-range values are clamped (see Config.Validate). A lower
// MaxFlows closes no connection already open.
func (p *TCPProxy) SetConfig(cfg Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	reseed := cfg.Seed != p.cfg.Seed
	p.cfg = cfg
	for i, l := range []*tcpLink{&p.up, &p.down} {
		l.mu.Lock()
		if i == 0 {
			l.set(cfg.Up)
		} else {
			l.set(cfg.Down)
		}
		if reseed {
			l.sh.reseed(cfg.Seed, uint64(i+1))
		}
		l.mu.Unlock()
	}
}

// Blackhole stalls both directions of every connection for d starting now:
// nothing is delivered until it ends, then everything held is. A later call
// replaces the period (Blackhole(0) ends it).
func (p *TCPProxy) Blackhole(d time.Duration) {
	p.blackhole.Store(p.now() + int64(max(d, 0)))
}

// Stats returns the counts so far. Packets counts the chunks written.
func (p *TCPProxy) Stats() Stats {
	p.mu.Lock()
	flows := len(p.conns)
	p.mu.Unlock()
	p.up.mu.Lock()
	upPeak := p.up.sh.queuePeak
	p.up.mu.Unlock()
	p.down.mu.Lock()
	downPeak := p.down.sh.queuePeak
	p.down.mu.Unlock()
	return Stats{
		Up:            p.up.c.snapshot(upPeak),
		Down:          p.down.c.snapshot(downPeak),
		Flows:         flows,
		FlowsTotal:    p.flowsTotal.Load(),
		FlowsRejected: p.rejected.Load(),
	}
}

// Close stops the proxy: it stops listening, closes every proxied
// connection, and returns once all its goroutines have ended. Later calls
// return the first call's result.
func (p *TCPProxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]*tcpConn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		p.cancel()
		p.closeErr = p.ln.Close()
		for _, c := range conns {
			c.kill()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		p.mu.Lock()
		if p.closed || p.active >= p.cfg.maxFlows() {
			closed := p.closed
			if !closed {
				// Count before closing: the client may read Stats as
				// soon as it sees the close.
				p.rejected.Add(1)
			}
			p.mu.Unlock()
			client.Close()
			if closed {
				return
			}
			continue
		}
		p.active++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(client)
	}
}

// handle dials the target for client and runs the connection; it becomes
// the reader of the up direction.
func (p *TCPProxy) handle(client *net.TCPConn) {
	defer p.wg.Done()
	var d net.Dialer
	sc, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		// Count and free the place before closing, as in accept.
		p.rejected.Add(1)
		p.mu.Lock()
		p.active--
		p.mu.Unlock()
		client.Close()
		return
	}
	server := sc.(*net.TCPConn)
	c := &tcpConn{p: p, client: client, server: server, dead: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.active--
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.flowsTotal.Add(1)
	p.mu.Unlock()
	up := p.newPipe(c, &p.up, client, server)
	down := p.newPipe(c, &p.down, server, client)
	c.writers.Store(2)
	p.wg.Add(3)
	go up.write()
	go down.write()
	go func() {
		defer p.wg.Done()
		down.read()
	}()
	up.read()
}

func (p *TCPProxy) newPipe(c *tcpConn, l *tcpLink, src, dst *net.TCPConn) *tcpPipe {
	return &tcpPipe{
		c: c, l: l, src: src, dst: dst,
		notEmpty: make(chan struct{}, 1),
		notFull:  make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read moves what src sends into the pipe until src ends.
func (pp *tcpPipe) read() {
	p := pp.c.p
	scratch := p.pool.get(bigBuf)
	defer p.pool.put(scratch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		n, err := pp.src.Read(*scratch)
		if n > 0 && !pp.admit((*scratch)[:n], timer) {
			return
		}
		if err != nil {
			eof := errors.Is(err, io.EOF)
			pp.mu.Lock()
			pp.q.push(packet{rel: pp.lastRel, eof: eof, fail: !eof})
			pp.mu.Unlock()
			signal(pp.notEmpty)
			return
		}
	}
}

// admit waits for room in the pipe and on the link, then queues a copy of
// data. It returns false if the connection died meanwhile.
func (pp *tcpPipe) admit(data []byte, timer *time.Timer) bool {
	p := pp.c.p
	n := int64(len(data))
	stalled := false
	stall := func() {
		if !stalled {
			stalled = true
			pp.l.c.stalls.Add(1)
		}
	}
	for {
		pp.mu.Lock()
		room := pp.bytes == 0 || (pp.bytes+n <= pp.l.lineCap.Load() && pp.q.len() < tcpLineChunks)
		pp.mu.Unlock()
		if room {
			break
		}
		stall()
		select {
		case <-pp.notFull:
		case <-pp.c.dead:
			return false
		}
	}
	var rel int64
	for {
		now := p.now()
		pp.l.mu.Lock()
		sh := &pp.l.sh
		if sh.d.Rate <= 0 || sh.fits(now, len(data)) {
			rel = sh.send(now, len(data)) + sh.delay()
			pp.l.mu.Unlock()
			break
		}
		wait := sh.waitFor(now, len(data))
		pp.l.mu.Unlock()
		stall()
		if !p.sleepUntil(now+int64(wait), timer, pp.c.dead) {
			return false
		}
	}
	b := p.pool.get(len(data))
	copy(*b, data)
	pp.mu.Lock()
	rel = max(rel, pp.lastRel)
	pp.lastRel = rel
	pp.seq++
	pp.q.push(packet{buf: b, rel: rel, seq: pp.seq})
	pp.bytes += n
	pp.l.c.held(pp.bytes)
	pp.mu.Unlock()
	signal(pp.notEmpty)
	return true
}

// write delivers the pipe's chunks to dst at their release times.
func (pp *tcpPipe) write() {
	p := pp.c.p
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		pp.mu.Lock()
		for pp.q.len() == 0 {
			pp.mu.Unlock()
			select {
			case <-pp.notEmpty:
			case <-pp.c.dead:
				return
			}
			pp.mu.Lock()
		}
		pk := *pp.q.front()
		pp.mu.Unlock()
		for {
			if !p.sleepUntil(max(pk.rel, p.blackhole.Load()), timer, pp.c.dead) {
				return
			}
			if p.now() >= p.blackhole.Load() {
				break
			}
		}
		switch {
		case pk.eof:
			_ = pp.dst.CloseWrite()
			if pp.c.writers.Add(-1) == 0 {
				pp.c.kill()
			}
			return
		case pk.fail:
			pp.c.kill()
			return
		}
		n, err := pp.dst.Write(*pk.buf)
		if err != nil {
			pp.l.c.writeErrs.Add(1)
			pp.c.kill()
			return
		}
		pp.l.c.packets.Add(1)
		pp.l.c.bytes.Add(uint64(n))
		pp.mu.Lock()
		pp.q.pop()
		pp.bytes -= int64(n)
		pp.mu.Unlock()
		p.pool.put(pk.buf)
		signal(pp.notFull)
	}
}
