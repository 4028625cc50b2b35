package interop

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/interop/impair"
)

// ErrNotModelled is returned (wrapped) by a Network's Set for an
// impairment it cannot apply; a case that needs it is reported
// unsupported on that path.
var ErrNotModelled = errors.New("impairment not modelled on this path")

// ProxyNetwork is the path on loopback through the userspace proxies of
// interop/impair: a UDP proxy in front of QUIC servers, a TCP proxy in
// front of TCP ones. The TCP proxy splits the connection, so TCP sees the
// delay but not the loss (the proxy's own TCP hides it), and corruption
// is not modelled: results over it are not comparable between QUIC and
// TCP. Use the link (NewLinkNetwork) where it is available.
type ProxyNetwork struct {
	mu      sync.Mutex
	path    Path
	proxies []proxy
	stop    chan struct{} // ends the blackhole schedule of the current path
}

type proxy interface {
	SetConfig(impair.Config)
	Blackhole(time.Duration)
	Close() error
}

// NewProxyNetwork returns a loopback path with no proxy yet.
func NewProxyNetwork() *ProxyNetwork { return &ProxyNetwork{} }

// Name is "proxy".
func (n *ProxyNetwork) Name() string { return "proxy" }

func impairConfig(p Path) impair.Config {
	dir := func(i Impairment) impair.Direction {
		return impair.Direction{Delay: i.Delay, Jitter: i.Jitter, Loss: i.Loss, Rate: i.Rate, Queue: i.Queue * 1500}
	}
	return impair.Config{Up: dir(p.Up), Down: dir(p.Down), Seed: p.Seed}
}

// Set applies p to every proxy, and to those made later.
func (n *ProxyNetwork) Set(p Path) error {
	if p.Up.Corrupt > 0 || p.Down.Corrupt > 0 {
		return fmt.Errorf("%w: the loopback proxies do not corrupt packets; corruption needs the packet-level link", ErrNotModelled)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.path = p
	for _, px := range n.proxies {
		px.SetConfig(impairConfig(p))
	}
	if n.stop != nil {
		close(n.stop)
		n.stop = nil
	}
	if p.Blackhole.On > 0 {
		n.stop = make(chan struct{})
		go n.blackholes(p.Blackhole.On, p.Blackhole.Off, n.stop)
	}
	return nil
}

// blackholes drops everything for off out of every on+off, until stop.
func (n *ProxyNetwork) blackholes(on, off time.Duration, stop <-chan struct{}) {
	t := time.NewTimer(on)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n.mu.Lock()
		for _, px := range n.proxies {
			px.Blackhole(off)
		}
		n.mu.Unlock()
		t.Reset(on + off)
	}
}

// Server runs f with the loopback address.
func (n *ProxyNetwork) Server(f func(host string) error) error { return f("127.0.0.1") }

// Client runs f.
func (n *ProxyNetwork) Client(f func() error) error { return f() }

// Front starts a proxy in front of addr for transport t, until done.
func (n *ProxyNetwork) Front(done <-chan struct{}, t bp.Transport, addr string) (string, error) {
	n.mu.Lock()
	cfg := impairConfig(n.path)
	n.mu.Unlock()
	var px proxy
	var front string
	if t == bp.TransportTCP {
		p, err := impair.NewTCP("127.0.0.1:0", addr, cfg)
		if err != nil {
			return "", err
		}
		px, front = p, p.Addr().String()
	} else {
		p, err := impair.NewUDP("127.0.0.1:0", addr, cfg)
		if err != nil {
			return "", err
		}
		px, front = p, p.Addr().String()
	}
	n.mu.Lock()
	n.proxies = append(n.proxies, px)
	n.mu.Unlock()
	go func() {
		<-done
		px.Close()
		n.mu.Lock()
		defer n.mu.Unlock()
		for i, q := range n.proxies {
			if q == px {
				n.proxies = append(n.proxies[:i], n.proxies[i+1:]...)
				break
			}
		}
	}()
	return front, nil
}

// Close ends the blackhole schedule and every proxy.
func (n *ProxyNetwork) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stop != nil {
		close(n.stop)
		n.stop = nil
	}
	for _, px := range n.proxies {
		px.Close()
	}
	n.proxies = nil
	return nil
}
