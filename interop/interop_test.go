package interop

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMatrix runs the quick slice of the matrix on every pair (what CI
// runs); with BP_INTEROP_FULL=1, every case at full size, as
// go run ./interop/cmd/interop does. The path is the packet-level link
// where this process may make one (root, TUN), else the loopback proxies.
func TestMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	nw, err := NewNetwork(ctx, "auto")
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	t.Logf("path: %s", nw.Name())
	full := os.Getenv("BP_INTEROP_FULL") == "1"
	opts := Options{Quick: !full}
	if !full {
		opts.Cases = QuickCases()
	}
	if testing.Short() { // the smallest slice: does each pair connect and move data?
		opts.Cases = opts.Cases[:2]
	}
	var log strings.Builder
	opts.Log = &log
	results := Run(ctx, nw, opts)
	var table strings.Builder
	WriteTable(&table, results)
	t.Logf("\n%s", table.String())
	for _, r := range results {
		if r.Result == Fail {
			t.Errorf("%s → %s, %s: %s (logs: %s)", r.Client, r.Server, r.Case, r.Details, r.Logs)
		}
	}
	if len(results) != len(Pairs())*len(opts.casesOrAll()) {
		t.Errorf("%d results for %d pairs and %d cases", len(results), len(Pairs()), len(opts.casesOrAll()))
	}
}

func (o Options) casesOrAll() []Case {
	if o.Cases != nil {
		return o.Cases
	}
	return Cases()
}

// TestWriteTable: the table has a row per pair and a column per case,
// and lists what did not pass with its logs.
func TestWriteTable(t *testing.T) {
	results := []Result{
		{Client: "a", Server: "b", Case: "handshake", Result: Pass, Seconds: 0.1},
		{Client: "a", Server: "b", Case: "stall", Result: Fail, Details: "held too long", Logs: "/tmp/x"},
		{Client: "c", Server: "c", Case: "handshake", Result: Unsupported, Details: "no"},
	}
	var b strings.Builder
	if err := WriteTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"client → server", "handshake", "stall", "a → b", "✓ 0.1s", "✗ FAIL", "c → c", "n/a", "held too long (logs: /tmp/x)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var j strings.Builder
	if err := WriteJSON(&j, results); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(j.String(), "\n"); n != len(results) {
		t.Errorf("%d JSON lines for %d results", n, len(results))
	}
	if !strings.Contains(j.String(), `"client":"a","server":"b","case":"stall","result":"fail"`) {
		t.Errorf("JSON: %s", j.String())
	}
}
