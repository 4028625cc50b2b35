package impair

import (
	"runtime"
	"testing"
	"time"
)

// TestCloseEndsGoroutines: Close ends every goroutine a proxy started,
// with packets queued, flows open and connections stalled, and is
// idempotent.
func TestCloseEndsGoroutines(t *testing.T) {
	echoU := startUDPEcho(t)
	echoT := startTCP(t, tcpEcho)
	base := runtime.NumGoroutine()

	u, err := NewUDP("127.0.0.1:0", echoU, both(Direction{
		Delay: 200 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: 0.2, Rate: 1_000_000,
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c := dialUDP(t, u.Addr())
		buf := make([]byte, 1000)
		for j := range 20 {
			if _, err := c.Write(packetWith(buf, uint64(100*i+j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	tp, err := NewTCP("127.0.0.1:0", echoT, both(Direction{Delay: 200 * time.Millisecond, Rate: 1_000_000}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c := dialTCP(t, tp.Addr())
		if _, err := c.Write(make([]byte, 100_000)); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(3*time.Second, func() bool { return u.Stats().Flows == 3 && tp.Stats().Flows == 2 }) {
		t.Fatalf("flows did not open: udp %+v, tcp %+v", u.Stats(), tp.Stats())
	}
	running := runtime.NumGoroutine()
	if running < base+4+3+1+2*4 {
		t.Fatalf("%d goroutines running, %d before the proxies: fewer than expected", running, base)
	}
	if err := u.Close(); err != nil {
		t.Error(err)
	}
	if err := tp.Close(); err != nil {
		t.Error(err)
	}
	if err := u.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Calls after Close do not panic or block.
	u.SetConfig(Config{})
	u.Blackhole(time.Second)
	tp.SetConfig(Config{})
	_ = u.Stats()
	_ = tp.Stats()
	if !waitFor(3*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:n])
	}
	t.Logf("goroutines: %d before, %d running, %d after Close", base, running, runtime.NumGoroutine())
	if st := tp.Stats(); st.Flows != 0 {
		t.Errorf("TCP flows after Close: %d", st.Flows)
	}
}
