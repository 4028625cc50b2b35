package main

import (
	"bufio"
	"context"
	"io"
	"regexp"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// feed writes to w until a write fails (the process reading it exited),
// for at most limit and at most 64 GiB, then closes it.
func feed(w io.WriteCloser, limit time.Duration) {
	defer w.Close()
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(limit)
	for i := 0; i < 1<<20 && time.Now().Before(deadline); i++ {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
}

// countAsync reads r to its end (or error) in the background, counting
// the bytes.
func countAsync(r io.Reader) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		buf := make([]byte, 256<<10)
		for {
			m, err := r.Read(buf)
			n.Add(int64(m))
			if err != nil {
				return
			}
		}
	}()
	return &n
}

// waitAtLeast waits until n reaches min, for at most 20 s.
func waitAtLeast(t *testing.T, n *atomic.Int64, min int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for n.Load() < min {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes arrived, want %d", n.Load(), min)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signal sends sig to p.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// transfer starts listen and connect with connect's stdin fed without end
// and both stdouts drained, and returns once data flows.
func transfer(t *testing.T, connectArgs ...string) (l, c *proc) {
	t.Helper()
	l, addr, fp := startListener(t, "listen", nil, nil)
	l.stdin.Close()
	received := countAsync(l.stdout)
	c = start(t, "connect", nil, nil, append(append([]string{"connect", "--pin", fp}, connectArgs...), addr)...)
	countAsync(c.stdout)
	go feed(c.stdin, time.Minute)
	waitAtLeast(t, received, 4<<20)
	return l, c
}

// peerLost matches what a bpcat says when its peer abandoned the transfer:
// the stream reset (or stopped) with CANCEL, or, if the peer could not
// finish its session in time, the session it closed with the reason.
const peerLost = `the (receiver|peer) (stopped reading|reset the stream) \(CANCEL\): data (sent )?was lost|` +
	`the peer closed the session \(NO_ERROR\): bpcat: interrupted \(SIGTERM\)`

// TestReceiverInterrupted: SIGTERM to the receiving `bpcat listen` in the
// middle of a transfer that never ends. The receiver resets its stream and
// ends its session; the sender says that the peer abandoned the transfer
// and exits non-zero, and both exit within a few seconds.
func TestReceiverInterrupted(t *testing.T) {
	l, c := transfer(t)
	start := time.Now()
	l.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, l.wait(10*time.Second), "listen exit code")
	assert.Regexp(t, `bpcat listen: interrupted \(SIGTERM\)\n$`, l.stderrText())
	assert.Equal(t, 1, c.wait(10*time.Second), "connect exit code")
	assert.Regexp(t, `bpcat connect: send: (`+peerLost+`)\n$`, c.stderrText())
	t.Logf("both exited %v after the SIGTERM; connect: %q", time.Since(start).Round(time.Millisecond), lastLine(c.stderrText()))
}

// TestSenderInterrupted: the same, the other way: SIGTERM to the sending
// `bpcat connect`; the receiver reports the reset and exits non-zero.
func TestSenderInterrupted(t *testing.T) {
	l, c := transfer(t)
	start := time.Now()
	c.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, c.wait(10*time.Second), "connect exit code")
	assert.Regexp(t, `bpcat connect: interrupted \(SIGTERM\)\n$`, c.stderrText())
	assert.Equal(t, 1, l.wait(10*time.Second), "listen exit code")
	assert.Regexp(t, `bpcat listen: receive: (`+peerLost+`)\n$`, l.stderrText())
	t.Logf("both exited %v after the SIGTERM; listen: %q", time.Since(start).Round(time.Millisecond), lastLine(l.stderrText()))
}

// TestReceiverKilled: SIGKILL to the receiver, which says nothing more.
// The sender, with --dead-peer 3s, gives it up within about that and says
// so plainly.
func TestReceiverKilled(t *testing.T) {
	l, c := transfer(t, "--dead-peer", "3s")
	start := time.Now()
	l.signal(syscall.SIGKILL)
	l.wait(10 * time.Second)
	assert.Equal(t, 1, c.wait(3*time.Second+5*time.Second), "connect exit code")
	assert.Regexp(t, `bpcat connect: [^\n]*the peer stopped answering for 3s[^\n]*\n$`, c.stderrText())
	assert.NotContains(t, c.stderrText(), "no recent network activity")
	t.Logf("connect exited %v after the SIGKILL: %q", time.Since(start).Round(time.Millisecond), lastLine(c.stderrText()))
}

// TestLifecycleUsage: --timeout bounds listen's wait for a peer;
// --dead-peer is checked; bench -l refuses --timeout.
func TestLifecycleUsage(t *testing.T) {
	l := start(t, "listen-timeout", nil, io.Discard, "listen", "--timeout", "300ms", "127.0.0.1:0")
	l.stdin.Close()
	assert.Equal(t, 1, l.wait(10*time.Second))
	assert.Contains(t, l.stderrText(), "bpcat listen: accept: no peer connected and opened a stream within 300ms (--timeout)")

	for _, args := range [][]string{
		{"connect", "--dead-peer", "10ms", "127.0.0.1:1"},
		{"bench", "--timeout", "1s", "-l", "127.0.0.1:0"},
	} {
		p := start(t, args[0], nil, io.Discard, args...)
		p.stdin.Close()
		assert.Equal(t, 2, p.wait(10*time.Second), "%q", args)
		assert.Regexp(t, `^bpcat `+args[0]+`: [^\n]*\(see 'bpcat `+args[0]+` -h'\)\n$`, p.stderrText())
	}
}

// TestRelayInterrupted: SIGTERM to a relay in the middle of a transfer
// through it. The relay resets the stream on both hops and ends both
// sessions: it exits at once (an interrupt is a relay's normal end, and exits 143), and
// both ends report the abandoned transfer and exit non-zero.
func TestRelayInterrupted(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, nil)
	l.stdin.Close()
	received := countAsync(l.stdout)
	r := start(t, "relay", nil, nil, "relay", "--pin", fp, "127.0.0.1:0", addr)
	r.stdin.Close()
	fp = r.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr = r.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	c := start(t, "connect", nil, nil, "connect", "--pin", fp, addr)
	countAsync(c.stdout)
	go feed(c.stdin, time.Minute)
	waitAtLeast(t, received, 4<<20)

	start := time.Now()
	r.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, r.wait(10*time.Second), "relay exit code")
	assert.Contains(t, r.stderrText(), "aborted")
	assert.Equal(t, 1, c.wait(10*time.Second), "connect exit code")
	assert.Regexp(t, `bpcat connect: send: (`+peerLost+`)\n$`, c.stderrText())
	assert.Equal(t, 1, l.wait(10*time.Second), "listen exit code")
	assert.Regexp(t, `bpcat listen: receive: (`+peerLost+`)\n$`, l.stderrText())
	t.Logf("all exited %v after the SIGTERM; connect: %q; listen: %q", time.Since(start).Round(time.Millisecond),
		lastLine(c.stderrText()), lastLine(l.stderrText()))
}

// TestBenchInterrupted: SIGTERM to a bench server in the middle of a
// measurement: it resets the streams and exits at once instead of waiting
// for the measurement to end, and the measuring side exits non-zero.
// Then a measurement interrupted on the measuring side: it exits non-zero,
// and the server goes on serving.
func TestBenchInterrupted(t *testing.T) {
	serve := func() (srv *proc, fp, addr string) {
		srv = start(t, "bench-server", nil, io.Discard, "bench", "-l", "127.0.0.1:0")
		srv.stdin.Close()
		fp = srv.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
		addr = srv.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
		return srv, fp, addr
	}
	// firstInterval waits for the first per-second report of a
	// measurement, then drains the rest.
	firstInterval := func(c *proc) {
		t.Helper()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(c.stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		timeout := time.After(20 * time.Second)
		for i := 0; i < 10; i++ {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("bench ended its output; stderr:\n%s", c.stderrText())
				}
				if intervalLine.MatchString(l) { // "[  3]   0.00-1.00 ...", not "[  3] local ... connected"
					go func() {
						for range lines { // drain
						}
					}()
					return
				}
			case <-timeout:
				t.Fatalf("no interval report within 20s; stderr:\n%s", c.stderrText())
			}
		}
		t.Fatalf("no interval report; stderr:\n%s", c.stderrText())
	}

	srv, fp, addr := serve()
	c := start(t, "bench", nil, nil, "bench", "-t", "60s", "-P", "2", "--pin", fp, addr)
	c.stdin.Close()
	firstInterval(c)
	srv.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, srv.wait(10*time.Second), "server exit code")
	assert.Equal(t, 1, c.wait(10*time.Second), "bench exit code")
	assert.Regexp(t, `bpcat bench: stream \d+: (`+peerLost+`)\n$`, c.stderrText())

	srv, fp, addr = serve()
	c = start(t, "bench", nil, nil, "bench", "-t", "60s", "-P", "2", "--pin", fp, addr)
	c.stdin.Close()
	firstInterval(c)
	c.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, c.wait(10*time.Second), "bench exit code")
	assert.Regexp(t, `bpcat bench: interrupted \(SIGTERM\)\n$`, c.stderrText())
	srv.waitLine(`^session: 2 streams`)
	assert.False(t, srv.exited(), "the server stopped serving")
}

// lastLine returns the last line of s, without its newline.
func lastLine(s string) string {
	s = s[:len(s)-min(len(s), 1)]
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

// TestEndSessionFallback: a stream that the peer's application never
// finishes keeps a graceful end from completing (a reset stream does not:
// it ends without the application); after closeGrace, endSession closes
// the session with NO_ERROR and its reason, and the peer's describe says
// so with the reason. In-process, since a bpcat has only the one stream,
// which it always finishes or resets.
func TestEndSessionFallback(t *testing.T) {
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), nil)
	require.NoError(t, err)
	defer ln.Close()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, nil)
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept(ctx)
	require.NoError(t, err)
	defer server.Close()

	var transfer *mux.Stream
	for i := range 2 { // the transfer, then a stream the server's application leaves open
		cs, err := client.Open(ctx)
		require.NoError(t, err)
		_, err = cs.Write([]byte("hello"))
		require.NoError(t, err)
		ss, err := server.Accept(ctx)
		require.NoError(t, err)
		_, err = io.ReadFull(ss, make([]byte, 5))
		require.NoError(t, err)
		if i == 0 {
			transfer = cs
		}
	}

	start := time.Now()
	transfer.Reset(framing.Cancel)
	assert.False(t, endSession(client, "bpcat: interrupted (SIGTERM)"), "ended gracefully")
	t.Logf("endSession returned after %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-server.Done():
	case <-ctx.Done():
		t.Fatal("the server's session did not close")
	}
	err = describe("receive", server.Err())
	assert.Equal(t, "receive: the peer closed the session (NO_ERROR): bpcat: interrupted (SIGTERM)", err.Error())
	assert.ErrorIs(t, err, mux.ErrSessionClosed)
}

// intervalLine matches an interval report of bench, as iperf3 prints one.
var intervalLine = regexp.MustCompile(`^\[ *\d+\] +\d+\.\d+-`)
