package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBench runs a bench server and a one-second measurement with two
// streams and JSON output.
func TestBench(t *testing.T) {
	srv := start(t, "bench-server", nil, nil, "bench", "-l", "127.0.0.1:0")
	fp := srv.waitLine(`^fingerprint (sha256:[0-9a-f]{64})$`)[1]
	addr := srv.waitLine(`^listening on (127\.0\.0\.1:\d+)$`)[1]
	var out bytes.Buffer
	c := start(t, "bench", nil, &out, "bench", "-t", "1s", "-P", "2", "--json", "--pin", fp, addr)
	require.Equal(t, 0, c.wait(60*time.Second))

	var intervals int
	var sum benchSummary
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), "line %q", sc.Text())
		switch rec["type"] {
		case "interval":
			intervals++
		case "summary":
			require.NoError(t, json.Unmarshal(sc.Bytes(), &sum))
		default:
			t.Fatalf("unexpected line %q", sc.Text())
		}
	}
	assert.LessOrEqual(t, intervals, 2)
	assert.Equal(t, 2, sum.Streams)
	assert.Len(t, sum.StreamBytes, 2)
	assert.Positive(t, sum.Bytes)
	assert.Equal(t, sum.Bytes, sum.StreamBytes[0]+sum.StreamBytes[1])
	t.Logf("bench: %s in %.2fs", formatSize(sum.Bytes), sum.Seconds)
	srv.waitLine(`^session: 2 streams`)
}
