package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and a polling reader.
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

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-target", "127.0.0.1:1"}, "-listen is required"},
		{[]string{"-listen", "127.0.0.1:0"}, "-target is required"},
		{[]string{"-udp", "-tcp", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "exclude"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-rate", "fast"}, `invalid value "fast" for flag -rate`},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-queue", "-1MB"}, "negative"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-loss", "2"}, "loss 2 is not in [0, 1]"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-down-delay", "-1s"}, "down: delay -1s is negative"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-delay", "soon"}, "-delay"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "extra"}, `unexpected argument "extra"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-listen", "127.0.0.1:0", "-target", "nowhere"}, "target address"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		msg := stderr.String()
		if code != 2 || !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, "impair: ") || strings.Count(msg, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and one line with %q", tc.args, code, msg, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	if !strings.Contains(stderr.String(), "-up-delay") {
		t.Errorf("-h: %s", stderr.String())
	}
}

var addrLine = regexp.MustCompile(`impair: (udp|tcp) (127\.0\.0\.1:\d+) ->`)

// TestRunUDP runs the command in-process: one echo through it, then the
// statistics at exit.
func TestRunUDP(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:n], addr)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-target", echo.LocalAddr().String(),
			"-delay", "5ms", "-up-delay", "10ms", "-rate", "10MB/s", "-seed", "3"}, &stdout, &stderr)
	}()
	var addr string
	deadline := time.Now().Add(5 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		if m := addrLine.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[2]
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		t.Fatalf("no address announced: %q", stderr.String())
	}
	if !strings.Contains(stderr.String(), "up:   delay=10ms rate=10000000B/s") || !strings.Contains(stderr.String(), "down: delay=5ms") {
		t.Errorf("announcement: %q", stderr.String())
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}
	if rtt := time.Since(start); rtt < 15*time.Millisecond {
		t.Errorf("round trip %v through 10ms + 5ms of delay", rtt)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d; stderr %q", code, stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, "up:   packets=1 bytes=4") || !strings.Contains(out, "down: packets=1 bytes=4") {
		t.Errorf("stats at exit: %q", out)
	}
}

// TestProcessTCP builds the command and runs it as a process: a TCP echo
// through it, then SIGINT prints the statistics and exits 0.
func TestProcessTCP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := filepath.Join(t.TempDir(), "impair")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-tcp", "-listen", "127.0.0.1:0", "-target", ln.Addr().String(), "-delay", "2ms")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var addr string
	for sc.Scan() {
		if m := addrLine.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[2]
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	if addr == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("no address announced")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q: %v", buf, err)
	}
	c.Close()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) || err != nil {
		t.Fatalf("exit: %v (%v)", err, exit)
	}
	if !strings.Contains(stdout.String(), "up:   packets=1 bytes=5") {
		t.Errorf("stats at SIGINT: %q", stdout.String())
	}
}
