package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/interop/link"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "10Mbit", want: 1_250_000},
		{in: "10mbit/s", want: 1_250_000},
		{in: "1.5Gbit", want: 187_500_000},
		{in: "800kbit", want: 100_000},
		{in: "8bit", want: 1},
		{in: "0", want: 0},
		{in: "1MiB", want: 1 << 20},
		{in: "1.25MB/s", want: 1_250_000},
		{in: "10Mbps", bad: true},
		{in: "10MBps", bad: true},
		{in: "xMbit", bad: true},
		{in: "-1Mbit", bad: true},
		{in: "10furlongs", bad: true},
	} {
		got, err := parseRate(tc.in)
		switch {
		case tc.bad && err == nil:
			t.Errorf("%q: %d, want an error", tc.in, got)
		case !tc.bad && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case !tc.bad && got != tc.want:
			t.Errorf("%q: %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	cfg, every, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AtoB != link.DefaultDirection() || cfg.BtoA != link.DefaultDirection() || every != 0 {
		t.Errorf("defaults: %v / %v", cfg.AtoB, cfg.BtoA)
	}
	if cfg.A != "bpA" || cfg.B != "bpB" || cfg.AddrA != "10.99.0.1/24" || cfg.AddrB != "10.99.0.2/24" || cfg.MTU != 1500 || cfg.Seed != 1 {
		t.Errorf("defaults: %+v", cfg)
	}

	cfg, every, err = parse(strings.Fields("-delay 5ms -rate 0 -loss 0.01 -ab-loss 0.2 -ba-delay 40ms "+
		"-burst-p 0.01 -burst-r 0.3 -blackhole 5s/2s -ba-blackhole 1s/3s/once -corrupt 0.001 "+
		"-queue 0 -queue-bytes 64KiB -ab-rate 10Mbit -ab-queue 30 -seed 9 -stats 1s -a x -b y"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wantAB := link.Direction{
		Delay: 5 * time.Millisecond, Loss: 0.2, Burst: link.GilbertElliott{P: 0.01, R: 0.3},
		Rate: 10 * link.Mbit, QueuePackets: 30, QueueBytes: 64 << 10,
		Blackhole: link.Blackhole{Pass: 5 * time.Second, Drop: 2 * time.Second}, Corrupt: 0.001,
	}
	wantBA := link.Direction{
		Delay: 40 * time.Millisecond, Loss: 0.01, Burst: link.GilbertElliott{P: 0.01, R: 0.3},
		QueueBytes: 64 << 10, Blackhole: link.Blackhole{Pass: time.Second, Drop: 3 * time.Second, Once: true},
		Corrupt: 0.001,
	}
	if cfg.AtoB != wantAB {
		t.Errorf("a->b: %v\nwant  %v", cfg.AtoB, wantAB)
	}
	if cfg.BtoA != wantBA {
		t.Errorf("b->a: %v\nwant  %v", cfg.BtoA, wantBA)
	}
	if cfg.Seed != 9 || every != time.Second || cfg.A != "x" || cfg.B != "y" {
		t.Errorf("got %+v, stats %v", cfg, every)
	}

	for _, args := range []string{
		"-loss 2", "-delay -1s", "-blackhole 5s", "-blackhole 5s/x", "-blackhole 1s/2s/twice",
		"-rate 10Mbps", "-a bpA -b bpA", "-addr-a nonsense", "-stats -1s", "extra", "-nosuchflag",
	} {
		if _, _, err := parse(strings.Fields(args), io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	var help bytes.Buffer
	if _, _, err := parse([]string{"-h"}, &help); err != errHelp || !strings.Contains(help.String(), "-ab-delay") {
		t.Errorf("-h: %v, %q", err, help.String())
	}
	if code := run(context.Background(), []string{"-loss", "3"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun sets the link up, looks at it from a command run in A, and
// stops it as a signal would: the namespaces go away.
func TestRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("link: needs root and /dev/net/tun: not running as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("link: needs root and /dev/net/tun: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("link: needs root and /dev/net/tun: no ip command: %v", err)
	}
	a, b := fmt.Sprintf("bplcmd%d-a", os.Getpid()), fmt.Sprintf("bplcmd%d-b", os.Getpid())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-a", a, "-b", b, "-addr-a", "10.97.0.1/24", "-addr-b", "10.97.0.2/24", "-delay", "5ms"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "forwarding until interrupted") {
		select {
		case c := <-code:
			if strings.Contains(stderr.String(), "netns add") {
				t.Skipf("link: needs root and /dev/net/tun: %s", stderr.String())
			}
			t.Fatalf("run ended with %d: %s", c, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no setup after 10s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "ip netns exec "+b) {
		t.Errorf("no usage hint: %s", stderr.String())
	}
	// A command run in A routes B's address over the link's device.
	out, err := exec.Command("ip", "netns", "exec", a, "ip", "route", "get", "10.97.0.2").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev link0") {
		t.Errorf("route in A: %v: %s", err, out)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit %d: %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end after cancel")
	}
	if !strings.Contains(stdout.String(), "a->b:") {
		t.Errorf("no statistics at exit: %q", stdout.String())
	}
	for _, ns := range []string{a, b} {
		if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); err == nil {
			t.Errorf("namespace %s left after exit", ns)
		}
	}
}
