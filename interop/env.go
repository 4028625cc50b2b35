package interop

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/bpmux/bp/transport"
)

// Impairment is the path's behaviour in one direction.
type Impairment struct {
	Delay  time.Duration // one way
	Jitter time.Duration
	Loss   float64 // probability per packet
	// Rate caps the bandwidth in bytes per second (0: none), with a
	// drop-tail queue of Queue packets.
	Rate  int64
	Queue int
	// Corrupt is the probability that a packet's payload has a bit
	// flipped.
	Corrupt float64
}

// Path is both directions of an impairment, and blackhole periods.
type Path struct {
	Up, Down Impairment // client → server, server → client
	// Blackhole, if On > 0, drops everything for Off out of every On+Off,
	// starting On after the path is set.
	Blackhole struct{ On, Off time.Duration }
	Seed      uint64
}

// DefaultPath is the QUIC interop runner's default link: 15 ms one way,
// 10 Mbit/s, a queue of 25 packets, in both directions.
func DefaultPath() Path {
	d := Impairment{Delay: 15 * time.Millisecond, Rate: 10_000_000 / 8, Queue: 25}
	return Path{Up: d, Down: d, Seed: 1}
}

// Network is the path between the two ends of every case.
type Network interface {
	// Name says what the path is: "link" (packet level, between network
	// namespaces) or "proxy" (userspace proxies on loopback).
	Name() string
	// Set applies the impairment to the path.
	Set(p Path) error
	// Server runs f where the server lives (its sockets made in f stay
	// there), with the host it should listen on.
	Server(f func(host string) error) error
	// Client runs f where the client lives.
	Client(f func() error) error
	// Front returns the address a client of transport t dials to reach a
	// server listening on addr: addr itself on a link, a proxy in front
	// of it on loopback. The proxy lives until the case ends (done).
	Front(done <-chan struct{}, t bp.Transport, addr string) (string, error)
	// Close releases the network.
	Close() error
}

// Env is what a case runs in: the pair, the path, a server certificate,
// and the logs kept for a case that fails.
type Env struct {
	Pair  Pair
	Quick bool

	ctx    context.Context
	net    Network
	cert   tls.Certificate
	pin    *tls.Config
	done   chan struct{}
	logDir string
	keep   bool

	mu      sync.Mutex
	closers []func()
	traces  []*trace.Writer
}

func newEnv(ctx context.Context, nw Network, p Pair, c Case, opts Options) (*Env, error) {
	path := DefaultPath()
	if c.Path != nil {
		path = c.Path(path)
	}
	if err := nw.Set(path); err != nil {
		return nil, fmt.Errorf("setting the path: %w", err)
	}
	cert, err := transport.SelfSigned("interop")
	if err != nil {
		return nil, err
	}
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		return nil, err
	}
	base := opts.LogDir
	keep := base != ""
	if base == "" {
		base = os.TempDir()
	}
	name := strings.NewReplacer("/", "", " ", "", "→", "-", "+", "").Replace(p.Client.Name + "→" + p.Server.Name + "-" + c.Name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(base, "interop-"+name+"-")
	if err != nil {
		return nil, err
	}
	return &Env{Pair: p, Quick: opts.Quick, ctx: ctx, net: nw, cert: cert, pin: pin, done: make(chan struct{}), logDir: dir, keep: keep}, nil
}

// config returns a session config with the case's settings, tracing its
// events (and QUIC's qlog, for quic-go) into the case's directory under
// side.
func (e *Env) config(side string, base *mux.Config) *mux.Config {
	var c mux.Config
	if base != nil {
		c = *base
	}
	c.QlogDir = filepath.Join(e.logDir, "qlog")
	f, err := os.Create(filepath.Join(e.logDir, side+".trace"))
	if err == nil {
		tw := trace.NewWriter(f, time.Now())
		hook := tw.Hook(side)
		if prev := c.OnEvent; prev != nil {
			c.OnEvent = func(ev mux.Event) { prev(ev); hook(ev) }
		} else {
			c.OnEvent = hook
		}
		e.mu.Lock()
		e.traces = append(e.traces, tw)
		e.mu.Unlock()
	}
	return &c
}

// Listen starts the server's listener with cfg (nil for the defaults)
// and returns it with the address the client dials.
func (e *Env) Listen(cfg *mux.Config) (*bp.Listener, string, error) {
	lc := bp.ListenConfig{Session: e.config("server", cfg)}
	var ln *bp.Listener
	err := e.net.Server(func(host string) error {
		var err error
		ln, err = lc.Listen(fmt.Sprintf("%s://%s", e.Pair.Server.Transport, net.JoinHostPort(host, "0")), transport.ServerConfig(e.cert))
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("listen: %w", err)
	}
	e.onClose(func() { ln.Close() })
	front, err := e.net.Front(e.done, e.Pair.Server.Transport, ln.Addr().String())
	if err != nil {
		return nil, "", err
	}
	return ln, front, nil
}

// Dial connects the client to addr with cfg (nil for the defaults). The
// session is closed when the case ends.
func (e *Env) Dial(ctx context.Context, addr string, cfg *mux.Config) (*mux.Session, error) {
	var sess *mux.Session
	e.mu.Lock()
	n := len(e.traces)
	e.mu.Unlock()
	c := e.config(fmt.Sprintf("client-%d", n), cfg)
	err := e.net.Client(func() error {
		var err error
		sess, err = bp.Dial(ctx, fmt.Sprintf("%s://%s", e.Pair.Client.Transport, addr), e.pin, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	e.onClose(func() { sess.Close() })
	return sess, nil
}

// SetPath changes the path's impairment while the case runs.
func (e *Env) SetPath(p Path) error { return e.net.Set(p) }

func (e *Env) onClose(f func()) {
	e.mu.Lock()
	e.closers = append(e.closers, f)
	e.mu.Unlock()
}

func (e *Env) close() {
	e.mu.Lock()
	closers, traces := e.closers, e.traces
	e.closers, e.traces = nil, nil
	e.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	close(e.done)
	for _, tw := range traces {
		tw.Close()
	}
}

// discardLogs removes the logs of a case that passed, unless they were
// asked for.
func (e *Env) discardLogs() {
	if !e.keep {
		os.RemoveAll(e.logDir)
	}
}
