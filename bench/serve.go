package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bpmux/bp/transport"
)

// The server side of every measurement runs in a child process: the bench
// binary itself, re-executed with the hidden -serve flag. It prints
// "ready <addr> <fingerprint>" on stdout, then answers one-line commands
// from stdin (the control pipe):
//
//	mem          -> "mem <heap_inuse+stack_inuse after GC> <idle streams held>
//	                <heap_inuse> <stack_inuse> <goroutines>"
//	count        -> "count <idle streams held> <bad streams>"
//	peak-start   -> "ok"; every 25 ms samples HeapInuse+StackInuse, before
//	                and after a forced GC
//	peak-stop [T] -> "peak <highest after GC (live)> <highest before GC (raw)>"
//	                of the samples taken up to T (Unix nanoseconds), so that
//	                a case's peak ends at its End, before the server's
//	                handlers build their replies
//	quit or EOF  -> exit

// cpuNow returns the user and system CPU time this process has used.
func cpuNow() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func memNow(gc bool) int64 {
	if gc {
		runtime.GC()
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

func serveMain(implName, host string, many bool, heapProfile string) error {
	im, ok := implByName(implName)
	if !ok {
		return fmt.Errorf("unknown impl %q", implName)
	}
	cert, err := transport.SelfSigned(host)
	if err != nil {
		return err
	}
	st := newServerState()
	srv, err := im.listen(cert, host, opts{manyStreams: many}, st.handle)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", im.name, err)
	}
	defer srv.Close()
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	reply("ready %s %s", srv.Addr(), transport.Fingerprint(cert.Certificate[0]))

	peaks := memSamples{s: make([]memSample, 0, maxMemSamples)} // before any baseline
	var peakStop chan struct{}
	var peakDone sync.WaitGroup
	nMem := 0
	var peakProfiled int64
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		switch cmd, args := fields[0], fields[1:]; cmd {
		case "mem":
			m := memNow(true)
			if heapProfile != "" { // the live heap at this moment, for pprof
				nMem++
				writeProfile("heap", fmt.Sprintf("%s.mem%d", heapProfile, nMem))
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			reply("mem %d %d %d %d %d", m, st.nIdle.Load(), ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
		case "count":
			reply("count %d %d", st.nIdle.Load(), st.nBad.Load())
		case "peak-start":
			if peakStop == nil {
				first := memNow(true)
				peaks.start(first)
				peakStop = make(chan struct{})
				peakDone.Add(1)
				go func(stop chan struct{}) {
					defer peakDone.Done()
					t := time.NewTicker(25 * time.Millisecond)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							at := time.Now().UnixNano()
							raw := memNow(false)
							live := memNow(true)
							// With -memprofile, the live heap at each new
							// peak 5 % above the last one written.
							if heapProfile != "" && live > peakProfiled+peakProfiled/20 && live > peaks.highest() {
								peakProfiled = live
								writeProfile("heap", heapProfile+".peak")
							}
							peaks.add(memSample{at, live, raw})
						}
					}
				}(peakStop)
			}
			reply("ok")
		case "peak-stop":
			if peakStop != nil {
				close(peakStop)
				peakDone.Wait()
				peakStop = nil
			}
			until := int64(math.MaxInt64)
			if len(args) > 0 {
				if v, err := strconv.ParseInt(args[0], 10, 64); err == nil {
					until = v
				}
			}
			live, raw := peaks.until(until)
			reply("peak %d %d", live, raw)
		case "quit":
			return nil
		default:
			reply("error unknown command %q", cmd)
		}
	}
	return nil
}

// child is the parent's handle on a server process.
type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string
	pin  string
}

// startChild starts a server process for implName listening on host. With
// a non-nil in, the process is started inside in (a network namespace).
func startChild(implName, host string, many bool, extra []string, in func(func() error) error) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-serve", "-impl", implName, "-host", host}, extra...)
	if many {
		args = append(args, "-many")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if in == nil {
		in = func(f func() error) error { return f() }
	}
	if err := in(cmd.Start); err != nil {
		return nil, fmt.Errorf("start server process: %w", err)
	}
	c := &child{cmd: cmd, in: stdin, out: bufio.NewReader(outPipe)}
	f, err := c.call("", 10*time.Second)
	if err != nil || len(f) != 3 || f[0] != "ready" {
		c.stop()
		return nil, fmt.Errorf("server process for %s did not start: %v %q", implName, err, f)
	}
	c.addr, c.pin = f[1], f[2]
	return c, nil
}

// call sends a command (none if empty) and reads one reply line, as fields.
func (c *child) call(cmd string, timeout time.Duration) ([]string, error) {
	if cmd != "" {
		if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
			return nil, fmt.Errorf("server process: %w", err)
		}
	}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := c.out.ReadString('\n')
		ch <- res{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("server process: %q: %w", cmd, r.err)
		}
		return strings.Fields(r.line), nil
	case <-time.After(timeout):
		c.stop() // the reader goroutine ends with the pipe
		return nil, fmt.Errorf("server process: no answer to %q within %v", cmd, timeout)
	}
}

func (c *child) callInt(cmd, want string, idx int, timeout time.Duration) (int64, error) {
	f, err := c.call(cmd, timeout)
	if err != nil {
		return 0, err
	}
	if len(f) <= idx || f[0] != want {
		return 0, fmt.Errorf("server process: unexpected answer %q to %q", f, cmd)
	}
	return strconv.ParseInt(f[idx], 10, 64)
}

// stop ends the child: quit, then kill if it lingers.
func (c *child) stop() {
	io.WriteString(c.in, "quit\n")
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// memSample is one reading of the peak sampler.
type memSample struct{ at, live, raw int64 }

// memSamples are the peak sampler's readings since peak-start: at 25 ms
// apart, room for 100 s of them (the longest case runs a few seconds);
// readings past that are not kept.
type memSamples struct {
	mu sync.Mutex
	s  []memSample
}

const maxMemSamples = 4000

func (m *memSamples) start(first int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = append(m.s[:0], memSample{time.Now().UnixNano(), first, first})
}

func (m *memSamples) add(x memSample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.s) < cap(m.s) {
		m.s = append(m.s, x)
	}
}

// highest returns the highest live reading so far.
func (m *memSamples) highest() int64 {
	live, _ := m.until(math.MaxInt64)
	return live
}

// until returns the highest live and raw readings taken up to t.
func (m *memSamples) until(t int64) (live, raw int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.s {
		if x.at <= t {
			live, raw = max(live, x.live), max(raw, x.raw)
		}
	}
	return live, raw
}
