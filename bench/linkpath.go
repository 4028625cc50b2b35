package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bpmux/bp/interop/link"
)

// The cases on the packet-level link run the client in network namespace
// A and the server process in namespace B, joined by interop/link over two
// TUN devices, so that QUIC and TCP meet the same path: the same delay,
// loss, rate cap and queue, applied to IP packets. The link itself runs in
// a process of its own (this binary with the hidden -link-serve flag), so
// that its forwarding neither shares a Go scheduler with the client nor
// counts in either side's CPU. That process reads one-line commands on its
// stdin:
//
//	set <json linkSetting>  -> "ok"
//	stats                   -> "stats <json link.Stats>"
//	quit or EOF             -> remove the namespaces and exit
//
// Setting up needs root and /dev/net/tun; without them these cases skip,
// saying so.

const (
	linkAddrA = "10.98.0.1/24"
	linkAddrB = "10.98.0.2/24"
	linkHostB = "10.98.0.2"
)

// linkSetting is what "set" applies.
type linkSetting struct {
	AtoB, BtoA link.Direction
	Seed       uint64
}

// linkPath is the parent's handle on the link process.
type linkPath struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	a, b   string // namespace names
	hostB  string // the server's address in B
	tcpCC  string // TCP's congestion control in A and B
	setNow linkSetting
}

// linkUsable says why the link cannot be set up here, or nil.
func linkUsable() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for the packet-level link between two network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("needs /dev/net/tun for the packet-level link: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs the ip command of iproute2 for the packet-level link")
	}
	return nil
}

var staleLinkName = regexp.MustCompile(`^bpb[cs]([0-9]+)$`)

// sweepStaleLinks deletes the namespaces of earlier bench runs whose
// process died without removing them.
func sweepStaleLinks() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		m := staleLinkName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// startLinkPath starts the link process with namespaces named after this
// process.
func startLinkPath(tcpCC string) (*linkPath, error) {
	if err := linkUsable(); err != nil {
		return nil, err
	}
	sweepStaleLinks()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pid := os.Getpid()
	l := &linkPath{a: fmt.Sprintf("bpbc%d", pid), b: fmt.Sprintf("bpbs%d", pid), hostB: linkHostB}
	l.cmd = exec.Command(exe, "-link-serve", "-link-a", l.a, "-link-b", l.b, "-tcp-cc", tcpCC)
	l.cmd.Stderr = os.Stderr
	if l.in, err = l.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	outPipe, err := l.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the link process: %w", err)
	}
	l.out = bufio.NewReader(outPipe)
	f, err := l.call("", 40*time.Second)
	if err != nil || len(f) < 2 || f[0] != "ready" {
		l.close()
		return nil, fmt.Errorf("the link process did not start: %v %q", err, f)
	}
	l.tcpCC = f[1]
	return l, nil
}

func (l *linkPath) call(cmd string, timeout time.Duration) ([]string, error) {
	if cmd != "" {
		if _, err := io.WriteString(l.in, cmd+"\n"); err != nil {
			return nil, fmt.Errorf("link process: %w", err)
		}
	}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := l.out.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("link process: %w", r.err)
		}
		return strings.SplitN(strings.TrimSpace(r.line), " ", 2), nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("link process: no answer to %q within %v", cmd, timeout)
	}
}

// set applies s to the link (both directions at once).
func (l *linkPath) set(s linkSetting) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := l.call("set "+string(b), 10*time.Second)
	if err != nil {
		return err
	}
	if f[0] != "ok" {
		return fmt.Errorf("link process: %q", strings.Join(f, " "))
	}
	l.setNow = s
	return nil
}

// stats returns the link's counters since it was set up.
func (l *linkPath) stats() (link.Stats, error) {
	var s link.Stats
	f, err := l.call("stats", 10*time.Second)
	if err != nil {
		return s, err
	}
	if len(f) != 2 || f[0] != "stats" {
		return s, fmt.Errorf("link process: unexpected answer %q", f)
	}
	return s, json.Unmarshal([]byte(f[1]), &s)
}

func (l *linkPath) close() {
	if l.in != nil {
		io.WriteString(l.in, "quit\n")
		l.in.Close()
	}
	done := make(chan struct{})
	go func() { l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		l.cmd.Process.Kill()
		<-done
		exec.Command("ip", "netns", "del", l.a).Run()
		exec.Command("ip", "netns", "del", l.b).Run()
	}
}

// runInA runs f on a thread in the client's namespace (sockets made in f
// stay there).
func (l *linkPath) runInA(f func() error) error { return link.RunIn(l.a, f) }

// runInB is runInA for the server's namespace; a process started in f
// lives in B.
func (l *linkPath) runInB(f func() error) error { return link.RunIn(l.b, f) }

// linkServeMain is the link process. A non-empty tcpCC sets TCP's
// congestion control in both namespaces.
func linkServeMain(a, b, tcpCC string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l, err := link.Setup(ctx, link.Config{A: a, B: b, AddrA: linkAddrA, AddrB: linkAddrB, Seed: 1})
	cancel()
	if err != nil {
		return err
	}
	defer l.Close()
	if tcpCC != "" {
		for _, ns := range []string{a, b} {
			// /proc/sys/net is the namespace of the thread that opens it.
			if err := link.RunIn(ns, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_congestion_control", []byte(tcpCC), 0)
			}); err != nil {
				if errors.Is(err, os.ErrPermission) {
					allowed, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
					err = fmt.Errorf("%w (a namespace may use only %s)", err, strings.TrimSpace(string(allowed)))
				}
				return fmt.Errorf("set TCP congestion control %q in %s: %w", tcpCC, ns, err)
			}
		}
	}
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	var cc []byte
	link.RunIn(a, func() (err error) {
		cc, err = os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
		return err
	})
	reply("ready %s", strings.TrimSpace(string(cc)))
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(in.Text()), " ")
		switch cmd {
		case "set":
			var s linkSetting
			if err := json.Unmarshal([]byte(arg), &s); err != nil {
				reply("error %v", err)
				continue
			}
			cfg := l.Config()
			cfg.AtoB, cfg.BtoA = s.AtoB, s.BtoA
			// Every set starts the random sequences afresh, so that each
			// run with the same seed meets the same decisions: SetConfig
			// restarts them only for a changed seed, so an unchanged one
			// goes through another first.
			if cfg.Seed == s.Seed {
				tmp := cfg
				tmp.Seed ^= 1 << 63
				if err := l.SetConfig(tmp); err != nil {
					reply("error %v", err)
					continue
				}
			}
			cfg.Seed = s.Seed
			if err := l.SetConfig(cfg); err != nil {
				reply("error %v", err)
				continue
			}
			reply("ok")
		case "stats":
			bs, _ := json.Marshal(l.Stats())
			reply("stats %s", bs)
		case "quit":
			return nil
		default:
			reply("error unknown command %q", cmd)
		}
	}
	return nil
}
