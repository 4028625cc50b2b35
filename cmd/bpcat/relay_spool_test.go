package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pacedProduce writes total bytes of prod's blocks to w at rate bytes per
// second (as fast as w takes them, never faster than the rate), then
// closes w.
func pacedProduce(prod *producer, w io.WriteCloser, total, rate int64) error {
	start := time.Now()
	pw := &pacedWriter{w: w, rate: rate, start: start}
	return prod.produce(pw, total)
}

type pacedWriter struct {
	w     io.WriteCloser
	rate  int64
	start time.Time
	sent  int64
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	// Sleep until the rate allows these bytes, in steps of a few ms.
	for due := time.Duration(float64(p.sent) / float64(p.rate) * float64(time.Second)); time.Since(p.start) < due; {
		time.Sleep(min(due-time.Since(p.start), 5*time.Millisecond))
	}
	n, err := p.w.Write(b)
	p.sent += int64(n)
	return n, err
}

func (p *pacedWriter) Close() error { return p.w.Close() }

// startRelay starts a relay to addr (pinned by fp) with args, and returns
// it with its own address and fingerprint.
func startRelay(t *testing.T, name, addr, fp string, args ...string) (r *proc, raddr, rfp string) {
	t.Helper()
	r = start(t, name, nil, nil, append(append([]string{"relay"}, args...), "--pin", fp, "127.0.0.1:0", addr)...)
	r.stdin.Close()
	rfp = r.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	raddr = r.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	return r, raddr, rfp
}

// TestRelaySpoolAbsorbsStall: producer -> connect -> relay --spool ->
// listen -> a stdout pipe the test does not read for a while. The producer
// writes at a steady rate; while the reader is stopped, the relay's spool
// takes what the producer writes (the producer keeps its rate for the
// 2 seconds the test watches), then, once the spool holds --spool-max,
// the producer is held; when reading resumes, everything arrives in
// order, and the relay's memory stayed flat meanwhile.
func TestRelaySpoolAbsorbsStall(t *testing.T) {
	const (
		window   = 256 << 10
		spoolMax = 24 << 20
		rate     = 8 << 20 // bytes per second: 2 seconds are 16MiB, less than spoolMax
		total    = 48 << 20
	)
	outR, outW, err := os.Pipe()
	require.NoError(t, err)
	defer outR.Close()
	l, addr, fp := startListener(t, "listen", nil, outW, "--window", "256KiB", "--max-window", "256KiB")
	outW.Close()
	l.stdin.Close()
	dir := filepath.Join(t.TempDir(), "spool")
	r, raddr, rfp := startRelay(t, "relay", addr, fp, "--window", "256KiB", "--max-window", "256KiB", "--spool", dir, "--spool-max", "24MiB")
	inR, inW, err := os.Pipe()
	require.NoError(t, err)
	c := start(t, "connect", inR, nil, "connect", "--pin", rfp, raddr)
	inR.Close()
	go io.Copy(io.Discard, c.stdout)

	inPipe, outPipe := pipeSize(t, inW), pipeSize(t, outR)
	prod := newProducer(11)
	prodErr := make(chan error, 1)
	begin := time.Now()
	go func() { prodErr <- pacedProduce(prod, inW, total, rate) }()

	// The stall: nobody reads the listener's stdout. Sample what the
	// producer got written over 2 seconds.
	type sample struct {
		at time.Duration
		n  int64
	}
	var samples []sample
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		samples = append(samples, sample{time.Since(begin), prod.written.Load()})
	}
	last := samples[len(samples)-1]
	// What it would have written at the rate over the time it really had
	// (a loaded machine may have given it less: compare with that).
	atRate := int64(last.at.Seconds() * rate)
	var trail strings.Builder
	for i := 4; i < len(samples); i += 5 {
		fmt.Fprintf(&trail, " %.1fs:%.1fMiB", samples[i].at.Seconds(), float64(samples[i].n)/(1<<20))
	}
	t.Logf("during the stall the producer wrote %.1f MiB in %v (%.1f MiB/s; at the rate %.1f MiB); written by then:%s",
		float64(last.n)/(1<<20), last.at.Round(time.Millisecond), float64(last.n)/(1<<20)/last.at.Seconds(), float64(atRate)/(1<<20), trail.String())
	// Without a spool the producer is held after about 1MiB (pipes,
	// windows, copy buffers: TestRelayHoldsProducer). With it, it must
	// have written most of what its rate allowed: it was not blocked for
	// most of the stall.
	assert.Greater(t, last.n, atRate/2, "the producer was blocked for most of the stall")
	assert.Greater(t, last.n, int64(8<<20), "the spool absorbed little of the stall")

	// Go on stalling: the producer is held once the spool is full.
	held := waitStill(&prod.written, time.Second, 30*time.Second)
	// Beyond the spool: connect's stdin pipe and copy buffer, a window per
	// hop, the relay's copy buffers, the listener's copy buffer and pipe.
	bound := int64(spoolMax) + inPipe + 2*window + 4*copyBufSize + outPipe
	t.Logf("producer held after %.2f MiB (spool %d MiB, bound %.2f MiB)", float64(held)/(1<<20), spoolMax>>20, float64(bound)/(1<<20))
	require.Less(t, held, int64(total), "the producer was never held")
	assert.GreaterOrEqual(t, held, int64(spoolMax), "held before the spool was full")
	assert.LessOrEqual(t, held, bound, "the spool took more than --spool-max")
	assert.Contains(t, r.stderrText(), "spool full")
	rssFlat(t, 8<<20, r)
	assert.Equal(t, held, prod.written.Load(), "the producer moved while the spool was full")

	// Resume reading: everything arrives, in order.
	res := consumeAsync(outR)
	select {
	case err := <-prodErr:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the producer was not released")
	}
	got := <-res
	require.NoError(t, got.err)
	assert.Equal(t, int64(total), got.n)
	assert.Equal(t, prod.hex(), got.sum, "sha256 end to end")
	assert.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
	assert.Equal(t, 0, l.wait(30*time.Second), "listen exit code")
	line := r.waitLine(`^stream \d+: .* spool: peak ([^,]+), ([^,]+) in all, full (\d+) times$`)
	t.Logf("relay: %s", line[0])
	assert.NotEqual(t, "0", line[3], "the spool was never full")
	assert.Equal(t, "48.00 MiB", line[2], "bytes through the spool")
	assertSpoolEmpty(t, dir)
	r.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, r.wait(10*time.Second))
	assert.Regexp(t, `spool .*: 0 B held now, peak 2[34]\.\d\d MiB of 24\.00 MiB, 48\.00 MiB spooled in all, full \d+ times`, r.stderrText())
}

// assertSpoolEmpty checks that dir holds nothing but the lock file.
func assertSpoolEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{spoolLockName}, names, "what the spool directory holds")
}

// recorder keeps every byte written through it.
type recorder struct {
	w   io.WriteCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	r.mu.Lock()
	r.buf.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recorder) Close() error { return r.w.Close() }

// collect reads r to its end into memory.
func collect(r io.Reader) <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		ch <- b
	}()
	return ch
}

// TestRelaySpoolReplay: the relay's spool holds data for a slow upstream
// when the transfer is cut: the relay is killed (SIGKILL) or interrupted
// (SIGTERM) and started again on the same directory, or the upstream
// listener dies and one comes back at its address while the relay runs.
// The spool's leftover is delivered on a new stream, to the upstream,
// from the last byte the upstream acknowledged: what the first listener
// got and what the second got together are everything the producer
// wrote, in order, with no gap and at most a small overlap (at least
// once).
func TestRelaySpoolReplay(t *testing.T) {
	for _, how := range []string{"relay-sigkill", "relay-sigterm", "upstream-lost"} {
		t.Run(how, func(t *testing.T) { spoolReplay(t, how) })
	}
}

func spoolReplay(t *testing.T, how string) {
	const total = 12 << 20
	dir := filepath.Join(t.TempDir(), "spool")
	// One certificate for both listeners, so that the relay's pin holds
	// for the second one.
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(t.TempDir(), "cert.pem"), filepath.Join(t.TempDir(), "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600))

	port := freeUDPPort(t)
	l1 := start(t, "listen-1", nil, nil, "listen", "--cert", certFile, "--key", keyFile, "--read-rate", "2MiB",
		"--window", "256KiB", "--max-window", "256KiB", "--dead-peer", "1s", "127.0.0.1:"+port)
	l1.stdin.Close()
	fp := l1.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr := l1.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	out1 := collect(l1.stdout)
	r1, raddr, rfp := startRelay(t, "relay-1", addr, fp, "--spool", dir, "--spool-max", "16MiB", "--dead-peer", "1s", "--timeout", "1s")
	c := start(t, "connect", nil, nil, "connect", "--pin", rfp, raddr)
	go io.Copy(io.Discard, c.stdout)
	prod := newProducer(12)
	rec := &recorder{w: c.stdin}
	prodErr := make(chan error, 1)
	go func() { prodErr <- prod.produce(rec, total) }()
	select {
	case err := <-prodErr:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the spool did not take everything")
	}
	// connect ends with success once the relay has read everything into
	// its spool: from the client's side the relay consumed it.
	assert.Equal(t, 0, c.wait(20*time.Second), "connect exit code")
	time.Sleep(time.Second) // the listener reads a few MiB meanwhile

	r2 := r1
	switch how {
	case "relay-sigkill", "relay-sigterm":
		sig := map[string]syscall.Signal{"relay-sigkill": syscall.SIGKILL, "relay-sigterm": syscall.SIGTERM}[how]
		r1.signal(sig)
		r1.wait(10 * time.Second)
		if sig == syscall.SIGTERM {
			assert.Regexp(t, `(?m)^relay: stream 1: spool: .* kept in stream-.*, to deliver when the relay next starts$`, r1.stderrText())
			assert.Regexp(t, `(?m)^spool .*: .* kept for the next start$`, r1.stderrText())
		}
	case "upstream-lost":
		l1.signal(syscall.SIGKILL)
		r1.waitLine(`^relay: stream 1: spool: .* kept in stream-.*, to deliver on a new stream$`)
	}
	l1.wait(20 * time.Second)
	got1 := <-out1

	l2 := start(t, "listen-2", nil, nil, "listen", "--cert", certFile, "--key", keyFile, "127.0.0.1:"+port)
	l2.stdin.Close()
	l2.waitLine(`^listening on `)
	out2 := collect(l2.stdout)
	if how != "upstream-lost" {
		r2, _, _ = startRelay(t, "relay-2", addr, fp, "--spool", dir, "--spool-max", "16MiB")
	}
	r2.waitLine(`^spool: delivered .* on a new stream$`)
	if how != "upstream-lost" {
		assert.Regexp(t, `(?m)^spool: .* left by an earlier run in 1 stream\(s\), to deliver upstream again$`, r2.stderrText())
	}
	assert.Equal(t, 0, l2.wait(20*time.Second), "listen-2 exit code")
	got2 := <-out2

	sent := rec.buf.Bytes()
	require.Len(t, sent, total)
	require.True(t, bytes.Equal(got1, sent[:len(got1)]), "listen-1 got something else than the start of the data")
	require.NotEmpty(t, got2, "nothing delivered after the restart")
	// Where the replay starts: at or before the end of what listen-1 got.
	from := -1
	for h := len(got1); h >= max(0, len(got1)-(8<<20)) && from < 0; h-- {
		if h+len(got2) == len(sent) && bytes.Equal(got2, sent[h:]) {
			from = h
		}
	}
	t.Logf("%s: listen-1 got %.2f MiB before the cut; listen-2 got %.2f MiB from offset %d: %d bytes delivered twice",
		how, float64(len(got1))/(1<<20), float64(len(got2))/(1<<20), from, len(got1)-from)
	require.GreaterOrEqual(t, from, 0, "the replay is not the rest of the data from at or before where listen-1 stopped (a gap, or a reorder)")
	assert.Greater(t, len(got1), 1<<20, "listen-1 read too little for the test to mean much")
	assert.Less(t, len(got2), total, "the replay started from the beginning")
	assert.LessOrEqual(t, len(got1)-from, 1<<20, "more than about a window delivered twice")
	assertSpoolEmpty(t, dir)
	r2.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, r2.wait(10*time.Second))
}

// TestRelaySpoolFlags: bad spool flags are refused with a clear error
// before anything is served.
func TestRelaySpoolFlags(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	corrupt := filepath.Join(tmp, "corrupt")
	require.NoError(t, os.MkdirAll(filepath.Join(corrupt, spoolDirPrefix+"1-1-1"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(corrupt, spoolDirPrefix+"1-1-1", "head"), []byte("short"), 0o600))
	ok := filepath.Join(tmp, "ok")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--spool", ok, "--spool-max", "-1MiB"}, exitUsage, `--spool-max: size "-1MiB" is negative`},
		{[]string{"--spool", ok}, exitUsage, "--spool needs --spool-max SIZE"},
		{[]string{"--spool-max", "8MiB"}, exitUsage, "--spool-max needs --spool DIR"},
		{[]string{"--spool", ok, "--spool-max", "100KiB"}, exitUsage, "--spool-max 100.0 KiB is too small: want at least 1.00 MiB"},
		{[]string{"--spool", filepath.Join(file, "sub"), "--spool-max", "8MiB"}, 1, "--spool " + filepath.Join(file, "sub") + ": not a directory"},
		{[]string{"--spool", corrupt, "--spool-max", "8MiB"}, 1, "data left by an earlier run cannot be read: spool: corrupt: " + filepath.Join(corrupt, spoolDirPrefix+"1-1-1", "head") + ": 5 bytes, want 16"},
	} {
		p := start(t, "relay", nil, io.Discard, append(append([]string{"relay"}, tc.args...), "127.0.0.1:0", "127.0.0.1:1")...)
		p.stdin.Close()
		assert.Equal(t, tc.code, p.wait(10*time.Second), "%q", tc.args)
		assert.Contains(t, p.stderrText(), tc.want, "%q", tc.args)
		assert.Regexp(t, `^bpcat relay: [^\n]+\n$`, p.stderrText(), "one line")
	}

	// Two relays on one directory.
	r1 := start(t, "relay-1", nil, io.Discard, "relay", "--spool", ok, "--spool-max", "8MiB", "127.0.0.1:0", "127.0.0.1:1")
	r1.stdin.Close()
	r1.waitLine(`^listening on `)
	r2 := start(t, "relay-2", nil, io.Discard, "relay", "--spool", ok, "--spool-max", "8MiB", "127.0.0.1:0", "127.0.0.1:1")
	r2.stdin.Close()
	assert.Equal(t, 1, r2.wait(10*time.Second))
	assert.Regexp(t, regexp.MustCompile(`^bpcat relay: --spool .*: in use by another bpcat relay`), r2.stderrText())
	r1.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, r1.wait(10*time.Second))
}
