package link

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// needRoot skips t unless links can be set up here: root, /dev/net/tun,
// the ip command and a namespace that can be made.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("link: needs root and /dev/net/tun: not running as root")
	}
	f, err := os.OpenFile(tunPath, os.O_RDWR, 0)
	if err != nil {
		t.Skipf("link: needs root and /dev/net/tun: %v", err)
	}
	f.Close()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("link: needs root and /dev/net/tun: no ip command: %v", err)
	}
	probe := fmt.Sprintf("bplprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("link: needs root and /dev/net/tun: ip netns add: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", probe, err, out)
	}
	sweepStale(t)
}

// staleName matches the namespaces these tests (and those of
// interop/cmd/link) make: bpl, an optional word, the pid of the test
// process, and more.
var staleName = regexp.MustCompile(`^bpl(?:cmd|probe)?([0-9]+)(?:-.*)?$`)

// sweepStale deletes the namespaces of test processes that died without
// cleaning up (killed by a timeout, say): names are unique per process,
// so Setup's own clean-up of leftovers would never meet them.
func sweepStale(t *testing.T) {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // ours, or its process lives
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("deleting stale namespace %s: %v: %s", e.Name(), err, out)
		}
	}
}

// testNames returns namespace names unique to this process and test.
func testNames(t *testing.T) (a, b string) {
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	base := fmt.Sprintf("bpl%d-%08x", os.Getpid(), h.Sum32())
	return base + "-a", base + "-b"
}

// newLink sets up a link for t with ab and ba, closed when t ends.
func newLink(t *testing.T, ab, ba Direction) *Link {
	t.Helper()
	needRoot(t)
	a, b := testNames(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := Setup(ctx, Config{
		A: a, B: b, AddrA: "10.99.0.1/24", AddrB: "10.99.0.2/24",
		AtoB: ab, BtoA: ba, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// listenUDP makes a UDP socket in namespace B on its address.
func listenUDP(t *testing.T, l *Link) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := l.RunInB(func() error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.AddrB(), 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(8 << 20)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialUDP makes a UDP socket in namespace A connected to to.
func dialUDP(t *testing.T, l *Link, to net.Addr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := l.RunInA(func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, to.(*net.UDPAddr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(8 << 20)
	_ = conn.SetWriteBuffer(8 << 20)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// echo sends back every datagram conn receives until conn is closed.
func echo(t *testing.T, conn *net.UDPConn) {
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
}

// arrival is one datagram a sink received: the sender's sequence number
// and time (first 16 bytes), when it arrived and whether its bytes were
// what the sender wrote.
type arrival struct {
	seq    uint64
	sent   time.Duration // since the test's base time
	at     time.Duration
	n      int
	intact bool
}

// sink collects what conn receives until stop.
type sink struct {
	conn *net.UDPConn
	base time.Time
	mu   sync.Mutex
	got  []arrival
	wg   sync.WaitGroup
}

func startSink(conn *net.UDPConn, base time.Time) *sink {
	s := &sink{conn: conn, base: base}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1<<16)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			at := time.Since(base)
			if n < 16 {
				continue
			}
			a := arrival{
				seq:    binary.BigEndian.Uint64(buf),
				sent:   time.Duration(binary.BigEndian.Uint64(buf[8:])),
				at:     at,
				n:      n,
				intact: checkFill(buf[:n]),
			}
			s.mu.Lock()
			s.got = append(s.got, a)
			s.mu.Unlock()
		}
	}()
	return s
}

// stop waits up to wait for stragglers, ends the sink and returns what it
// received.
func (s *sink) stop(wait time.Duration) []arrival {
	time.Sleep(wait)
	s.conn.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// fill writes seq, the time since base and a pattern derived from seq
// into b.
func fill(b []byte, seq uint64, base time.Time) {
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint64(b[8:], uint64(time.Since(base)))
	for i := 16; i < len(b); i++ {
		b[i] = byte(seq*31 + uint64(i)*7)
	}
}

func checkFill(b []byte) bool {
	seq := binary.BigEndian.Uint64(b)
	for i := 16; i < len(b); i++ {
		if b[i] != byte(seq*31+uint64(i)*7) {
			return false
		}
	}
	return true
}

// blast sends count datagrams of size bytes on conn at pps packets a
// second (0: one every interval tick), for at most limit.
func blast(conn *net.UDPConn, size, count int, pps float64, base time.Time, limit time.Duration) int {
	b := make([]byte, size)
	start := time.Now()
	sent := 0
	for sent < count && time.Since(start) < limit {
		due := min(count, int(time.Since(start).Seconds()*pps)+1)
		for ; sent < due; sent++ {
			fill(b, uint64(sent), base)
			_, _ = conn.Write(b)
		}
		time.Sleep(500 * time.Microsecond)
	}
	return sent
}

// median returns the median of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// snmp returns counter name of protocol proto ("Udp", "Tcp") from
// /proc/net/snmp as seen from namespace ns.
func snmp(t *testing.T, ns, proto, name string) uint64 {
	t.Helper()
	var data []byte
	if err := RunIn(ns, func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != proto+":" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, h := range header {
			if h == name && i < len(fields) {
				var v uint64
				fmt.Sscan(fields[i], &v)
				return v
			}
		}
	}
	t.Fatalf("no %s %s in snmp of %s", proto, name, ns)
	return 0
}
