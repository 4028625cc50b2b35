package impair

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// startTCP runs a TCP server on 127.0.0.1 that calls serve for each
// connection (and closes it after).
func startTCP(t testing.TB, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func tcpEcho(c *net.TCPConn) { _, _ = io.Copy(c, c) }

func dialTCP(t testing.TB, addr *net.TCPAddr) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTCPDelay: a delay of D each way adds about 2D to a request/response.
func TestTCPDelay(t *testing.T) {
	const d = 20 * time.Millisecond
	p := newTCP(t, startTCP(t, tcpEcho), both(Direction{Delay: d, Jitter: 2 * time.Millisecond}))
	c := dialTCP(t, p.Addr())
	req := bytes.Repeat([]byte("x"), 100)
	resp := make([]byte, len(req))
	var rtts []time.Duration
	for i := range 30 {
		start := time.Now()
		_ = c.SetDeadline(start.Add(3 * time.Second))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		rtts = append(rtts, time.Since(start))
	}
	m := median(rtts)
	t.Logf("delay %v (+ jitter 2ms) each way: median RTT %v (min %v, max %v); %v", d, m, slices.Min(rtts), slices.Max(rtts), p.Stats())
	if m < 2*d || m > 2*d+15*time.Millisecond {
		t.Errorf("median RTT %v, want within [%v, %v]", m, 2*d, 2*d+15*time.Millisecond)
	}
	if min := slices.Min(rtts); min < 2*d {
		t.Errorf("fastest RTT %v is below the %v the delay adds", min, 2*d)
	}
}

// TestTCPRate: data arrives intact through a 10 MB/s cap, at about 10 MB/s,
// and the fast writer is held back (stalls) rather than anything dropped.
func TestTCPRate(t *testing.T) {
	const (
		rate  = 10_000_000
		queue = 256 << 10
		size  = 6_000_000
	)
	var first, last time.Time
	var got int
	sum := sha256.New()
	done := make(chan struct{})
	addr := startTCP(t, func(c *net.TCPConn) {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if got == 0 {
					first = time.Now()
				}
				got += n
				last = time.Now()
				sum.Write(buf[:n])
			}
			if err != nil {
				break
			}
		}
		_, _ = c.Write(sum.Sum(nil))
	})
	p := newTCP(t, addr, Config{Up: Direction{Rate: rate, Queue: queue, Delay: 5 * time.Millisecond}})
	c := dialTCP(t, p.Addr())
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	digest, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	want := sha256.Sum256(data)
	if !bytes.Equal(digest, want[:]) || got != size {
		t.Fatalf("got %d bytes with digest %x, want %d with %x", got, digest, size, want)
	}
	goodput := float64(got) / last.Sub(first).Seconds()
	st := p.Stats()
	t.Logf("goodput %.2f MB/s; %v", goodput/1e6, st)
	if goodput < rate*0.75 || goodput > rate*1.25 {
		t.Errorf("goodput %.2f MB/s, want %.1f MB/s ± 25%%", goodput/1e6, rate/1e6)
	}
	if st.Up.Stalls == 0 {
		t.Error("a writer faster than the cap never stalled")
	}
	if st.Up.QueuePeak > queue+bigBuf {
		t.Errorf("queue peaked at %d bytes, bound %d (+ one chunk)", st.Up.QueuePeak, queue)
	}
	if st.Up.Dropped() != 0 || st.Up.Bytes != size {
		t.Errorf("up: %v, want %d bytes and no drops", st.Up, size)
	}
}

// TestTCPBackpressure: with a receiver that does not read, the proxy stops
// reading too: the sender blocks with a bounded amount accepted, and every
// byte arrives once the receiver reads.
func TestTCPBackpressure(t *testing.T) {
	release := make(chan struct{})
	var got []byte
	done := make(chan struct{})
	addr := startTCP(t, func(c *net.TCPConn) {
		defer close(done)
		<-release
		got, _ = io.ReadAll(c)
	})
	const queue = 128 << 10
	p := newTCP(t, addr, Config{Up: Direction{Rate: 50_000_000, Queue: queue, Delay: 2 * time.Millisecond}})
	c := dialTCP(t, p.Addr())

	rng := rand.New(rand.NewPCG(3, 4))
	var sent []byte
	chunk := make([]byte, 64<<10)
	stuck := 0
	start := time.Now()
	for stuck < 3 && len(sent) < 256<<20 && time.Since(start) < 10*time.Second {
		for i := range chunk {
			chunk[i] = byte(rng.Uint32())
		}
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Write(chunk)
		sent = append(sent, chunk[:n]...)
		if err != nil {
			stuck++
		} else {
			stuck = 0
		}
	}
	st := p.Stats()
	lineCap := p.up.lineCap.Load()
	t.Logf("sender accepted %d bytes before blocking; proxy line bound %d; %v", len(sent), lineCap, st.Up)
	if stuck < 3 {
		t.Fatalf("the sender never blocked: %d bytes accepted", len(sent))
	}
	if st.Up.HeldPeak > lineCap {
		t.Errorf("the proxy held %d bytes of one connection, bound %d", st.Up.HeldPeak, lineCap)
	}
	if st.Up.Stalls == 0 {
		t.Error("no stalls counted")
	}
	close(release)
	_ = c.SetWriteDeadline(time.Time{})
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("receiver did not get EOF")
	}
	if !bytes.Equal(got, sent) {
		t.Errorf("received %d bytes, sent %d; equal %v", len(got), len(sent), bytes.Equal(got, sent))
	}
}

// TestTCPBlackhole: a blackhole stalls delivery, which resumes (with
// nothing lost) once it ends.
func TestTCPBlackhole(t *testing.T) {
	p := newTCP(t, startTCP(t, tcpEcho), Config{})
	c := dialTCP(t, p.Addr())
	buf := make([]byte, 5)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	const hole = 300 * time.Millisecond
	p.Blackhole(hole)
	start := time.Now()
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("echo through a %v blackhole took %v", hole, took)
	if took < hole-5*time.Millisecond || string(buf) != "again" {
		t.Errorf("echo %q came back after %v, inside a %v blackhole", buf, took, hole)
	}
}

// TestTCPMaxFlows: connections beyond MaxFlows are refused; a missing
// target refuses too.
func TestTCPMaxFlows(t *testing.T) {
	p := newTCP(t, startTCP(t, tcpEcho), Config{MaxFlows: 2})
	var conns []*net.TCPConn
	for range 2 {
		c := dialTCP(t, p.Addr())
		conns = append(conns, c)
		_, _ = c.Write([]byte("x"))
		_, _ = io.ReadFull(c, make([]byte, 1))
	}
	c := dialTCP(t, p.Addr())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("third connection read %d bytes", n)
	}
	st := p.Stats()
	if st.Flows != 2 || st.FlowsRejected != 1 {
		t.Errorf("%+v", st)
	}
	conns[0].Close()
	if !waitFor(3*time.Second, func() bool { return p.Stats().Flows == 1 }) {
		t.Errorf("closed connection still counted: %+v", p.Stats())
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	absent := ln.Addr().String()
	ln.Close()
	q := newTCP(t, absent, Config{})
	d := dialTCP(t, q.Addr())
	_ = d.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.Read(make([]byte, 1)); err == nil {
		t.Error("read through a proxy to nowhere")
	}
	// The proxy counts a refusal before it closes the connection.
	if st := q.Stats(); st.FlowsRejected != 1 || st.Flows != 0 {
		t.Errorf("%+v", st)
	}
}

// TestTCPMaxFlowsReuse: a connection the proxy ends frees its place before
// the client sees the end, so a client that reconnects at once is served.
func TestTCPMaxFlowsReuse(t *testing.T) {
	// The server echoes one byte, then resets the connection: the proxy
	// sees a failed read and ends the connection itself.
	addr := startTCP(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		_, _ = c.Write(b)
		_ = c.SetLinger(0)
	})
	p := newTCP(t, addr, Config{MaxFlows: 1})
	for i := range 50 {
		c, err := net.DialTCP("tcp", nil, p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte{byte(i)})
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			c.Close()
			t.Fatalf("connection %d: echo %v, %v; %v", i, b, err, p.Stats())
		}
		// Wait for the proxy to end the connection.
		if n, err := c.Read(b); err == nil {
			c.Close()
			t.Fatalf("connection %d: read %d bytes after the reset", i, n)
		}
		c.Close()
		if st := p.Stats(); st.Flows != 0 || st.FlowsRejected != 0 {
			t.Fatalf("connection %d ended: %v", i, st)
		}
	}
}
