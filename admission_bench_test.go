package bp_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/retry"
)

// Admission under a crowd: benchOpeners clients dial at once a listener
// that admits benchBurst sessions at once and benchRate a second, and
// each keeps trying until it is in: naively (again at once after every
// refusal: a retry storm) or with DialConfig.Retry (exponential backoff
// with full jitter). The metrics:
//
//	s-all-connected      from the first Dial to the last client in
//	peak-refused/s       most refusals in any 1 s window (10 samples of
//	                     ListenerStats every 100 ms)
//	peak-refused/s@100ms most refusals in one 100 ms sample, times 10
//	refusals/op          refusals in all (ListenerStats.RefusedRate)
//	dials/op             Dial attempts the clients made in all
//
// Refusals count QUIC Initial packets, as ListenerStats does: a refused
// quic-go client whose first flight takes two packets counts twice.
const (
	benchOpeners = 100
	benchRate    = 50
	benchBurst   = 10
)

func BenchmarkAdmission100Openers(b *testing.B) {
	jittered := &retry.Policy{
		Base:        100 * time.Millisecond,
		Cap:         5 * time.Second,
		MaxAttempts: -1, // bounded by the context
	}
	strategies := []struct {
		name string
		dial func(ctx context.Context, addr string, srv *server, attempts *atomic.Int64) (*mux.Session, error)
	}{
		{"naive", func(ctx context.Context, addr string, srv *server, attempts *atomic.Int64) (*mux.Session, error) {
			for {
				attempts.Add(1)
				sess, err := bp.Dial(ctx, addr, srv.tls, nil)
				if err == nil || !bp.Retryable(err) || ctx.Err() != nil {
					return sess, err
				}
			}
		}},
		{"jittered", func(ctx context.Context, addr string, srv *server, attempts *atomic.Int64) (*mux.Session, error) {
			p := *jittered
			p.OnRetry = func(retry.Retry) { attempts.Add(1) }
			attempts.Add(1) // the first
			return bp.DialConfig{Retry: &p}.Dial(ctx, addr, srv.tls)
		}},
	}
	for _, st := range strategies {
		b.Run(st.name, func(b *testing.B) {
			var all, peak1s, peak100, refusals, dials float64
			for range b.N {
				r := crowd(b, st.dial)
				all += r.allConnected.Seconds()
				peak1s += r.peak1s
				peak100 += r.peak100ms
				refusals += float64(r.refusals)
				dials += float64(r.dials)
			}
			n := float64(b.N)
			b.ReportMetric(all/n, "s-all-connected")
			b.ReportMetric(peak1s/n, "peak-refused/s")
			b.ReportMetric(peak100/n, "peak-refused/s@100ms")
			b.ReportMetric(refusals/n, "refusals/op")
			b.ReportMetric(dials/n, "dials/op")
		})
	}
}

type crowdResult struct {
	allConnected time.Duration
	peak1s       float64 // refusals in the busiest 1 s window
	peak100ms    float64 // refusals in the busiest 100 ms, per second
	refusals     uint64
	dials        int64
}

// crowd runs one round: a fresh listener, benchOpeners clients dialling
// it at once with dial, and a sampler of its stats.
func crowd(b *testing.B, dial func(context.Context, string, *server, *atomic.Int64) (*mux.Session, error)) crowdResult {
	b.StopTimer()
	srv, addr := listenRound(b, bp.ListenConfig{SessionRate: benchRate, SessionBurst: benchBurst})
	defer srv.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	samples := make(chan []uint64, 1)
	stopSampling := make(chan struct{})
	go func() {
		var s []uint64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s = append(s, srv.ln.Stats().RefusedRate)
			select {
			case <-t.C:
			case <-stopSampling:
				samples <- append(s, srv.ln.Stats().RefusedRate)
				return
			}
		}
	}()

	var (
		attempts atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		sessions []*mux.Session
		failed   []error
	)
	start := make(chan struct{})
	for range benchOpeners {
		wg.Go(func() {
			<-start
			sess, err := dial(ctx, addr, srv.server, &attempts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			sessions = append(sessions, sess)
		})
	}
	b.StartTimer()
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	b.StopTimer()
	close(stopSampling)
	s := <-samples
	for _, sess := range sessions {
		sess.Close()
	}
	require.Empty(b, failed, "every opener gets in")

	r := crowdResult{allConnected: took, refusals: s[len(s)-1], dials: attempts.Load()}
	for i := 1; i < len(s); i++ {
		r.peak100ms = max(r.peak100ms, float64(s[i]-s[i-1])*10)
		lo := max(0, i-10)
		r.peak1s = max(r.peak1s, float64(s[i]-s[lo]))
	}
	b.StartTimer()
	return r
}

// round is a server for one round of a benchmark, stopped by stop.
type round struct {
	*server
	stop func()
}

// listenRound is listenOver(TransportQUIC) with a stop of its own rather
// than a cleanup at the end of the benchmark.
func listenRound(b *testing.B, lc bp.ListenConfig) (round, string) {
	b.Helper()
	var cleanups []func()
	tb := &roundTB{B: b, cleanups: &cleanups}
	srv, addr := listenOver(tb, bp.TransportQUIC, lc)
	return round{server: srv, stop: func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}}, addr
}

// roundTB is a testing.TB whose Cleanup runs when the round stops.
type roundTB struct {
	*testing.B
	cleanups *[]func()
}

func (r *roundTB) Cleanup(f func()) { *r.cleanups = append(*r.cleanups, f) }
