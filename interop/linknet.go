package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/interop/link"
)

// LinkNetwork is the packet-level path: the client in one network
// namespace, the server in another, joined by interop/link over TUN
// devices, so that QUIC and TCP see the same delay, loss, queue and
// corruption.
type LinkNetwork struct {
	l *link.Link
}

// NewLinkNetwork sets up the two namespaces (named after this process, so
// that concurrent runs do not meet) and the link between them. It needs
// root and /dev/net/tun; the error says what is missing.
func NewLinkNetwork(ctx context.Context) (*LinkNetwork, error) {
	sweepStale()
	pid := os.Getpid()
	l, err := link.Setup(ctx, link.Config{
		A: fmt.Sprintf("bpic%d", pid), B: fmt.Sprintf("bpis%d", pid),
		AddrA: "10.77.0.1/24", AddrB: "10.77.0.2/24",
		AtoB: link.DefaultDirection(), BtoA: link.DefaultDirection(), Seed: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("the packet-level link: %w", err)
	}
	return &LinkNetwork{l: l}, nil
}

// staleName matches the namespaces NewLinkNetwork makes: bpic or bpis
// and the pid of the process that made them.
var staleName = regexp.MustCompile(`^bpi[cs]([0-9]+)$`)

// sweepStale deletes the namespaces of runs whose process died without
// cleaning up (killed, say): names are unique per process, so Setup's own
// clean-up of leftovers of the same name never meets them.
func sweepStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // ours, or its process lives
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// Name is "link".
func (n *LinkNetwork) Name() string { return "link" }

func linkDirection(i Impairment, b link.Blackhole) link.Direction {
	return link.Direction{
		Delay: i.Delay, Jitter: i.Jitter, Loss: i.Loss, Rate: i.Rate,
		QueuePackets: i.Queue, Corrupt: i.Corrupt, Blackhole: b,
	}
}

// Set applies p to both directions of the link.
func (n *LinkNetwork) Set(p Path) error {
	var bh link.Blackhole
	if p.Blackhole.On > 0 {
		bh = link.Blackhole{Pass: p.Blackhole.On, Drop: p.Blackhole.Off}
	}
	cfg := n.l.Config()
	cfg.AtoB, cfg.BtoA, cfg.Seed = linkDirection(p.Up, bh), linkDirection(p.Down, bh), p.Seed
	return n.l.SetConfig(cfg)
}

// Server runs f in the server's namespace, with its address.
func (n *LinkNetwork) Server(f func(host string) error) error {
	return n.l.RunInB(func() error { return f(n.l.AddrB().String()) })
}

// Client runs f in the client's namespace.
func (n *LinkNetwork) Client(f func() error) error { return n.l.RunInA(f) }

// Front is the server's own address: the link is the path.
func (n *LinkNetwork) Front(_ <-chan struct{}, _ bp.Transport, addr string) (string, error) {
	return addr, nil
}

// Stats returns the link's counts.
func (n *LinkNetwork) Stats() link.Stats { return n.l.Stats() }

// Close removes the namespaces and the link.
func (n *LinkNetwork) Close() error { return n.l.Close() }
