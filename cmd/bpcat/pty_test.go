package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal of cols columns and returns its master
// and slave ends, or skips the test where there are no pseudo-terminals.
func openPTY(t *testing.T, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/ptmx: %v)", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open the pty's slave: %v", err)
	}
	require.NoError(t, unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}))
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ptyProc is a bpcat whose stderr (and, as asked, stdin and stdout) is a
// pseudo-terminal, as when a person runs it.
type ptyProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	master *os.File
	mu     sync.Mutex
	out    bytes.Buffer // everything written to the terminal
	read   chan struct{}
	waited chan struct{}
	err    error
}

// ptyIO says which of stdin and stdout are on the terminal too; those
// that are not come from stdin and go to stdout (nil: /dev/null).
type ptyIO struct {
	stdinTTY, stdoutTTY bool
	stdin               io.Reader
	stdout              io.Writer
}

// startPTY starts bpcat with args on a terminal of cols columns.
func startPTY(t *testing.T, cols uint16, io ptyIO, args ...string) *ptyProc {
	t.Helper()
	return startPTYCmd(t, cols, io, nil, bpcatBin, args...)
}

// startPTYCmd starts the program name with args on a terminal of cols
// columns, with env added to the environment.
func startPTYCmd(t *testing.T, cols uint16, io ptyIO, env []string, name string, args ...string) *ptyProc {
	t.Helper()
	master, slave := openPTY(t, cols)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = slave
	cmd.Stdin, cmd.Stdout = io.stdin, io.stdout
	if io.stdinTTY {
		cmd.Stdin = slave
	}
	if io.stdoutTTY {
		cmd.Stdout = slave
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if !io.stdinTTY { // the controlling terminal is set from a descriptor of the child's
		cmd.SysProcAttr.Ctty = 2
	}
	p := &ptyProc{t: t, cmd: cmd, master: master, read: make(chan struct{}), waited: make(chan struct{})}
	require.NoError(t, cmd.Start())
	slave.Close() // the child has it: reads of master end (EIO) when it exits
	go func() {
		defer close(p.read)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		cancel()
		close(p.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waited:
		default:
			cmd.Process.Kill()
			<-p.waited
		}
		if t.Failed() {
			t.Logf("%v on a terminal wrote:\n%q", args, p.output())
		}
	})
	return p
}

// output is what the process wrote to its terminal so far.
func (p *ptyProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitOutput waits until the terminal shows something matching re.
func (p *ptyProc) waitOutput(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline) && i < 2000; i++ {
		if m := rx.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case <-p.waited:
			if m := rx.FindStringSubmatch(p.output()); m != nil {
				return m
			}
			p.t.Fatalf("exited (%v) before showing %q", p.err, re)
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.t.Fatalf("the terminal showed nothing matching %q", re)
	return nil
}

// wait waits for the process to exit, and for its terminal output, and
// returns its exit code.
func (p *ptyProc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.waited:
	case <-time.After(d):
		p.t.Fatalf("did not exit within %v; terminal:\n%q", d, p.output())
	}
	select {
	case <-p.read:
	case <-time.After(5 * time.Second):
	}
	return p.cmd.ProcessState.ExitCode()
}
