package impair

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// startUDPEcho runs a UDP server on 127.0.0.1 that sends every datagram
// back to its sender.
func startUDPEcho(t testing.TB) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1<<16)
		for {
			n, addr, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = conn.WriteToUDPAddrPort(buf[:n], addr)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return conn.LocalAddr().String()
}

// arrival is one datagram a sink received.
type arrival struct {
	seq  uint64
	at   time.Time
	sent time.Time // the sender's timestamp, if it wrote one
	n    int
}

// udpSink records the sequence numbers (first 8 bytes, big endian) and
// send timestamps (next 8 bytes, UnixNano, if present) of what it
// receives.
type udpSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []arrival
	wg   sync.WaitGroup
}

func startUDPSink(t testing.TB) *udpSink {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	s := &udpSink{conn: conn}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1<<16)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			a := arrival{at: time.Now(), n: n}
			if n >= 8 {
				a.seq = binary.BigEndian.Uint64(buf)
			}
			if n >= 16 {
				a.sent = time.Unix(0, int64(binary.BigEndian.Uint64(buf[8:])))
			}
			s.mu.Lock()
			s.got = append(s.got, a)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *udpSink) addr() string { return s.conn.LocalAddr().String() }

func (s *udpSink) close() {
	s.conn.Close()
	s.wg.Wait()
}

func (s *udpSink) arrivals() []arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *udpSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// waitFor polls cond every few milliseconds until it holds or limit
// passes, and reports whether it held.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dialUDP connects a client socket to addr.
func dialUDP(t testing.TB, addr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	t.Cleanup(func() { c.Close() })
	return c
}

// packetWith returns a datagram of size n (at least 16) carrying seq and
// the current time.
func packetWith(buf []byte, seq uint64) []byte {
	binary.BigEndian.PutUint64(buf, seq)
	binary.BigEndian.PutUint64(buf[8:], uint64(time.Now().UnixNano()))
	return buf
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func newUDP(t testing.TB, target string, cfg Config) *UDPProxy {
	t.Helper()
	p, err := NewUDP("127.0.0.1:0", target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newTCP(t testing.TB, target string, cfg Config) *TCPProxy {
	t.Helper()
	p, err := NewTCP("127.0.0.1:0", target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func both(d Direction) Config { return Config{Up: d, Down: d} }
