package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logLines makes n bytes of JSON log lines, deterministically.
func logLines(n int) []byte {
	r := rand.New(rand.NewPCG(3, 5))
	var b []byte
	t := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for len(b) < n {
		t = t.Add(time.Duration(r.IntN(5000)) * time.Microsecond)
		b = fmt.Appendf(b, `{"ts":%q,"level":"info","status":%d,"req":"%016x"}`+"\n", t.Format(time.RFC3339Nano), 200+r.IntN(4)*100, r.Uint64())
	}
	return b[:n]
}

// TestCompressFlag pipes logs through listen and connect with each
// --compress, both ways, as a user does: the bytes arrive intact and the
// summaries say what compression saved.
func TestCompressFlag(t *testing.T) {
	data := logLines(8 << 20)
	want := sha256.Sum256(data)
	for _, c := range []string{"zstd", "s2"} {
		t.Run(c, func(t *testing.T) {
			var atListener, atConnect bytes.Buffer
			l, addr, fp := startListener(t, "listen", bytes.NewReader(data), &atListener)
			conn := start(t, "connect", bytes.NewReader(data), &atConnect, "connect", "--compress", c, "--pin", fp, addr)
			require.Equal(t, 0, conn.wait(60*time.Second), "connect: %s", conn.stderrText())
			require.Equal(t, 0, l.wait(60*time.Second), "listen: %s", l.stderrText())
			assert.Equal(t, want, sha256.Sum256(atListener.Bytes()), "connect -> listen")
			assert.Equal(t, want, sha256.Sum256(atConnect.Bytes()), "listen -> connect: the listener answers in kind")
			assert.Regexp(t, c+` sent 8\.00 MiB as .* \([0-9.]+x\)`, conn.stderrText())
			assert.Regexp(t, c+` sent 8\.00 MiB as .* \([0-9.]+x\)`, l.stderrText(), "the listener compressed its direction too")
			assert.Regexp(t, `received 8\.00 MiB as .* compressed`, l.stderrText())
		})
	}
}

// TestCompressFlagErrors: a codec bpcat does not know is a usage error.
func TestCompressFlagErrors(t *testing.T) {
	p := start(t, "bad", nil, io.Discard, "connect", "--compress", "gzip", "127.0.0.1", "1")
	assert.Equal(t, 2, p.wait(10*time.Second))
	assert.Contains(t, p.stderrText(), `--compress "gzip": want zstd, s2 or none`)
}
