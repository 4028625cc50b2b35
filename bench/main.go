// Command bench compares bp/1 streams over quic-go ("ours"), over TCP+TLS
// ("ours-tcp") and over golang.org/x/net/quic ("ours-xquic") with plain
// quic-go and x/net/quic streams, hashicorp/yamux and xtaci/smux over TLS
// over TCP, and golang.org/x/net/http2 request bodies, on the same bytes,
// in one run, interleaving the implementations.
//
//	cd bench && go run . [-quick] [-json] [-cases a,b] [-impls x,y] [-reps n]
//
// Every measurement runs the server side in a child process (this binary
// re-executed with -serve). The loopback cases run on 127.0.0.1;
// resume-latency puts the impairment proxy (interop/impair) between the
// two at 50 ms RTT; rtt50-1, hol-latency and loss-8 run the client and the
// server in two network namespaces joined by the packet-level link of
// interop/link (root only; they skip otherwise). Goals are checked on
// paired ratios: the median of the per-repetition ratios of runs made next
// to each other. See BENCHMARKS.md at the repository root for the cases,
// the metrics and the recorded runs.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"
)

type result struct {
	Case   string  `json:"case"`
	Impl   string  `json:"impl"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Set on the ratio and spread records of a goal only.
	Of        string   `json:"of,omitempty"`        // the metric the goal is on
	Reference string   `json:"reference,omitempty"` // what ours is compared with
	Goal      string   `json:"goal,omitempty"`      // e.g. ">= 0.95"
	Met       *bool    `json:"met,omitempty"`
	N         int      `json:"n,omitempty"` // repetitions paired
	Min       *float64 `json:"min,omitempty"`
	Max       *float64 `json:"max,omitempty"`
	Q1        *float64 `json:"q1,omitempty"`
	Q3        *float64 `json:"q3,omitempty"`
}

var units = map[string]string{
	"throughput":         "MB/s",
	"goodput":            "MB/s",
	"cpu_seconds_per_gb": "s/GB",
	"p50_ms":             "ms",
	"p90_ms":             "ms",
	"p99_ms":             "ms",
	"jain":               "index",
	"time_to_90":         "s",
	"fraction":           "ratio",
	"rtts":               "RTT",
	"bytes_per_stream":   "bytes",
	"peak_heap_bytes":    "bytes",
	"budget_bytes":       "bytes",
}

type key struct{ c, impl, metric string }

// sample is one repetition's value.
type sample struct {
	rep int
	v   float64
}

type runner struct {
	t        timing
	verbose  bool
	values   map[key][]sample
	order    []key
	notes    []string
	profArgs []string // passed on to the server processes
	children int
	rep      int // the repetition being run

	holPool map[string][]float64 // hol-latency: every round trip of every repetition, ms
	tcpCC   string               // TCP congestion control on the link
	link    *linkPath            // the packet-level link, once a case needs it
	linkErr error                // why it could not be set up
}

func (r *runner) record(c, impl, metric string, v float64) {
	k := key{c, impl, metric}
	if _, ok := r.values[k]; !ok {
		r.order = append(r.order, k)
	}
	r.values[k] = append(r.values[k], sample{r.rep, v})
	if r.verbose {
		fmt.Fprintf(os.Stderr, "  %-18s %-14s %-18s %12.4g\n", c, impl, metric, v)
	}
}

// vals returns the values recorded for k, in the order of the runs.
func (r *runner) vals(k key) []float64 {
	var out []float64
	for _, s := range r.values[k] {
		out = append(out, s.v)
	}
	return out
}

// byRep returns the value recorded for k in each repetition.
func (r *runner) byRep(k key) map[int]float64 {
	out := map[int]float64{}
	for _, s := range r.values[k] {
		out[s.rep] = s.v
	}
	return out
}

// failed notes a run that failed; the run goes on without its values.
func (r *runner) failed(c, impl string, rep int, err error) {
	what := c
	if impl != "" {
		what += "/" + impl
	}
	r.note("FAILED %s rep %d: %v", what, rep+1, err)
	fmt.Fprintf(os.Stderr, "bench: %s rep %d failed: %v\n", what, rep+1, err)
}

func (r *runner) note(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	r.notes = append(r.notes, s)
	if r.verbose {
		fmt.Fprintln(os.Stderr, "  note:", s)
	}
}

// startChild starts a server process for im on loopback, or in the
// server's namespace of the link with onLink.
func (r *runner) startChild(im impl, many, onLink bool) (*child, error) {
	r.children++
	var extra []string
	for i := 0; i+1 < len(r.profArgs); i += 2 {
		extra = append(extra, r.profArgs[i], fmt.Sprintf("%s.server.%d", r.profArgs[i+1], r.children))
	}
	if onLink {
		return startChild(im.name, r.link.hostB, many, extra, r.link.runInB)
	}
	return startChild(im.name, "127.0.0.1", many, extra, nil)
}

// needLink sets up the packet-level link the first time a case needs it.
func (r *runner) needLink() error {
	if r.link == nil && r.linkErr == nil {
		r.link, r.linkErr = startLinkPath(r.tcpCC)
	}
	return r.linkErr
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	quick := flag.Bool("quick", false, "short run (about a minute)")
	asJSON := flag.Bool("json", false, "print one JSON object per result line instead of a table")
	jsonOut := flag.String("json-out", "", "also write the JSON lines to this file (with the table on stdout)")
	caseList := flag.String("cases", "", "comma-separated cases to run (default all)")
	implList := flag.String("impls", "", "comma-separated implementations (default all)")
	reps := flag.Int("reps", 0, "repetitions of every case (default: 2 to 9 by case; 1 with -quick)")
	verbose := flag.Bool("v", false, "print every repetition's results and notes to stderr as they come")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile of the client to this file, and of each server process to file.server.N")
	memProf := flag.String("memprofile", "", "write an allocation profile (client, and file.server.N); server processes also write their heap at each memory reading to file.server.N.memK")
	mutexProf := flag.String("mutexprofile", "", "write a mutex contention profile (client, and file.server.N)")
	serve := flag.Bool("serve", false, "internal: run as the server process")
	serveImpl := flag.String("impl", "", "internal: the server process's implementation")
	serveHost := flag.String("host", "127.0.0.1", "internal: the address the server process listens on")
	many := flag.Bool("many", false, "internal: configure the server for 10,000 streams")
	linkServe := flag.Bool("link-serve", false, "internal: run the packet-level link between namespaces -link-a and -link-b")
	linkA := flag.String("link-a", "", "internal: the client's namespace")
	linkB := flag.String("link-b", "", "internal: the server's namespace")
	flag.Int64Var(&rttRateMbit, "link-rate", rttRateMbit, "the link's rate cap in Mbit/s for rtt50-1 and loss-8 (the queue stays one BDP)")
	tcpCC := flag.String("tcp-cc", "", "TCP congestion control in the link's namespaces, one the kernel allows there (empty: the kernel's default); QUIC's is the QUIC stack's own")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	stopProf, err := startProfiles(*cpuProf, *mutexProf)
	if err != nil {
		return err
	}
	defer func() {
		stopProf()
		if *memProf != "" {
			writeProfile("allocs", *memProf)
		}
		if *mutexProf != "" {
			writeProfile("mutex", *mutexProf)
		}
	}()
	if *serve {
		if *memProf != "" {
			// Every allocation, not a sample: the idle-streams profile
			// counts bytes per stream from it.
			runtime.MemProfileRate = 1
		}
		return serveMain(*serveImpl, *serveHost, *many, *memProf)
	}
	if *linkServe {
		return linkServeMain(*linkA, *linkB, *tcpCC)
	}

	r := &runner{t: fullTiming, verbose: *verbose, values: map[key][]sample{}, tcpCC: *tcpCC, holPool: map[string][]float64{}}
	if *quick {
		r.t = quickTiming
	}
	if *reps > 0 {
		r.t.setReps(*reps)
	}
	defer func() {
		if r.link != nil {
			r.link.close()
		}
	}()
	for _, p := range [][2]string{{"-cpuprofile", *cpuProf}, {"-memprofile", *memProf}, {"-mutexprofile", *mutexProf}} {
		if p[1] != "" {
			r.profArgs = append(r.profArgs, p[0], p[1])
		}
	}
	selCases, err := selectCases(*caseList)
	if err != nil {
		return err
	}
	selImpls, err := selectImpls(*implList)
	if err != nil {
		return err
	}

	start := time.Now()
	var shown []caseDef
	linkNoted := false
	for _, c := range selCases {
		if c.alias != "" && slices.ContainsFunc(selCases, func(d caseDef) bool { return d.name == c.alias }) {
			shown = append(shown, c) // measured by the case it names
			continue
		}
		if *quick && c.notQuick {
			r.note("%s: skipped: not part of -quick", c.name)
			continue
		}
		ims := c.implsFor(selImpls, *implList != "", *quick)
		if len(ims) == 0 {
			r.note("%s: skipped: none of the chosen implementations applies", c.name)
			continue
		}
		if c.link {
			if err := r.needLink(); err != nil {
				r.note("%s: skipped: %v", c.name, err)
				fmt.Fprintf(os.Stderr, "bench: %s skipped: %v\n", c.name, err)
				continue
			}
			if !linkNoted {
				linkNoted = true
				r.note("the packet-level link: namespaces %s and %s; TCP congestion control there: %s", r.link.a, r.link.b, r.link.tcpCC)
			}
		}
		shown = append(shown, c)
		n := c.reps(r.t)
		cstart := time.Now()
		for rep := range n {
			r.rep = rep
			if c.runAll != nil {
				if r.verbose {
					fmt.Fprintf(os.Stderr, "%s rep %d/%d\n", c.name, rep+1, n)
				}
				if err := c.runAll(r, ims); err != nil {
					r.failed(c.name, "", rep, err)
				}
				continue
			}
			// Interleaved, and every other repetition in reverse order, so
			// that the runs paired by a goal sit next to each other and
			// neither side of a pair always goes first.
			order := slices.Clone(ims)
			if rep%2 == 1 {
				slices.Reverse(order)
			}
			for _, im := range order {
				if r.verbose {
					fmt.Fprintf(os.Stderr, "%s %s rep %d/%d\n", c.name, im.name, rep+1, n)
				}
				if err := c.run(r, im); err != nil {
					r.failed(c.name, im.name, rep, err)
				}
			}
		}
		if r.verbose {
			fmt.Fprintf(os.Stderr, "%s took %v\n", c.name, time.Since(cstart).Round(time.Millisecond))
		}
	}
	for _, im := range selImpls {
		if v := slices.Clone(r.holPool[im.name]); len(v) > 0 {
			sort.Float64s(v)
			over := len(v) - sort.SearchFloat64s(v, 2*float64(rtt/time.Millisecond)+1e-9)
			r.note("hol-latency %s, every round trip of the run: p50 %.1f, p90 %.1f, p99 %.1f, max %.1f ms; %d round trips, %d over 2 RTT",
				im.name, nearestRank(v, 0.5), nearestRank(v, 0.9), nearestRank(v, 0.99), v[len(v)-1], len(v), over)
		}
	}
	goals := r.goals()
	writeJSON := func(w io.Writer) {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, k := range r.order {
			enc.Encode(result{Case: k.c, Impl: k.impl, Metric: k.metric, Value: median(r.vals(k)), Unit: units[k.metric]})
		}
		for _, g := range goals {
			for _, rec := range g.records() {
				enc.Encode(rec)
			}
		}
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return err
		}
		writeJSON(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if *asJSON {
		writeJSON(os.Stdout)
		return nil
	}
	printTable(r, shown, selImpls, goals)
	fmt.Printf("\n%d cores (GOMAXPROCS %d), %s, %s; %v in all\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(),
		map[bool]string{true: "-quick", false: "full run"}[*quick], time.Since(start).Round(time.Second))
	return nil
}

func selectCases(list string) ([]caseDef, error) {
	if list == "" {
		return cases, nil
	}
	var out []caseDef
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(cases, func(c caseDef) bool { return c.name == strings.TrimSpace(name) })
		if i < 0 {
			var names []string
			for _, c := range cases {
				names = append(names, c.name)
			}
			return nil, fmt.Errorf("unknown case %q (cases: %s)", name, strings.Join(names, ", "))
		}
		out = append(out, cases[i])
	}
	return out, nil
}

func selectImpls(list string) ([]impl, error) {
	if list == "" {
		return impls, nil
	}
	var out []impl
	for _, name := range strings.Split(list, ",") {
		im, ok := implByName(strings.TrimSpace(name))
		if !ok {
			var names []string
			for _, im := range impls {
				names = append(names, im.name)
			}
			return nil, fmt.Errorf("unknown impl %q (impls: %s)", name, strings.Join(names, ", "))
		}
		out = append(out, im)
	}
	return out, nil
}

func printTable(r *runner, cs []caseDef, ims []impl, goals []goalResult) {
	// Only the implementations something was measured for get a column.
	var cols []impl
	for _, im := range ims {
		if slices.ContainsFunc(r.order, func(k key) bool { return k.impl == im.name }) {
			cols = append(cols, im)
		}
	}
	fmt.Printf("%-18s %-24s", "case", "metric")
	for _, im := range cols {
		fmt.Printf(" %13s", im.name)
	}
	fmt.Println()
	for _, c := range cs {
		var metrics []string
		for _, k := range r.order {
			if k.c == c.name && !slices.Contains(metrics, k.metric) {
				metrics = append(metrics, k.metric)
			}
		}
		for _, m := range metrics {
			fmt.Printf("%-18s %-24s", c.name, m+" ("+units[m]+")")
			for _, im := range cols {
				v := r.vals(key{c.name, im.name, m})
				if len(v) == 0 {
					fmt.Printf(" %13s", "—")
					continue
				}
				fmt.Printf(" %13s", format(m, median(v)))
			}
			fmt.Println()
		}
	}
	if len(goals) > 0 {
		fmt.Println("\ngoals (paired: the median of the per-repetition ratios of adjacent runs, [min-max], IQR, ±half the range):")
		for _, g := range goals {
			fmt.Println("  " + g.line)
		}
	}
	if len(r.notes) > 0 {
		fmt.Println("\nnotes:")
		for _, n := range r.notes {
			fmt.Println("  " + n)
		}
	}
}

func format(metric string, v float64) string {
	switch metric {
	case "throughput", "goodput", "p50_ms", "p90_ms", "p99_ms":
		return fmt.Sprintf("%.1f", v)
	case "jain", "fraction", "cpu_seconds_per_gb":
		return fmt.Sprintf("%.3f", v)
	case "time_to_90", "rtts":
		return fmt.Sprintf("%.2f", v)
	case "bytes_per_stream":
		return fmt.Sprintf("%.0f", v)
	case "peak_heap_bytes", "budget_bytes":
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return fmt.Sprintf("%g", v)
}

func startProfiles(cpu, mutex string) (func(), error) {
	if mutex != "" {
		runtime.SetMutexProfileFraction(5)
	}
	if cpu == "" {
		return func() {}, nil
	}
	f, err := os.Create(cpu)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}
