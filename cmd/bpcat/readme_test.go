package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeExample is a pair of commands from README.md: a server (listen,
// or bench -l) and the client that talks to it (connect, or bench), as
// printed, and the bpcat commands that follow them in the same block
// (plot, which reads what they wrote).
type readmeExample struct {
	listen, connect string
	after           []string
}

// readmeExamples returns the listen/connect pairs of README.md's sh blocks.
func readmeExamples(t *testing.T) []readmeExample {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	var out []readmeExample
	var listen string
	inSh := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "```sh":
			inSh = true
		case strings.HasPrefix(l, "```"):
			inSh = false
		case inSh && strings.HasPrefix(l, "$ ") && (strings.Contains(l, "bpcat listen") || strings.Contains(l, "bpcat bench -l")):
			listen = strings.TrimPrefix(l, "$ ")
		case inSh && strings.HasPrefix(l, "$ ") && (strings.Contains(l, "bpcat connect") || strings.Contains(l, "bpcat bench ")) && listen != "":
			out = append(out, readmeExample{listen: listen, connect: strings.TrimPrefix(l, "$ ")})
			listen = ""
		case inSh && strings.HasPrefix(l, "$ bpcat ") && len(out) > 0 && listen == "":
			out[len(out)-1].after = append(out[len(out)-1].after, strings.TrimPrefix(l, "$ "))
		}
	}
	require.NotEmpty(t, out, "no examples found in README.md")
	return out
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

// TestReadmeExamples runs every listen/connect pair of README.md as
// printed (with a free port for 4242 and the listener's fingerprint for
// "sha256:…"), by sh, with bpcat on the PATH: once as in a script (the
// listener's stdin /dev/null), once as in a terminal (the listener's stdin
// and stderr on a pty). Each must end by itself: the connect with 0, or 1
// where the example is a receiver that stops reading; the listener with
// 0, or, for -k, when interrupted.
func TestReadmeExamples(t *testing.T) {
	path := "PATH=" + filepath.Dir(bpcatBin) + string(os.PathListSeparator) + os.Getenv("PATH")
	fpRe := regexp.MustCompile(`fingerprint (sha256:[0-9a-f]{64})`)
	for _, ex := range readmeExamples(t) {
		for _, terminal := range []bool{false, true} {
			name := ex.listen
			if terminal {
				name += " (terminal)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel() // each on a port of its own; the slow one takes 4 s
				dir := t.TempDir()
				for _, m := range regexp.MustCompile(`< (\S+)`).FindAllStringSubmatch(ex.listen+" "+ex.connect, -1) {
					if !strings.HasPrefix(m[1], "/dev/") {
						require.NoError(t, os.WriteFile(filepath.Join(dir, m[1]), bytes.Repeat([]byte("bp/1 "), 200_000), 0o600))
					}
				}
				port := freeUDPPort(t)
				listen := strings.ReplaceAll(ex.listen, "4242", port)
				keepOpen := strings.Contains(listen, " -k ") || strings.Contains(listen, "bench -l") // end only when interrupted
				// exec, so that a signal reaches bpcat; a pipeline keeps sh.
				if !strings.Contains(listen, "|") {
					listen = "exec " + listen
				}
				var lout func() string
				var lwait func(time.Duration) int
				var lsignal func()
				if terminal {
					p := startPTYCmd(t, 80, ptyIO{stdinTTY: true}, []string{path}, "sh", "-c", "cd '"+dir+"' && "+listen)
					lout, lwait = p.output, p.wait
					lsignal = func() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT) }
				} else {
					cmd := exec.Command("sh", "-c", listen)
					cmd.Dir, cmd.Env = dir, append(os.Environ(), path)
					cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
					var stderr syncBuffer
					cmd.Stderr = &stderr
					require.NoError(t, cmd.Start())
					done := make(chan struct{})
					go func() { cmd.Wait(); close(done) }()
					t.Cleanup(func() {
						syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
						<-done
						if t.Failed() {
							t.Logf("listener stderr:\n%s", stderr.String())
						}
					})
					lout = stderr.String
					lwait = func(d time.Duration) int {
						select {
						case <-done:
						case <-time.After(d):
							t.Fatalf("%q did not exit within %v", listen, d)
						}
						return cmd.ProcessState.ExitCode()
					}
					lsignal = func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
				}
				var fp string
				for i := 0; i < 1000 && fp == ""; i++ {
					if m := fpRe.FindStringSubmatch(lout()); m != nil && strings.Contains(lout(), "listening on") {
						fp = m[1]
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				require.NotEmpty(t, fp, "the listener printed no fingerprint: %q", lout())
				connect := strings.ReplaceAll(strings.ReplaceAll(ex.connect, "4242", port), "sha256:…", fp)
				cmd := exec.Command("sh", "-c", connect)
				cmd.Dir, cmd.Env = dir, append(os.Environ(), path)
				var cerr bytes.Buffer
				cmd.Stderr, cmd.Stdout = &cerr, io.Discard
				err := runWithin(cmd, 60*time.Second)
				want := 0
				if strings.Contains(listen, "| head") {
					want = exitError
				}
				assert.Equal(t, want, exitCodeOf(err), "%q: %v\n%s", connect, err, cerr.String())
				if keepOpen {
					lsignal()
				}
				code := lwait(20 * time.Second)
				if !keepOpen {
					assert.Equal(t, 0, code, "%q", listen)
				}
				for _, line := range ex.after {
					cmd := exec.Command("sh", "-c", line)
					cmd.Dir, cmd.Env = dir, append(os.Environ(), path)
					out, err := cmd.CombinedOutput()
					require.NoError(t, err, "%q: %s", line, out)
					if m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(line); m != nil {
						st, err := os.Stat(filepath.Join(dir, m[1]))
						require.NoError(t, err, "%q wrote no %s", line, m[1])
						require.Positive(t, st.Size())
					}
				}
			})
		}
	}
}

// runWithin runs cmd, killing it after d.
func runWithin(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	t := time.AfterFunc(d, func() { cmd.Process.Kill() })
	defer t.Stop()
	return cmd.Wait()
}

// exitCodeOf returns the exit code an exec error stands for.
func exitCodeOf(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
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
