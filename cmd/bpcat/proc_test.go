package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bpcatBin is the binary built once for the end-to-end tests.
var bpcatBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "bpcat-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bpcatBin = filepath.Join(dir, "bpcat")
	out, err := exec.Command("go", "build", "-o", bpcatBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building bpcat: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// proc is a bpcat process under test.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// stdout is nil when the caller gave the process its own stdout.
	stdout io.ReadCloser

	mu     sync.Mutex
	stderr strings.Builder
	lines  chan string // stderr lines, for waitLine; bounded, extra lines dropped
	waited chan struct{}
	err    error
}

// start starts bpcat with args. stdin and stdout are pipes unless given.
func start(t *testing.T, name string, stdin io.Reader, stdout io.Writer, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bpcatBin, args...)
	p := &proc{t: t, name: name, cmd: cmd, lines: make(chan string, 64), waited: make(chan struct{})}
	var err error
	if stdin != nil {
		cmd.Stdin = stdin
	} else {
		p.stdin, err = cmd.StdinPipe()
		require.NoError(t, err)
	}
	var childOut *os.File
	if stdout != nil {
		cmd.Stdout = stdout
	} else { // not StdoutPipe: Wait would close it under a reader
		r, w, err := os.Pipe()
		require.NoError(t, err)
		p.stdout, cmd.Stdout, childOut = r, w, w
		t.Cleanup(func() { r.Close() })
	}
	errPipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	if childOut != nil {
		childOut.Close()
	}
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
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
			t.Logf("%s stderr:\n%s", name, p.stderrText())
		}
	})
	return p
}

func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLine waits for a stderr line matching re and returns its submatches.
func (p *proc) waitLine(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.waited:
			p.t.Fatalf("%s exited (%v) before printing %q; stderr:\n%s", p.name, p.err, re, p.stderrText())
		case <-timeout:
			p.t.Fatalf("%s printed no line matching %q; stderr:\n%s", p.name, re, p.stderrText())
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.waited:
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %v; stderr:\n%s", p.name, d, p.stderrText())
	}
	return p.cmd.ProcessState.ExitCode()
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.waited:
		return true
	default:
		return false
	}
}

// rss returns the process's resident set size in bytes.
func (p *proc) rss() uint64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	require.NoError(p.t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			require.NoError(p.t, err)
			return kb << 10
		}
	}
	p.t.Fatal("no VmRSS")
	return 0
}

// startListener starts `bpcat listen` on a free port and returns it with
// its address and fingerprint.
func startListener(t *testing.T, name string, stdin io.Reader, stdout io.Writer, args ...string) (p *proc, addr, fp string) {
	t.Helper()
	p = start(t, name, stdin, stdout, append(append([]string{"listen"}, args...), "127.0.0.1:0")...)
	fp = p.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr = p.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	return p, addr, fp
}
