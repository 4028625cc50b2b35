package interop

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
)

// Case is one test of the matrix.
type Case struct {
	Name string
	// Path changes the default path for the case; nil keeps it.
	Path func(Path) Path
	// Timeout bounds the case; zero means 60 s.
	Timeout time.Duration
	// Run runs the case in e and returns what it measured.
	Run func(ctx context.Context, e *Env) (details string, err error)
	// Unsupported, if set, says why a pair cannot run the case at all.
	Unsupported func(Pair) string
	// ExpectFail, if set, says why a pair is expected to fail the case
	// by design (its failure is then reported as unsupported, with the
	// figure measured).
	ExpectFail func(Pair) string
}

func (c Case) unsupported(p Pair) string {
	if c.Unsupported == nil {
		return ""
	}
	return c.Unsupported(p)
}

// Cases returns every case, in the order the matrix shows them.
func Cases() []Case {
	return []Case{
		{Name: "handshake", Run: runHandshake},
		{Name: "transfer", Run: runTransfer},
		{Name: "multiplexing", Run: runMultiplexing, Timeout: 120 * time.Second},
		{Name: "stall", Run: runStall},
		{Name: "blackhole", Run: runBlackhole, Timeout: 120 * time.Second},
		{Name: "transferloss", Run: runTransferLoss, Timeout: 120 * time.Second, Path: func(p Path) Path {
			p.Up.Loss, p.Down.Loss = 0.02, 0.02
			return p
		}},
		{Name: "handshakeloss", Run: runHandshakeLoss, Timeout: 300 * time.Second, Path: func(p Path) Path {
			p.Up.Loss, p.Down.Loss = 0.30, 0.30
			return p
		}, ExpectFail: func(p Pair) string {
			if p.Client.Transport == bp.TransportTCP {
				return "TCP retransmits a lost SYN after 1 s, then 3 s, 7 s (exponential backoff), and the TLS flights after a 200 ms+ RTO: at 30 % loss each way a handshake often outlasts the binding's 10 s handshake timeout, which QUIC's 3×RTT probe timeouts do not"
			}
			return ""
		}},
		{Name: "corruption", Run: runTransferLoss, Timeout: 120 * time.Second, Path: func(p Path) Path {
			p.Up.Corrupt, p.Down.Corrupt = 0.02, 0.02
			return p
		}},
		{Name: "longrtt", Run: runLongRTT, Timeout: 120 * time.Second, Path: func(p Path) Path {
			p.Up.Delay, p.Down.Delay = 375*time.Millisecond, 375*time.Millisecond
			p.Up.Queue, p.Down.Queue = 1000, 1000 // a BDP's worth: the queue is not the bottleneck
			return p
		}},
		{Name: "goodput", Run: runGoodput, Timeout: 300 * time.Second},
		{Name: "goaway", Run: runGoAway},
		{Name: "compression", Run: runCompression, Timeout: 120 * time.Second},
	}
}

// QuickCases returns the cases of the fast slice.
func QuickCases() []Case {
	var out []Case
	for _, c := range Cases() {
		switch c.Name {
		case "handshake", "transfer", "multiplexing", "stall", "goaway", "compression":
			out = append(out, c)
		}
	}
	return out
}

// CaseNamed returns the case called name.
func CaseNamed(name string) (Case, bool) {
	for _, c := range Cases() {
		if c.Name == name {
			return c, true
		}
	}
	return Case{}, false
}

// size picks a size for the full or the quick run.
func (e *Env) size(full, quick int) int {
	if e.Quick {
		return quick
	}
	return full
}

// pattern is a deterministic byte stream: seed gives the same bytes on
// both ends.
type pattern struct{ r *rand.ChaCha8 }

func newPattern(seed uint64) *pattern {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &pattern{rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.r.Read(b) }

// digest is the sha256 of n bytes of pattern seed.
func digest(seed uint64, n int) [32]byte {
	h := sha256.New()
	io.CopyN(h, newPattern(seed), int64(n))
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// server runs handle for every stream of every session the listener
// accepts, until the case ends; its first error is returned by wait.
type server struct {
	ln   *bp.Listener
	addr string
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	sess []*mux.Session
}

func (e *Env) serve(ctx context.Context, cfg *mux.Config, handle func(*mux.Session, *mux.Stream) error) (*server, error) {
	ln, addr, err := e.Listen(cfg)
	if err != nil {
		return nil, err
	}
	srv := &server{ln: ln, addr: addr}
	srv.wg.Go(func() {
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			srv.mu.Lock()
			srv.sess = append(srv.sess, sess)
			srv.mu.Unlock()
			srv.wg.Go(func() {
				for {
					s, err := sess.Accept(ctx)
					if err != nil {
						return
					}
					srv.wg.Go(func() {
						if err := handle(sess, s); err != nil {
							srv.fail(err)
						}
					})
				}
			})
		}
	})
	e.onClose(func() {
		ln.Close()
		srv.mu.Lock()
		for _, s := range srv.sess {
			s.Close()
		}
		srv.mu.Unlock()
		srv.wg.Wait()
	})
	return srv, nil
}

func (s *server) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func (s *server) firstErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *server) session(i int) *mux.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.sess) {
		return s.sess[i]
	}
	return nil
}

// echo copies a stream back to its writer.
func echo(_ *mux.Session, s *mux.Stream) error {
	defer s.Close()
	if _, err := io.Copy(s, s); err != nil {
		return fmt.Errorf("server echo: %w", err)
	}
	return s.CloseWrite()
}

// sink reads a stream to its end and answers with the sha256 of what it
// read: the server's end of a transfer.
func sink(_ *mux.Session, s *mux.Stream) error {
	defer s.Close()
	h := sha256.New()
	if _, err := io.Copy(h, s); err != nil {
		return fmt.Errorf("server read: %w", err)
	}
	if _, err := s.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("server answer: %w", err)
	}
	return s.CloseWrite()
}

// send writes n bytes of pattern seed on s, closes its writing, and
// checks the server's sha256 against the client's.
func send(ctx context.Context, s *mux.Stream, seed uint64, n int) error {
	if _, err := io.CopyN(s, newPattern(seed), int64(n)); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(io.LimitReader(s, 64))
	if err != nil {
		return fmt.Errorf("client read of the server's sha256: %w", err)
	}
	if want := digest(seed, n); string(got) != string(want[:]) {
		return fmt.Errorf("sha256 differs: server read %x, client sent %x", got, want)
	}
	return s.Close()
}

func runHandshake(ctx context.Context, e *Env) (string, error) {
	srv, err := e.serve(ctx, nil, echo)
	if err != nil {
		return "", err
	}
	start := time.Now()
	sess, err := e.Dial(ctx, srv.addr, nil)
	if err != nil {
		return "", err
	}
	took := time.Since(start)
	s, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	msg := []byte("hello, backpressure")
	if _, err := s.Write(msg); err != nil {
		return "", err
	}
	s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil {
		return "", err
	}
	if string(got) != string(msg) {
		return "", fmt.Errorf("echo %q, want %q", got, msg)
	}
	s.Close()
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return "", err
	}
	return fmt.Sprintf("connected in %v, RTT %v", took.Round(time.Millisecond), sess.Stats().RTT.Round(time.Millisecond)), srv.firstErr()
}

// shutdownBoth ends the client's session gracefully and checks that the
// server's ended too, with nothing lost.
func shutdownBoth(ctx context.Context, sess *mux.Session, srv *server) error {
	if err := sess.Shutdown(ctx); err != nil {
		return fmt.Errorf("client shutdown: %w", err)
	}
	if ss := srv.session(0); ss != nil {
		select {
		case <-ss.Done():
		case <-ctx.Done():
			return errors.New("the server's session did not end after the client's shutdown")
		}
		if st := ss.Stats(); st.CloseCode != uint64(framing.NoError) {
			return fmt.Errorf("server session closed with %v", framing.ErrorCode(st.CloseCode))
		}
	}
	return nil
}

// runTransfer: a client that starts with small windows sends to a server
// whose window must grow.
func runTransfer(ctx context.Context, e *Env) (string, error) {
	small := &mux.Config{InitialWindow: mux.DefaultInitialWindow, MaxWindow: 16 << 20}
	srv, err := e.serve(ctx, small, sink)
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, small)
	if err != nil {
		return "", err
	}
	n := e.size(10<<20, 2<<20)
	s, err := sess.Open(ctx)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := send(ctx, s, 1, n); err != nil {
		return "", err
	}
	took := time.Since(start)
	ss := srv.session(0)
	if ss == nil {
		return "", errors.New("no server session")
	}
	grew := ss.Stats().WindowGrowths
	if grew == 0 {
		return "", fmt.Errorf("the server's window never grew from %d", mux.DefaultInitialWindow)
	}
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s in %v (%.1f Mbit/s); the window grew %d times from 16 KiB", mib(n), took.Round(time.Millisecond), mbit(n, took), grew), srv.firstErr()
}

func runTransferLoss(ctx context.Context, e *Env) (string, error) {
	took, err := transferOnce(ctx, e, e.size(5<<20, 1<<20))
	if err != nil {
		return "", err
	}
	n := e.size(5<<20, 1<<20)
	return fmt.Sprintf("%s intact in %v (%.1f Mbit/s)", mib(n), took.Round(time.Millisecond), mbit(n, took)), nil
}

// transferOnce sends n bytes on one stream of a new session and checks
// them at the server, then ends both sessions gracefully.
func transferOnce(ctx context.Context, e *Env, n int) (time.Duration, error) {
	srv, err := e.serve(ctx, nil, sink)
	if err != nil {
		return 0, err
	}
	sess, err := e.Dial(ctx, srv.addr, nil)
	if err != nil {
		return 0, err
	}
	s, err := sess.Open(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := send(ctx, s, 2, n); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return 0, err
	}
	return took, srv.firstErr()
}

// runBlackhole: a transfer long enough to meet a blackhole (5 s of path,
// then 2 s of nothing) completes intact.
func runBlackhole(ctx context.Context, e *Env) (string, error) {
	p := DefaultPath()
	p.Blackhole.On, p.Blackhole.Off = 5*time.Second, 2*time.Second
	if e.Quick {
		p.Blackhole.On, p.Blackhole.Off = time.Second, time.Second
	}
	if err := e.SetPath(p); err != nil {
		return "", err
	}
	// Long enough at the path's rate to outlast the first blackhole.
	n := int(float64(p.Up.Rate) * (p.Blackhole.On + p.Blackhole.Off).Seconds() * 0.9)
	took, err := transferOnce(ctx, e, n)
	if err != nil {
		return "", err
	}
	atRate := time.Duration(float64(n) / float64(p.Up.Rate) * float64(time.Second))
	if took < atRate+p.Blackhole.Off/2 {
		return "", fmt.Errorf("%s took %v, no longer than at the path's rate (%v): the blackhole did not happen", mib(n), took.Round(time.Millisecond), atRate.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s intact in %v across a %v blackhole (%v at the path's rate)", mib(n), took.Round(time.Millisecond), p.Blackhole.Off, atRate.Round(time.Millisecond)), nil
}

func runHandshakeLoss(ctx context.Context, e *Env) (string, error) {
	srv, err := e.serve(ctx, nil, echo)
	if err != nil {
		return "", err
	}
	n := e.size(10, 3)
	var times []time.Duration
	for i := range n {
		start := time.Now()
		sess, err := e.Dial(ctx, srv.addr, nil)
		if err != nil {
			return "", fmt.Errorf("handshake %d of %d: %w", i+1, n, err)
		}
		times = append(times, time.Since(start))
		s, err := sess.Open(ctx)
		if err != nil {
			return "", err
		}
		msg := make([]byte, 1024)
		if _, err := s.Write(msg); err != nil {
			return "", err
		}
		s.CloseWrite()
		got, err := io.ReadAll(s)
		if err != nil || len(got) != len(msg) {
			return "", fmt.Errorf("handshake %d: echo of %d bytes, %v", i+1, len(got), err)
		}
		s.Close()
		sess.Close()
	}
	mean, sd := meanSD(times)
	return fmt.Sprintf("%d handshakes, each %v ± %v", n, mean.Round(time.Millisecond), sd.Round(time.Millisecond)), srv.firstErr()
}

func meanSD(ds []time.Duration) (time.Duration, time.Duration) {
	var sum float64
	for _, d := range ds {
		sum += float64(d)
	}
	mean := sum / float64(len(ds))
	var v float64
	for _, d := range ds {
		v += (float64(d) - mean) * (float64(d) - mean)
	}
	if len(ds) > 1 {
		v /= float64(len(ds) - 1)
	}
	return time.Duration(mean), time.Duration(math.Sqrt(v))
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func mbit(n int, d time.Duration) float64 { return float64(n) * 8 / d.Seconds() / 1e6 }

// runMultiplexing: 2,000 small files, each on a stream of its own, with a
// server stream limit below 1,000: the client opens them all at once, and
// waits at the limit.
func runMultiplexing(ctx context.Context, e *Env) (string, error) {
	const limit = 500
	var open, peak atomic.Int64
	// Small windows: a thousand streams at once at the default 128 KiB
	// would need more than the session budget of 64 MiB (Open fails fast
	// with window.ErrBudgetExhausted rather than grant no credit).
	small := &mux.Config{InitialWindow: mux.DefaultInitialWindow, MaxStreams: limit}
	srv, err := e.serve(ctx, small, func(sess *mux.Session, s *mux.Stream) error {
		n := open.Add(1)
		defer open.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		return sink(sess, s)
	})
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, &mux.Config{InitialWindow: mux.DefaultInitialWindow})
	if err != nil {
		return "", err
	}
	files := e.size(2000, 200)
	workers := min(files, 1000) // more at once than the limit allows
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				s, err := sess.Open(ctx)
				if err == nil {
					err = send(ctx, s, uint64(1000+i), 1024+i%7*1024)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("file %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
feed:
	for i := range files {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return "", firstErr
	}
	took := time.Since(start)
	ss := srv.session(0)
	if ss == nil {
		return "", errors.New("no server session")
	}
	st := ss.Stats()
	if st.StreamsAccepted != uint64(files) {
		return "", fmt.Errorf("the server accepted %d streams, want %d (refused %d)", st.StreamsAccepted, files, st.StreamsRefused)
	}
	if p := peak.Load(); p > limit {
		return "", fmt.Errorf("%d streams open at once at the server, over its limit of %d", p, limit)
	}
	if err := shutdownBoth(ctx, sess, srv); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d files intact in %v; at most %d streams open at once (limit %d), %d refused", files, took.Round(time.Millisecond), peak.Load(), limit, st.StreamsRefused), srv.firstErr()
}
