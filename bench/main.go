// Command bench compares bp/1 streams over quic-go ("ours") with plain
// quic-go streams, hashicorp/yamux and xtaci/smux over TLS over TCP, and
// golang.org/x/net/http2 request bodies, on the same bytes, in one run,
// interleaving the implementations.
//
//	cd bench && go run . [-quick] [-json] [-cases a,b] [-impls x,y] [-reps n]
//
// Every measurement runs the server side in a child process (this binary
// re-executed with -serve) on 127.0.0.1; the rtt cases put the impairment
// proxy (interop/impair) between the two at 50 ms RTT. See BENCHMARKS.md
// at the repository root for the cases, the metrics and a recorded run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

type result struct {
	Case   string  `json:"case"`
	Impl   string  `json:"impl"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
}

var units = map[string]string{
	"throughput":       "MB/s",
	"jain":             "index",
	"time_to_90":       "s",
	"fraction":         "ratio",
	"rtts":             "RTT",
	"bytes_per_stream": "bytes",
	"peak_heap_bytes":  "bytes",
	"budget_bytes":     "bytes",
}

type key struct{ c, impl, metric string }

type runner struct {
	t        timing
	verbose  bool
	values   map[key][]float64
	order    []key
	notes    []string
	profArgs []string // passed on to the server processes
	children int
}

func (r *runner) record(c, impl, metric string, v float64) {
	k := key{c, impl, metric}
	if _, ok := r.values[k]; !ok {
		r.order = append(r.order, k)
	}
	r.values[k] = append(r.values[k], v)
	if r.verbose {
		fmt.Fprintf(os.Stderr, "  %-18s %-14s %-16s %12.4g\n", c, impl, metric, v)
	}
}

func (r *runner) note(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	r.notes = append(r.notes, s)
	if r.verbose {
		fmt.Fprintln(os.Stderr, "  note:", s)
	}
}

func (r *runner) startChild(im impl, many bool) (*child, error) {
	r.children++
	var extra []string
	for i := 0; i+1 < len(r.profArgs); i += 2 {
		extra = append(extra, r.profArgs[i], fmt.Sprintf("%s.server.%d", r.profArgs[i+1], r.children))
	}
	return startChild(im.name, many, extra)
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
	caseList := flag.String("cases", "", "comma-separated cases to run (default all)")
	implList := flag.String("impls", "", "comma-separated implementations (default all)")
	reps := flag.Int("reps", 0, "repetitions per case (default 5, 1 with -quick; rtt cases fewer)")
	verbose := flag.Bool("v", false, "print every repetition's results and notes to stderr as they come")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile of the client to this file, and of each server process to file.server.N")
	memProf := flag.String("memprofile", "", "write an allocation profile (client, and file.server.N); server processes also write their heap at each memory reading to file.server.N.memK")
	mutexProf := flag.String("mutexprofile", "", "write a mutex contention profile (client, and file.server.N)")
	serve := flag.Bool("serve", false, "internal: run as the server process")
	serveImpl := flag.String("impl", "", "internal: the server process's implementation")
	many := flag.Bool("many", false, "internal: configure the server for 10,000 streams")
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
		return serveMain(*serveImpl, *many, *memProf)
	}

	r := &runner{t: fullTiming, verbose: *verbose, values: map[key][]float64{}}
	if *quick {
		r.t = quickTiming
	}
	if *reps > 0 {
		r.t.reps, r.t.rttReps, r.t.idleReps = *reps, *reps, *reps
	}
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
	for _, c := range selCases {
		n := r.t.reps
		switch {
		case c.rtt:
			n = r.t.rttReps
		case c.name == "idle-streams":
			n = r.t.idleReps
		}
		cstart := time.Now()
		for rep := range n { // interleaved: A, B, C, A, B, C, ...
			if c.runAll != nil {
				if r.verbose {
					fmt.Fprintf(os.Stderr, "%s rep %d/%d\n", c.name, rep+1, n)
				}
				if err := c.runAll(r, selImpls); err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				continue
			}
			for _, im := range selImpls {
				if r.verbose {
					fmt.Fprintf(os.Stderr, "%s %s rep %d/%d\n", c.name, im.name, rep+1, n)
				}
				if err := c.run(r, im); err != nil {
					return fmt.Errorf("%s/%s: %w", c.name, im.name, err)
				}
			}
		}
		if r.verbose {
			fmt.Fprintf(os.Stderr, "%s took %v\n", c.name, time.Since(cstart).Round(time.Millisecond))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		for _, k := range r.order {
			enc.Encode(result{Case: k.c, Impl: k.impl, Metric: k.metric, Value: median(r.values[k]), Unit: units[k.metric]})
		}
		return nil
	}
	printTable(r, selCases, selImpls)
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

func printTable(r *runner, cs []caseDef, ims []impl) {
	fmt.Printf("%-18s %-17s", "case", "metric")
	for _, im := range ims {
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
			fmt.Printf("%-18s %-17s", c.name, m+" ("+units[m]+")")
			for _, im := range ims {
				v, ok := r.values[key{c.name, im.name, m}]
				if !ok {
					fmt.Printf(" %13s", "—")
					continue
				}
				fmt.Printf(" %13s", format(m, median(v)))
			}
			fmt.Println()
		}
	}
	if goals := r.goals(); len(goals) > 0 {
		fmt.Println("\ngoals (medians, ours against the reference in the same run):")
		for _, g := range goals {
			fmt.Println("  " + g)
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
	case "throughput":
		return fmt.Sprintf("%.1f", v)
	case "jain", "fraction":
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

// goals checks the targets against the medians.
func (r *runner) goals() []string {
	med := func(c, impl, m string) (float64, bool) {
		v, ok := r.values[key{c, impl, m}]
		if !ok {
			return math.NaN(), false
		}
		return median(v), true
	}
	var out []string
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	ratio := func(c, m, ref string, min float64) {
		a, ok1 := med(c, "ours", m)
		b, ok2 := med(c, ref, m)
		if ok1 && ok2 && b > 0 {
			out = append(out, fmt.Sprintf("%-18s %s ours/%s = %.3f (goal >= %.2f): %s", c, m, ref, a/b, min, mark(a/b >= min)))
		}
	}
	atMost := func(c, m string, limit float64, what string) {
		if a, ok := med(c, "ours", m); ok {
			out = append(out, fmt.Sprintf("%-18s %s ours = %s (goal %s): %s", c, m, format(m, a), what, mark(a <= limit)))
		}
	}
	atLeast := func(c, m string, limit float64, what string) {
		if a, ok := med(c, "ours", m); ok {
			out = append(out, fmt.Sprintf("%-18s %s ours = %s (goal %s): %s", c, m, format(m, a), what, mark(a >= limit)))
		}
	}
	ratio("loopback-1", "throughput", "quic-go", 0.95)
	ratio("loopback-8", "throughput", "quic-go", 0.95)
	atLeast("loopback-8", "jain", 0.98, ">= 0.98")
	ratio("rtt50-1", "throughput", "quic-go-large", 0.90)
	for _, ref := range []string{"quic-go-large", "quic-go"} {
		a, ok1 := med("rtt50-1", "ours", "time_to_90")
		b, ok2 := med("rtt50-1", ref, "time_to_90")
		if ok1 && ok2 {
			out = append(out, fmt.Sprintf("%-18s time_to_90 ours - %s = %+.2f s (goal <= +0.25 s): %s", "rtt50-1", ref, a-b, mark(a-b <= 0.25)))
		}
	}
	// The x/net/quic binding against plain x/net/quic.
	if a, ok := med("loopback-1", "ours-xquic", "throughput"); ok {
		if b, ok := med("loopback-1", "xquic", "throughput"); ok && b > 0 {
			out = append(out, fmt.Sprintf("%-18s throughput ours-xquic/xquic = %.3f (goal >= 0.95): %s", "loopback-1", a/b, mark(a/b >= 0.95)))
		}
	}
	// The TCP+TLS binding against the fastest TCP multiplexer of the run.
	if a, ok := med("loopback-1", "ours-tcp", "throughput"); ok {
		best, name := 0.0, ""
		for _, ref := range []string{"smux", "yamux"} {
			if b, ok := med("loopback-1", ref, "throughput"); ok && b > best {
				best, name = b, ref
			}
		}
		if best > 0 {
			out = append(out, fmt.Sprintf("%-18s throughput ours-tcp/%s = %.3f (goal >= 1.00, the fastest of smux and yamux): %s", "loopback-1", name, a/best, mark(a/best >= 1)))
		}
	}
	atLeast("stall-isolation", "fraction", 0.95, ">= 0.95")
	atMost("resume-latency", "rtts", 1.5, "<= 1.5")
	atMost("idle-streams", "bytes_per_stream", 4096, "<= 4096")
	if p, ok := med("memory-under-stall", "ours", "peak_heap_bytes"); ok {
		b, _ := med("memory-under-stall", "ours", "budget_bytes")
		mx := slices.Max(r.values[key{"memory-under-stall", "ours", "peak_heap_bytes"}])
		out = append(out, fmt.Sprintf("%-18s peak_heap_bytes ours = %s, max over reps %s, budget %s: %s", "memory-under-stall",
			format("peak_heap_bytes", p), format("peak_heap_bytes", mx), format("budget_bytes", b), mark(mx <= b)))
	}
	return out
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
