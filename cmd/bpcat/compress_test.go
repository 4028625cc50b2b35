package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/bpmux/bp/internal/logtext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCompressFlag pipes logs through listen and connect with each
// --compress, both ways, as a user does: the bytes arrive intact and the
// summaries say what compression saved.
func TestCompressFlag(t *testing.T) {
	data := logtext.JSON(1, 8<<20)
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
