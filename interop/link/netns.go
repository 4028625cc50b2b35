package link

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where ip netns keeps its named namespaces.
const netnsDir = "/var/run/netns"

// Link is a running link between two network namespaces. Its methods are
// safe for concurrent use.
type Link struct {
	clk        clock
	tunA, tunB *os.File
	ab, ba     *dir
	addrA      netip.Addr
	addrB      netip.Addr

	mu  sync.Mutex // guards cfg
	cfg Config

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Setup makes the namespaces cfg.A and cfg.B (deleting any of those names
// left by an earlier run), joins them by a TUN device each, and starts
// forwarding between the devices, impaired by cfg. ctx bounds the setup
// only; the link runs until Close.
//
// Each TUN device is made in the caller's namespace under a temporary name,
// moved into its namespace with ip link set ... netns, renamed to DevA or
// DevB, given its address and MTU, and brought up, with the loopback
// device, a route to the other side's address and no IPv6 link-local
// address (so that nothing but the caller's traffic crosses the link). The
// files of the devices stay with this process, which forwards between them.
func Setup(ctx context.Context, cfg Config) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("link: the ip command of iproute2 is needed: %w", err)
	}
	tmpA, tmpB := tempDev(cfg.A), tempDev(cfg.B)
	if tmpA == tmpB {
		return nil, fmt.Errorf("link: namespaces %q and %q hash to one device name; rename one", cfg.A, cfg.B)
	}
	pa, _ := netip.ParsePrefix(cfg.AddrA)
	pb, _ := netip.ParsePrefix(cfg.AddrB)
	l := &Link{
		clk:   clock{start: time.Now()},
		addrA: pa.Addr(),
		addrB: pb.Addr(),
		cfg:   cfg,
		done:  make(chan struct{}),
	}
	removeLeftovers(ctx, cfg, tmpA, tmpB)
	fail := func(err error) (*Link, error) {
		l.teardown()
		return nil, err
	}
	for _, ns := range []string{cfg.A, cfg.B} {
		if err := runIP(ctx, "", "netns", "add", ns); err != nil {
			return fail(err)
		}
	}
	var err error
	if l.tunA, err = openTUN(tmpA); err != nil {
		return fail(fmt.Errorf("link: %w", err))
	}
	if l.tunB, err = openTUN(tmpB); err != nil {
		return fail(fmt.Errorf("link: %w", err))
	}
	sides := []struct {
		ns, tmp, dev string
		own, peer    netip.Prefix
	}{
		{cfg.A, tmpA, cfg.devA(), pa, pb},
		{cfg.B, tmpB, cfg.devB(), pb, pa},
	}
	for _, s := range sides {
		if err := runIP(ctx, "", "link", "set", s.tmp, "netns", s.ns); err != nil {
			return fail(err)
		}
		nodad := ""
		if !s.own.Addr().Is4() {
			nodad = " nodad"
		}
		batch := strings.Join([]string{
			fmt.Sprintf("link set dev %s name %s", s.tmp, s.dev),
			fmt.Sprintf("link set dev %s mtu %d addrgenmode none", s.dev, cfg.mtu()),
			fmt.Sprintf("addr add %s dev %s%s", s.own, s.dev, nodad),
			fmt.Sprintf("link set dev %s up", s.dev),
			"link set dev lo up",
			fmt.Sprintf("route replace %s dev %s", netip.PrefixFrom(s.peer.Addr(), s.peer.Addr().BitLen()), s.dev),
		}, "\n") + "\n"
		if err := runIP(ctx, batch, "-n", s.ns, "-batch", "-"); err != nil {
			return fail(err)
		}
	}
	mtu := cfg.mtu()
	l.ab = newDir(l.clk, l.tunA, l.tunB, newModel(cfg.AtoB, cfg.Seed, 1, 0), mtu, l.done)
	l.ba = newDir(l.clk, l.tunB, l.tunA, newModel(cfg.BtoA, cfg.Seed, 2, 0), mtu, l.done)
	for _, d := range []*dir{l.ab, l.ba} {
		l.wg.Add(2)
		go func() {
			defer l.wg.Done()
			d.read()
		}()
		go func() {
			defer l.wg.Done()
			d.run()
		}()
	}
	return l, nil
}

// tempDev returns the name under which the TUN device of namespace ns is
// made in the caller's namespace, before it moves: derived from ns, so
// that links of different namespaces never clash, and at most 15 bytes.
func tempDev(ns string) string {
	h := fnv.New32a()
	h.Write([]byte(ns))
	return fmt.Sprintf("bpl%08x", h.Sum32())
}

// removeLeftovers deletes what a crashed run with the same names may have
// left: the namespaces (a TUN device goes away with the file of the
// process that made it, so a dead run leaves no device behind, but a
// namespace stays until deleted) and, for good measure, devices of the
// temporary names in the caller's namespace.
func removeLeftovers(ctx context.Context, cfg Config, tmps ...string) {
	for _, ns := range []string{cfg.A, cfg.B} {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			_ = runIP(ctx, "", "netns", "del", ns)
		}
	}
	for _, tmp := range tmps {
		if _, err := net.InterfaceByName(tmp); err == nil {
			_ = runIP(ctx, "", "link", "del", "dev", tmp)
		}
	}
}

// runIP runs the ip command with args, stdin as its input.
func runIP(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("link: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// teardown closes the devices and deletes the namespaces; it returns what
// failed.
func (l *Link) teardown() error {
	var errs []error
	for _, f := range []*os.File{l.tunA, l.tunB} {
		if f != nil {
			if err := f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("link: close tun: %w", err))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.mu.Lock()
	a, b := l.cfg.A, l.cfg.B
	l.mu.Unlock()
	for _, ns := range []string{a, b} {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			continue
		}
		if err := runIP(ctx, "", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops forwarding, closes the devices, deletes both namespaces and
// returns once every goroutine of the link has ended. Later calls return
// the first call's result. Sockets made inside a namespace keep working
// locally but no longer reach the other side.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.teardown() // closing the devices ends the readers
		l.wg.Wait()
	})
	return l.closeErr
}

// Config returns the link's configuration as last set.
func (l *Link) Config() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// SetConfig changes the impairment (AtoB, BtoA, Seed) while the link runs;
// the names, addresses and MTU must stay as they are. Packets already on
// their way keep their release times, and a later packet is never released
// before an earlier one (unless reordered), so a shorter delay takes effect
// once the packets ahead have drained. A changed blackhole schedule starts
// now. Keeping the seed continues the random sequences; a new seed
// restarts them.
func (l *Link) SetConfig(cfg Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cfg
	if cfg.A != old.A || cfg.B != old.B || cfg.devA() != old.devA() || cfg.devB() != old.devB() ||
		cfg.AddrA != old.AddrA || cfg.AddrB != old.AddrB || cfg.mtu() != old.mtu() {
		return errors.New("link: SetConfig can change only AtoB, BtoA and Seed")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	now := l.clk.now()
	reseed := cfg.Seed != old.Seed
	l.ab.set(cfg.AtoB, now, reseed, cfg.Seed, 1)
	l.ba.set(cfg.BtoA, now, reseed, cfg.Seed, 2)
	l.cfg = cfg
	return nil
}

// Stats returns the counts so far.
func (l *Link) Stats() Stats {
	return Stats{AtoB: l.ab.stats(), BtoA: l.ba.stats()}
}

// AddrA returns the address of A's device (AddrA without its prefix).
func (l *Link) AddrA() netip.Addr { return l.addrA }

// AddrB returns the address of B's device (AddrB without its prefix).
func (l *Link) AddrB() netip.Addr { return l.addrB }

// RunInA runs f on a thread switched into namespace A and returns its
// error. Sockets keep the namespace they were made in, so a listener or a
// connection made in f can be used from any goroutine afterwards; but
// goroutines that f starts run in the caller's namespace, and so do the
// sockets they make: code that dials from a goroutine of its own must make
// its socket before starting it, or run whole in a process started by
// CommandInA.
func (l *Link) RunInA(f func() error) error { return RunIn(l.cfg.A, f) }

// RunInB is RunInA for namespace B.
func (l *Link) RunInB(f func() error) error { return RunIn(l.cfg.B, f) }

// CommandInA returns a command that runs name with args inside namespace
// A (by ip netns exec).
func (l *Link) CommandInA(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.cfg.A, name}, args...)...)
}

// CommandInB is CommandInA for namespace B.
func (l *Link) CommandInB(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.cfg.B, name}, args...)...)
}

// RunIn runs f on an OS thread switched into the named network namespace
// (one that ip netns knows) and switches back. If switching back fails the
// thread is left locked, so that it ends with the goroutine rather than
// serve others in the wrong namespace.
func RunIn(ns string, f func() error) (err error) {
	if err := validNetns(ns); err != nil {
		return fmt.Errorf("link: namespace: %w", err)
	}
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("link: own namespace: %w", err)
	}
	defer unix.Close(self)
	path := filepath.Join(netnsDir, ns)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("link: namespace %s: %w", path, err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("link: setns %s: %w", ns, err)
	}
	defer func() {
		if e := unix.Setns(self, unix.CLONE_NEWNET); e != nil {
			err = errors.Join(err, fmt.Errorf("link: setns back from %s: %w", ns, e))
			return
		}
		runtime.UnlockOSThread()
	}()
	return f()
}
