// Package logtext makes JSON log lines, deterministically: the text that
// compression tests and benchmarks send, as a log shipper's data looks
// (repeated keys and values, and random request IDs and numbers, which
// set how well it compresses).
package logtext

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// JSON returns n bytes of JSON log lines made from seed: the same seed
// gives the same bytes.
func JSON(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	levels := []string{"info", "warn", "error", "debug"}
	paths := []string{"/api/v1/users", "/api/v1/orders", "/healthz", "/api/v2/search"}
	t := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	b := make([]byte, 0, n+256)
	for len(b) < n {
		t = t.Add(time.Duration(r.IntN(5000)) * time.Microsecond)
		b = fmt.Appendf(b, `{"ts":%q,"level":%q,"path":%q,"status":%d,"latency_ms":%.3f,"req":"%016x"}`+"\n",
			t.Format(time.RFC3339Nano), levels[r.IntN(4)], paths[r.IntN(4)], 200+r.IntN(4)*100, r.Float64()*100, r.Uint64())
	}
	return b[:n]
}
