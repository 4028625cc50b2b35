package bp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/retry"
	"github.com/bpmux/bp/transport"
)

// listenOver is listen over transport t: it returns the server and the
// address a client dials, with t's scheme.
func listenOver(tb testing.TB, t bp.Transport, lc bp.ListenConfig) (*server, string) {
	tb.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(tb, err)
	ln, err := lc.Listen(string(t)+"://127.0.0.1:0", transport.ServerConfig(cert))
	require.NoError(tb, err)
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { echo(ctx, sess) })
		}
	})
	tb.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return &server{ln: ln, cert: cert, tls: pin}, string(t) + "://" + ln.Addr().String()
}

// TestListenerSessionRate: over every binding, a listener with a burst of
// 3 and a slow rate admits three sessions and refuses the fourth, counted
// in RefusedRate, not Refused. quic-go and TCP refuse before the
// handshake, with no hint (transport.ErrConnRefused); x/net/quic can only
// close the session after it, with a reason that says when to retry.
func TestListenerSessionRate(t *testing.T) {
	for _, tr := range bp.Transports() {
		t.Run(string(tr), func(t *testing.T) {
			srv, addr := listenOver(t, tr, bp.ListenConfig{SessionRate: 0.2, SessionBurst: 3})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i := range 3 {
				sess, err := bp.Dial(ctx, addr, srv.tls, nil)
				require.NoError(t, err, "session %d of the burst", i)
				defer sess.Close()
				roundTrip(ctx, t, sess, "in the burst")
			}
			sess, err := bp.Dial(ctx, addr, srv.tls, nil)
			if tr == bp.TransportXQUIC {
				require.NoError(t, err, "x/net/quic refuses only after the handshake")
				select {
				case <-sess.Done():
				case <-ctx.Done():
					t.Fatal("the session over the rate stayed open")
				}
				var ae *transport.ApplicationError
				require.ErrorAs(t, sess.Err(), &ae)
				assert.True(t, ae.Remote)
				assert.Contains(t, ae.Reason, "retry after")
				t.Logf("x/net/quic's refusal: %v", sess.Err())
			} else {
				require.Error(t, err)
				assert.ErrorIs(t, err, transport.ErrConnRefused)
				assert.True(t, bp.Retryable(err), "a refusal is retryable: %v", err)
				_, hinted := retry.RetryAfter(err)
				assert.False(t, hinted, "no binding carries a hint before the handshake")
			}
			st := srv.ln.Stats()
			assert.GreaterOrEqual(t, st.RefusedRate, uint64(1))
			assert.Zero(t, st.Refused, "no cap was reached")
			assert.Equal(t, 3, st.Sessions)
		})
	}
}

// TestDialRetryAfterBurst: 20 clients dial a listener that admits 5 at
// once and 5 a second. Dialled once, some are refused; the refused ones,
// dialled again with a retry policy, all get in, and their first waits
// are spread by the jitter rather than equal.
func TestDialRetryAfterBurst(t *testing.T) {
	const clients = 20
	srv, addr := listenOver(t, bp.TransportQUIC, bp.ListenConfig{SessionRate: 5, SessionBurst: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		mu       sync.Mutex
		sessions []*mux.Session
		refused  int
		wg       sync.WaitGroup
	)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for range clients {
		wg.Go(func() {
			sess, err := bp.Dial(ctx, addr, srv.tls, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				assert.ErrorIs(t, err, transport.ErrConnRefused)
				refused++
				return
			}
			sessions = append(sessions, sess)
		})
	}
	wg.Wait()
	require.Positive(t, refused, "a burst of %d against a burst of 5", clients)
	assert.GreaterOrEqual(t, srv.ln.Stats().RefusedRate, uint64(refused))
	t.Logf("%d of %d refused at once", refused, clients)

	var retries atomic.Int64
	firstWaits := make(chan time.Duration, refused)
	dc := bp.DialConfig{Retry: &retry.Policy{
		Base:        100 * time.Millisecond,
		Cap:         time.Second,
		MaxAttempts: -1, // bounded by ctx
		OnRetry: func(r retry.Retry) {
			retries.Add(1)
			if r.Attempt == 1 {
				firstWaits <- r.Delay
			}
		},
	}}
	for range refused {
		wg.Go(func() {
			sess, err := dc.Dial(ctx, addr, srv.tls)
			if !assert.NoError(t, err, "a retrying dialer gets in") {
				return
			}
			mu.Lock()
			sessions = append(sessions, sess)
			mu.Unlock()
			roundTrip(ctx, t, sess, "after retrying")
		})
	}
	wg.Wait()
	close(firstWaits)
	assert.Equal(t, clients, srv.ln.Sessions())
	distinct := map[time.Duration]bool{}
	for d := range firstWaits {
		distinct[d] = true
	}
	if len(distinct) > 0 {
		assert.Greater(t, len(distinct), 1, "first retries not in lock-step")
	}
	t.Logf("%d retries; %d sessions; stats %+v", retries.Load(), srv.ln.Sessions(), srv.ln.Stats())
}

// TestDialRetryNotRetryable: what retrying cannot mend returns at once,
// after a single attempt: a certificate that fails verification, an
// invalid argument, an unknown transport.
func TestDialRetryNotRetryable(t *testing.T) {
	for _, tr := range []bp.Transport{bp.TransportQUIC, bp.TransportTCP} {
		t.Run(string(tr), func(t *testing.T) {
			srv, addr := listenOver(t, tr, bp.ListenConfig{})
			other, err := transport.SelfSigned("127.0.0.1")
			require.NoError(t, err)
			wrongPin, err := transport.PinnedClientConfig(transport.Fingerprint(other.Certificate[0]))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			var retries atomic.Int64
			dc := bp.DialConfig{Retry: &retry.Policy{
				Base:        time.Second,
				MaxAttempts: -1,
				OnRetry:     func(retry.Retry) { retries.Add(1) },
			}}
			tests := []struct {
				name string
				addr string
				conf *tls.Config
				cfg  *mux.Config
				is   error
			}{
				{"wrong certificate", addr, wrongPin, nil, nil},
				{"nil tls config", addr, nil, nil, bp.ErrInvalidArgument},
				{"invalid session config", addr, srv.tls, &mux.Config{DeadPeerTimeout: time.Second, KeepAliveInterval: 2 * time.Second}, bp.ErrInvalidArgument},
				{"unknown transport", "sctp://" + srv.ln.Addr().String(), srv.tls, nil, bp.ErrInvalidArgument},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					dc := dc
					dc.Session = tt.cfg
					retries.Store(0)
					start := time.Now()
					sess, err := dc.Dial(ctx, tt.addr, tt.conf)
					require.Error(t, err)
					assert.Nil(t, sess)
					if tt.is != nil {
						assert.ErrorIs(t, err, tt.is)
					}
					assert.False(t, bp.Retryable(err), "%v", err)
					assert.Zero(t, retries.Load(), "no retry: %v", err)
					assert.NotErrorIs(t, err, retry.ErrExhausted)
					t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
				})
			}
		})
	}
}

// TestDialRetryBoundedByContext: against a listener that admits nobody
// new, a retrying Dial gives up by its context's deadline, with an error
// that still says the server refused.
func TestDialRetryBoundedByContext(t *testing.T) {
	srv, addr := listenOver(t, bp.TransportQUIC, bp.ListenConfig{SessionRate: 0.001, SessionBurst: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := bp.Dial(ctx, addr, srv.tls, nil)
	require.NoError(t, err)
	defer first.Close()

	dctx, dcancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer dcancel()
	start := time.Now()
	_, err = bp.DialConfig{Retry: &retry.Policy{Base: 50 * time.Millisecond, Cap: 200 * time.Millisecond, MaxAttempts: -1}}.Dial(dctx, addr, srv.tls)
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, transport.ErrConnRefused)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, 5*time.Second, "gave up by the deadline")
	assert.GreaterOrEqual(t, srv.ln.Stats().RefusedRate, uint64(2), "it did retry")
	t.Logf("gave up after %v: %v", took.Round(time.Millisecond), err)
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("dial: %w", transport.ErrConnRefused), true},
		{fmt.Errorf("dial: %w: %w", transport.ErrConnClosed, transport.ErrIdleTimeout), true},
		{fmt.Errorf("dial: %w", transport.ErrConnClosed), false},
		{fmt.Errorf("%w: %w", bp.ErrInvalidArgument, transport.ErrConnRefused), false},
		{fmt.Errorf("%w: %w", transport.ErrConnRefused, &tls.CertificateVerificationError{Err: errors.New("bad")}), false},
		{fmt.Errorf("%w: %w", transport.ErrIdleTimeout, x509.UnknownAuthorityError{}), false},
		{fmt.Errorf("%w: %w", transport.ErrConnRefused, x509.CertificateInvalidError{}), false},
		{fmt.Errorf("%w: %w", transport.ErrConnRefused, x509.HostnameError{}), false},
		{context.DeadlineExceeded, false},
		{errors.New("something else"), false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, bp.Retryable(tt.err), "%v", tt.err)
	}
}
