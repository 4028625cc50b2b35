// Package interop is bp/1's interoperability suite: a matrix of
// implementations (bp/1 over each transport binding, and each QUIC client
// against each QUIC server across stacks) by cases (handshake, transfer,
// multiplexing, stall, blackhole, loss, corruption, long RTT, goodput,
// GOAWAY), in the image of the QUIC interop runner, over an impaired path.
//
// The path is a packet-level link between two network namespaces (package
// interop/link) when the process may make one (root, TUN), so that QUIC and
// TCP see the same delay, loss and queue; elsewhere it is the userspace
// proxies of interop/impair on loopback, whose TCP proxy splits the TCP
// connection (so TCP never sees the loss as TCP): results say which path
// they ran on. The default impairment is the interop runner's: 15 ms one
// way, 10 Mbit/s, a queue of 25 packets.
//
// Every case checks its pass criterion from both ends: the bytes' sha256
// on each side, and the endpoints' stats (a grown window, a writer held at
// one window, a graceful end). A failed case keeps the logs and traces of
// both ends in its own directory.
package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bpmux/bp"
)

// Impl is one implementation of an endpoint: bp/1 over one binding.
type Impl struct {
	// Name is how results name it: "quic-go", "x/net/quic", "tcp+tls".
	Name      string
	Transport bp.Transport
}

// The implementations.
var (
	QuicGo = Impl{Name: "quic-go", Transport: bp.TransportQUIC}
	XQUIC  = Impl{Name: "x/net/quic", Transport: bp.TransportXQUIC}
	TCP    = Impl{Name: "tcp+tls", Transport: bp.TransportTCP}
)

// Pair is a client implementation against a server implementation.
type Pair struct{ Client, Server Impl }

// String names the pair as "client → server".
func (p Pair) String() string { return p.Client.Name + " → " + p.Server.Name }

// Pairs returns the matrix's pairs: each binding against itself, and
// each QUIC client against the other stack's server.
func Pairs() []Pair {
	return []Pair{
		{QuicGo, QuicGo}, {XQUIC, XQUIC}, {TCP, TCP},
		{QuicGo, XQUIC}, {XQUIC, QuicGo},
	}
}

// The results of a case.
const (
	Pass = "pass"
	Fail = "fail"
	// Unsupported marks a case the pair cannot pass by design (for
	// example head-of-line blocking under loss on TCP); Details says why,
	// with the figure measured.
	Unsupported = "unsupported"
)

// Result is one cell of the matrix, as the JSON lines of -json print it.
type Result struct {
	Client  string  `json:"client"`
	Server  string  `json:"server"`
	Case    string  `json:"case"`
	Result  string  `json:"result"`
	Seconds float64 `json:"seconds"`
	Path    string  `json:"path"`
	Details string  `json:"details,omitempty"`
	// Logs is the directory with the case's logs and traces, kept when
	// it did not pass.
	Logs string `json:"logs,omitempty"`
}

// WriteJSON writes results as JSON lines.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the matrix for people: a row per pair, a column per
// case, then the details of every cell that did not pass.
func WriteTable(w io.Writer, results []Result) error {
	var pairs, cases []string
	cell := map[[2]string]Result{}
	seen := map[string]bool{}
	for _, r := range results {
		p := r.Client + " → " + r.Server
		if !seen["p"+p] {
			seen["p"+p] = true
			pairs = append(pairs, p)
		}
		if !seen["c"+r.Case] {
			seen["c"+r.Case] = true
			cases = append(cases, r.Case)
		}
		cell[[2]string{p, r.Case}] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "client → server\t%s\n", strings.Join(cases, "\t"))
	for _, p := range pairs {
		row := []string{p}
		for _, c := range cases {
			r, ok := cell[[2]string{p, c}]
			switch {
			case !ok:
				row = append(row, "-")
			case r.Result == Pass:
				row = append(row, fmt.Sprintf("✓ %.1fs", r.Seconds))
			case r.Result == Unsupported:
				row = append(row, "n/a")
			default:
				row = append(row, "✗ FAIL")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Details != "" {
			fmt.Fprintf(w, "%s → %s, %s: %s: %s", r.Client, r.Server, r.Case, r.Result, r.Details)
			if r.Logs != "" {
				fmt.Fprintf(w, " (logs: %s)", r.Logs)
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}

// Options choose what Run runs.
type Options struct {
	// Pairs and Cases to run; nil means all of them (Pairs(), Cases()).
	Pairs []Pair
	Cases []Case
	// Quick shrinks every case (smaller transfers, fewer streams and
	// runs) for a fast slice.
	Quick bool
	// LogDir keeps each failed case's logs and traces in a directory of
	// its own below it; empty means a temporary directory.
	LogDir string
	// Log, if set, receives a line as each case starts and ends.
	Log io.Writer
}

// Run runs every case for every pair and returns the results in order.
// The network comes from net, which each case reconfigures to its
// impairment.
func Run(ctx context.Context, net Network, opts Options) []Result {
	pairs, cases := opts.Pairs, opts.Cases
	if pairs == nil {
		pairs = Pairs()
	}
	if cases == nil {
		cases = Cases()
	}
	var out []Result
	for _, p := range pairs {
		for _, c := range cases {
			if ctx.Err() != nil {
				return out
			}
			if opts.Log != nil {
				fmt.Fprintf(opts.Log, "interop: %s: %s ...\n", p, c.Name)
			}
			r := runCase(ctx, net, p, c, opts)
			if opts.Log != nil {
				fmt.Fprintf(opts.Log, "interop: %s: %s: %s in %.1fs %s\n", p, c.Name, r.Result, r.Seconds, r.Details)
			}
			out = append(out, r)
		}
	}
	return out
}

func runCase(ctx context.Context, net Network, p Pair, c Case, opts Options) Result {
	r := Result{Client: p.Client.Name, Server: p.Server.Name, Case: c.Name, Path: net.Name()}
	if why := c.unsupported(p); why != "" {
		r.Result, r.Details = Unsupported, why
		return r
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env, err := newEnv(ctx, net, p, c, opts)
	if err != nil {
		r.Result, r.Details = Fail, err.Error()
		if errors.Is(err, ErrNotModelled) {
			r.Result = Unsupported
		}
		return r
	}
	start := time.Now()
	details, err := c.Run(ctx, env)
	r.Seconds = time.Since(start).Seconds()
	env.close()
	switch {
	case err == nil:
		r.Result, r.Details = Pass, details
		env.discardLogs()
	case c.ExpectFail != nil && c.ExpectFail(p) != "":
		r.Result = Unsupported
		r.Details = fmt.Sprintf("%s (measured: %v)", c.ExpectFail(p), err)
		r.Logs = env.logDir
	default:
		r.Result, r.Details, r.Logs = Fail, err.Error(), env.logDir
	}
	return r
}
