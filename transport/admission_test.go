package transport

import (
	"context"
	"math"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAdmission runs the token bucket through sequences of calls at given
// offsets from a fixed start, checking each verdict and wait.
func TestAdmission(t *testing.T) {
	type call struct {
		at   time.Duration // since start
		ok   bool
		wait time.Duration // when !ok
	}
	tests := []struct {
		name  string
		rate  float64
		burst int
		calls []call
	}{
		{"no limit", 0, 0, []call{{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0}}},
		{"burst then refused", 10, 3, []call{
			{0, true, 0}, {0, true, 0}, {0, true, 0},
			{0, false, 100 * time.Millisecond},
			{50 * time.Millisecond, false, 50 * time.Millisecond}, // half a token back
			{100 * time.Millisecond, true, 0},                     // a whole one
			{100 * time.Millisecond, false, 100 * time.Millisecond},
		}},
		{"refusals take nothing", 10, 1, []call{
			{0, true, 0},
			{10 * time.Millisecond, false, 90 * time.Millisecond},
			{20 * time.Millisecond, false, 80 * time.Millisecond},
			{30 * time.Millisecond, false, 70 * time.Millisecond},
			{100 * time.Millisecond, true, 0},
		}},
		{"refills no further than the burst", 100, 2, []call{
			{0, true, 0}, {0, true, 0},
			{time.Hour, true, 0}, {time.Hour, true, 0},
			{time.Hour, false, 10 * time.Millisecond},
		}},
		{"default burst is one second of rate", 4, 0, []call{
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, true, 0},
			{0, false, 250 * time.Millisecond},
		}},
		{"slow rate, burst of one", 0.5, 0, []call{
			{0, true, 0},
			{time.Second, false, time.Second},
			{2 * time.Second, true, 0},
		}},
		{"fractional rate rounds the default burst up", 1.5, 0, []call{
			{0, true, 0}, {0, true, 0},
			{0, false, time.Second * 2 / 3},
		}},
		{"clock going backwards adds nothing", 10, 1, []call{
			{time.Second, true, 0},
			{0, false, 100 * time.Millisecond},
			{time.Second + 100*time.Millisecond, true, 0},
		}},
		{"steady rate admits every arrival", 10, 1, []call{
			{0, true, 0}, {100 * time.Millisecond, true, 0}, {200 * time.Millisecond, true, 0},
			{300 * time.Millisecond, true, 0}, {400 * time.Millisecond, true, 0},
		}},
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAdmission(tt.rate, tt.burst)
			for i, c := range tt.calls {
				ok, wait := a.admit(start.Add(c.at))
				require.Equal(t, c.ok, ok, "call %d at %v", i, c.at)
				if c.ok {
					assert.Zero(t, wait, "call %d", i)
				} else {
					assert.InDelta(t, float64(c.wait), float64(wait), float64(time.Microsecond), "call %d: wait %v", i, wait)
				}
			}
		})
	}
}

// TestAdmissionRateOverTime: driven by a fake clock at many times its
// rate for ten seconds, the bucket admits the burst plus rate per second,
// and no more.
func TestAdmissionRateOverTime(t *testing.T) {
	const rate, burst = 50.0, 10
	a := newAdmission(rate, burst)
	start := time.Unix(0, 0)
	admitted := 0
	for i := range 100_000 { // one call every 100 µs for 10 s
		if ok, _ := a.admit(start.Add(time.Duration(i) * 100 * time.Microsecond)); ok {
			admitted++
		}
	}
	assert.InDelta(t, burst+10*rate, admitted, 1)
}

func TestValidateRate(t *testing.T) {
	tests := []struct {
		rate  float64
		burst int
		ok    bool
	}{
		{0, 0, true},
		{100, 0, true},
		{0.1, 5, true},
		{-1, 0, false},
		{1, -1, false},
		{math.NaN(), 0, false},
		{math.Inf(1), 0, false},
	}
	for _, tt := range tests {
		err := validateRate("QUICConfig", tt.rate, tt.burst)
		assert.Equal(t, tt.ok, err == nil, "rate %v burst %d: %v", tt.rate, tt.burst, err)
		assert.Equal(t, tt.ok, QUICConfig{SessionRate: tt.rate, SessionBurst: tt.burst}.validate() == nil)
		assert.Equal(t, tt.ok, TCPConfig{SessionRate: tt.rate, SessionBurst: tt.burst}.validate() == nil)
	}
}

// fakeNow is a clock that moves only when told to.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeNow) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// TestListenerRateClock: the quic-go and TCP listeners take their
// bucket's time from their clock: with a clock that stands still, a
// burst of 2 admits two connections and refuses the third (counted in
// RefusedRate, not Refused); once the clock moves on by one token's
// worth, one more gets in.
func TestListenerRateClock(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	type setup struct {
		ln interface {
			Listener
			Stats() ListenerStats
		}
		dial func(ctx context.Context, addr string) (Conn, error)
	}
	for name, open := range map[string]func(t *testing.T, clock *fakeNow) setup{
		"quic": func(t *testing.T, clock *fakeNow) setup {
			ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{SessionRate: 1, SessionBurst: 2})
			require.NoError(t, err)
			ln.mu.Lock()
			ln.now = clock.now
			ln.mu.Unlock()
			return setup{ln, func(ctx context.Context, addr string) (Conn, error) { return DialQUIC(ctx, addr, conf, QUICConfig{}) }}
		},
		"tcp": func(t *testing.T, clock *fakeNow) setup {
			ln, err := ListenTCP("127.0.0.1:0", ServerConfig(cert), TCPConfig{SessionRate: 1, SessionBurst: 2})
			require.NoError(t, err)
			ln.mu.Lock()
			ln.now = clock.now
			ln.mu.Unlock()
			return setup{ln, func(ctx context.Context, addr string) (Conn, error) { return DialTCP(ctx, addr, conf, TCPConfig{}) }}
		},
	} {
		t.Run(name, func(t *testing.T) {
			clock := &fakeNow{t: time.Unix(1000, 0)}
			s := open(t, clock)
			defer s.ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			addr := s.ln.Addr().String()
			for i := range 2 {
				c, err := s.dial(ctx, addr)
				require.NoError(t, err, "connection %d of the burst", i)
				defer c.CloseWithError(0, "")
			}
			_, err := s.dial(ctx, addr)
			require.ErrorIs(t, err, ErrConnRefused)
			st := s.ln.Stats()
			assert.Positive(t, st.RefusedRate)
			assert.Zero(t, st.Refused)

			clock.advance(time.Second)
			c, err := s.dial(ctx, addr)
			require.NoError(t, err, "a token came back")
			defer c.CloseWithError(0, "")
			_, err = s.dial(ctx, addr)
			require.ErrorIs(t, err, ErrConnRefused, "and only one")
		})
	}
}

// TestRecentRefusals: an address refused just now is remembered for
// refusedEcho, no longer, and only the last refusedSlots are.
func TestRecentRefusals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := netip.MustParseAddrPort("127.0.0.1:4000")
	b := netip.MustParseAddrPort("127.0.0.1:4001")
	tests := []struct {
		name string
		add  []netip.AddrPort // at t0
		ask  netip.AddrPort
		at   time.Duration
		want bool
	}{
		{"empty", nil, a, 0, false},
		{"just refused", []netip.AddrPort{a}, a, 0, true},
		{"other port", []netip.AddrPort{a}, b, 0, false},
		{"within the echo", []netip.AddrPort{a}, a, refusedEcho - 1, true},
		{"after the echo", []netip.AddrPort{a}, a, refusedEcho, false},
		{"earlier than refused", []netip.AddrPort{a}, a, -time.Millisecond, false},
		{"invalid address", []netip.AddrPort{{}}, netip.AddrPort{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recentRefusals
			for _, x := range tt.add {
				r.add(x, t0)
			}
			assert.Equal(t, tt.want, r.has(tt.ask, t0.Add(tt.at)))
		})
	}

	var r recentRefusals
	r.add(a, t0)
	for i := range refusedSlots {
		assert.True(t, r.has(a, t0), "still there after %d others", i)
		r.add(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i+1)), t0)
	}
	assert.False(t, r.has(a, t0), "pushed out by newer ones")

	assert.Equal(t, a, addrPort(net.UDPAddrFromAddrPort(a)))
	assert.Equal(t, a, addrPort(net.TCPAddrFromAddrPort(a)))
	assert.False(t, addrPort(&net.UnixAddr{Name: "x"}).IsValid())
}
