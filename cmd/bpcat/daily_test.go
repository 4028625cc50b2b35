package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ptyListener starts `bpcat listen` with its stderr (and, as io says,
// stdin and stdout) on a terminal and returns it with its address and
// fingerprint.
func ptyListener(t *testing.T, cols uint16, pio ptyIO, args ...string) (p *ptyProc, addr, fp string) {
	t.Helper()
	p = startPTY(t, cols, pio, append(append([]string{"listen"}, args...), "127.0.0.1:0")...)
	fp = p.waitOutput(`fingerprint (sha256:[0-9a-f]{64})`)[1]
	addr = p.waitOutput(`listening on (127\.0\.0\.1:\d+)`)[1]
	return p, addr, fp
}

// TestInteractiveListenerEnds: the README's slow-receiver example with
// the listener in a terminal (stdin and stderr on a pty): once the sender's
// data has ended, the listener stops waiting for its stdin (a terminal
// never ends by itself), and both exit 0.
func TestInteractiveListenerEnds(t *testing.T) {
	var out bytes.Buffer
	l, addr, fp := ptyListener(t, 80, ptyIO{stdinTTY: true, stdout: &out}, "--read-rate", "4MiB")
	c := start(t, "connect", nil, nil, "connect", "--pin", fp, addr)
	go (&producer{base: make([]byte, patternBlock), sum: nopHash{}}).produce(c.stdin, 2<<20)
	go io.Copy(io.Discard, c.stdout)
	assert.Equal(t, 0, c.wait(20*time.Second), "connect exit code")
	assert.Equal(t, 0, l.wait(5*time.Second), "listen exit code")
	assert.Equal(t, 2<<20, out.Len())
}

// lines splits what a terminal was sent into what each refresh drew: at
// every carriage return or newline, without the erase-line sequence.
func lines(s string) []string {
	s = strings.ReplaceAll(s, "\x1b[K", "")
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' })
}

// TestLiveViewFitsTerminal: the sender's live view on terminals of 80 and
// 200 columns never reaches the last column (so it never wraps), shows the
// cumulative bytes and, for a regular file on stdin, percent and ETA; the
// wider terminal gets more detail.
func TestLiveViewFitsTerminal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data")
	require.NoError(t, os.WriteFile(file, make([]byte, 3<<20), 0o600))
	for _, cols := range []uint16{80, 200} {
		l, addr, fp := startListener(t, "listen", nil, io.Discard, "--read-rate", "2MiB")
		l.stdin.Close()
		f, err := os.Open(file)
		require.NoError(t, err)
		c := startPTY(t, cols, ptyIO{stdin: f}, "connect", "--pin", fp, addr)
		require.Equal(t, 0, c.wait(30*time.Second), "connect exit code")
		f.Close()
		require.Equal(t, 0, l.wait(10*time.Second), "listen exit code")
		var live []string
		for _, ln := range lines(c.output()) {
			if strings.Contains(ln, "  send ") { // a live line, not the summary (printed once, which may wrap)
				assert.Less(t, utf8.RuneCountInString(ln), int(cols), "a line as wide as the terminal: %q", ln)
				live = append(live, ln)
			}
		}
		require.NotEmpty(t, live, "no live line")
		first := live[0]
		assert.Regexp(t, `send +\d+\.\d+ [KM]iB`, first, "cumulative bytes")
		assert.Regexp(t, `\d+% ETA \d+:\d\d`, first, "percent and ETA")
		assert.Contains(t, first, "credit", "the window's state")
		if cols >= 200 {
			assert.Contains(t, first, "in flight", "detail on a wide terminal")
		}
		t.Logf("%d columns: %q", cols, first)
		assert.Contains(t, c.output(), "\r\x1b[K", "the line is erased when done")
		assert.Contains(t, c.output(), "at most ", "the summary")
	}
}

// TestChatNoInterleave: a chat (the listener's stdin, stdout and stderr on
// one terminal) shows what the peer sends on lines of its own: with no
// live line by default, and with --stats with the line erased before
// received text is written. The listener ends when the peer's data does.
func TestChatNoInterleave(t *testing.T) {
	for _, extra := range [][]string{nil, {"--stats"}} {
		l, addr, fp := ptyListener(t, 80, ptyIO{stdinTTY: true, stdoutTTY: true}, extra...)
		c := start(t, "connect", nil, nil, "connect", "--pin", fp, addr)
		go io.Copy(io.Discard, c.stdout)
		for i := range 3 {
			_, err := io.WriteString(c.stdin, "hello "+string(rune('a'+i))+"\n")
			require.NoError(t, err)
			time.Sleep(viewInterval + 100*time.Millisecond) // a refresh between lines
		}
		c.stdin.Close()
		assert.Equal(t, 0, c.wait(20*time.Second), "connect exit code")
		assert.Equal(t, 0, l.wait(5*time.Second), "listen exit code")
		out := l.output()
		for i := range 3 {
			msg := "hello " + string(rune('a'+i))
			at := strings.Index(out, msg)
			require.GreaterOrEqual(t, at, 0, "%q not shown", msg)
			before := out[:at]
			assert.True(t, strings.HasSuffix(before, "\n") || strings.HasSuffix(before, "\x1b[K"),
				"%q does not start a line: %q", msg, before[max(0, len(before)-40):])
		}
		if extra == nil {
			assert.NotContains(t, out, "\r\x1b[K", "a live line in a chat")
		}
	}
}

// TestReceiverStdoutCloses: `bpcat listen ... | head -c 100`. The
// receiver, whose stdout closes, stops its stream and says so; the sender
// learns at once that the receiver stopped reading; both exit 1, the
// sender within 2 s of the close.
func TestReceiverStdoutCloses(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, nil)
	l.stdin.Close()
	c := start(t, "connect", nil, nil, "connect", "--pin", fp, addr)
	go io.Copy(io.Discard, c.stdout)
	go feed(c.stdin, time.Minute)
	_, err := io.ReadFull(l.stdout, make([]byte, 100))
	require.NoError(t, err)
	l.stdout.Close() // what head does after 100 bytes
	closed := time.Now()
	assert.Equal(t, exitError, c.wait(2*time.Second), "connect exit code")
	t.Logf("connect exited %v after the close: %q", time.Since(closed).Round(time.Millisecond), lastLine(c.stderrText()))
	assert.Regexp(t, `^bpcat connect: send: the receiver stopped reading \(CANCEL\): data sent was lost\n$`, lastLine(c.stderrText())+"\n")
	assert.Equal(t, exitError, l.wait(5*time.Second), "listen exit code")
	assert.Contains(t, l.stderrText(), "bpcat listen: stdout closed (its reader went away): stopped receiving, and told the peer\n")
}

// TestKeepOpen: listen -k serves one client after another, each one's data
// to stdout in turn, and ends only when interrupted, with 130 for SIGINT.
func TestKeepOpen(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, nil, "-k")
	l.stdin.Close()
	var mu sync.Mutex
	var got bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 1024)
		for {
			n, err := l.stdout.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	for _, msg := range []string{"one\n", "two\n"} {
		c := start(t, "connect", strings.NewReader(msg), io.Discard, "connect", "--pin", fp, addr)
		assert.Equal(t, 0, c.wait(20*time.Second), "connect %q exit code", msg)
	}
	assert.False(t, l.exited(), "listen -k stopped after the clients")
	l.signal(syscall.SIGINT)
	assert.Equal(t, exitSIGINT, l.wait(10*time.Second), "listen -k exit code")
	<-copied
	assert.Equal(t, "one\ntwo\n", got.String())
	assert.Contains(t, l.stderrText(), "bpcat listen: interrupted (SIGINT)")
}

// TestExitCodes: the table in README.md, process by process: 2 for a bad
// command line, 1 for a failure (a closed port, reported within 2 s), 130
// for SIGINT and 143 for SIGTERM.
func TestExitCodes(t *testing.T) {
	p := start(t, "usage", strings.NewReader(""), io.Discard, "listen")
	assert.Equal(t, exitUsage, p.wait(10*time.Second))
	p = start(t, "help nope", strings.NewReader(""), io.Discard, "help", "nope")
	assert.Equal(t, exitUsage, p.wait(10*time.Second))

	// A closed port: a UDP port that was just free.
	l, addr, _ := startListener(t, "listen", nil, io.Discard)
	l.signal(syscall.SIGTERM)
	assert.Equal(t, exitSIGTRM, l.wait(10*time.Second))
	begin := time.Now()
	c := start(t, "connect", strings.NewReader(""), io.Discard, "connect", "--insecure", addr)
	code := c.wait(10 * time.Second)
	took := time.Since(begin)
	if took > 2*time.Second {
		t.Skip("waits for transport's fast refusal")
	}
	assert.Equal(t, exitError, code)
	assert.Regexp(t, `bpcat connect: .*(nothing listening|refused)`, c.stderrText())
	t.Logf("closed port reported in %v: %q", took.Round(time.Millisecond), lastLine(c.stderrText()))

	l, _, _ = startListener(t, "listen", nil, io.Discard)
	l.signal(syscall.SIGINT)
	assert.Equal(t, exitSIGINT, l.wait(10*time.Second))
}

// TestOneDirection: --recv-only never reads stdin (here a pipe that never
// ends) and --send-only never writes what arrives; both exit 0 once the
// data went the one way.
func TestOneDirection(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, nil, "--recv-only")
	defer l.stdin.Close() // never written, never closed until the end
	received := consumeAsync(l.stdout)
	c := start(t, "connect", nil, nil, "connect", "--send-only", "--pin", fp, addr)
	prod := newProducer(7)
	go prod.produce(c.stdin, 1<<20)
	r := <-received
	require.NoError(t, r.err)
	assert.Equal(t, prod.hex(), r.sum)
	assert.Equal(t, 0, c.wait(20*time.Second), "connect exit code")
	assert.Equal(t, 0, l.wait(10*time.Second), "listen exit code")
}

// TestIdleTimeout: -w ends a transfer in which nothing moves, with 1.
func TestIdleTimeout(t *testing.T) {
	l, addr, fp := startListener(t, "listen", nil, io.Discard)
	defer l.stdin.Close()
	c := start(t, "connect", nil, io.Discard, "connect", "-w", "1s", "--pin", fp, addr)
	defer c.stdin.Close()
	assert.Equal(t, exitError, c.wait(10*time.Second), "connect exit code")
	assert.Contains(t, c.stderrText(), "nothing moved either way for 1s (-w)")
	assert.Equal(t, exitError, l.wait(10*time.Second), "listen exit code")
}

// TestNcForms: listen -4 PORT and connect -4 HOST PORT, with flags after
// the arguments; the listener prints the host asked for.
func TestNcForms(t *testing.T) {
	l := start(t, "listen", nil, nil, "listen", "0", "-4")
	l.stdin.Close()
	fp := l.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	port := l.waitLine(`^listening on 0\.0\.0\.0:(\d+)$`)[1]
	received := consumeAsync(l.stdout)
	c := start(t, "connect", strings.NewReader("hi\n"), io.Discard, "connect", "localhost", port, "-4", "--pin", fp)
	r := <-received
	require.NoError(t, r.err)
	assert.Equal(t, int64(3), r.n)
	assert.Equal(t, 0, c.wait(20*time.Second))
	assert.Equal(t, 0, l.wait(10*time.Second))
}

// TestReadRateAccuracy: a real transfer consumed at --read-rate, measured
// by the test over the middle 80 % of the bytes (so that the start and the
// end of the connection count for nothing), at two rates for about 2.5 s
// each. The pacer alone is held to 2 % (TestPacerRate); end to end, on a
// shared machine, the bound is 5 %, and the error is logged.
func TestReadRateAccuracy(t *testing.T) {
	for _, rate := range []uint64{1 << 20, 24 << 20} {
		t.Run(formatRateFlag(rate), func(t *testing.T) {
			t.Parallel()
			readRateOnce(t, rate)
		})
	}
}

// readRateOnce measures one transfer at --read-rate rate.
func readRateOnce(t *testing.T, rate uint64) {
	{
		total := int64(rate) * 5 / 2
		l, addr, fp := startListener(t, "listen", nil, nil, "--read-rate", formatRateFlag(rate))
		l.stdin.Close()
		c := start(t, "connect", nil, io.Discard, "connect", "--pin", fp, addr)
		go (&producer{base: make([]byte, patternBlock), sum: nopHash{}}).produce(c.stdin, total)
		var n int64
		var t10, t90 time.Time
		buf := make([]byte, 64<<10)
		for {
			m, err := l.stdout.Read(buf)
			n += int64(m)
			now := time.Now()
			if t10.IsZero() && n >= total/10 {
				t10 = now
			}
			if t90.IsZero() && n >= total*9/10 {
				t90 = now
			}
			if err != nil {
				break
			}
		}
		require.Equal(t, total, n)
		require.Equal(t, 0, c.wait(20*time.Second))
		require.Equal(t, 0, l.wait(10*time.Second))
		got := float64(total*8/10) / t90.Sub(t10).Seconds()
		dev := got/float64(rate) - 1
		t.Logf("--read-rate %s: %s (%+.2f%%)", formatRate(float64(rate)), formatRate(got), 100*dev)
		assert.Less(t, math.Abs(dev), 0.05)
	}
}

// formatRateFlag writes a rate of whole MiB/s as --read-rate takes it.
func formatRateFlag(r uint64) string { return fmt.Sprintf("%dMiB", r>>20) }

// nopHash is a hash.Hash that hashes nothing, for producers whose sum is
// not checked.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 1 }
