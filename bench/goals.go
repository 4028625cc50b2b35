package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// A goal is checked on paired values: for a ratio, each repetition's value
// of one implementation divided by its reference's in the same repetition
// (the two ran next to each other, see the run order in main), and the
// verdict is on the median of those ratios. The spread is reported as
// min–max, the interquartile range, and ± half the range relative to the
// median.

type goalResult struct {
	line string
	recs []result
}

func (g goalResult) records() []result { return g.recs }

// stats of the paired values of one goal.
type pstats struct {
	n                     int
	med, min, max, q1, q3 float64
}

func statsOf(v []float64) pstats {
	s := slices.Clone(v)
	sort.Float64s(s)
	q := func(p float64) float64 {
		if len(s) == 1 {
			return s[0]
		}
		x := p * float64(len(s)-1)
		i := int(math.Floor(x))
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (s[i+1]-s[i])*(x-float64(i))
	}
	return pstats{n: len(s), med: median(s), min: s[0], max: s[len(s)-1], q1: q(0.25), q3: q(0.75)}
}

// halfRange is ± half the min–max range relative to the median.
func (p pstats) halfRange() float64 {
	if p.med == 0 {
		return math.NaN()
	}
	return (p.max - p.min) / 2 / math.Abs(p.med)
}

func (p pstats) describe(f func(float64) string) string {
	if p.n == 1 {
		return "[1 repetition]"
	}
	return fmt.Sprintf("[%s–%s, IQR %s–%s, ±%.1f%%, n=%d]", f(p.min), f(p.max), f(p.q1), f(p.q3), 100*p.halfRange(), p.n)
}

func ptr(v float64) *float64 { return &v }

func check(op string, v, limit float64) bool {
	if op == "<=" {
		return v <= limit
	}
	return v >= limit
}

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

// goals checks the targets of the issues against this run.
func (r *runner) goals() []goalResult {
	var out []goalResult
	f3 := func(v float64) string { return fmt.Sprintf("%.3f", v) }

	// ratio: impl's metric over the reference's, per repetition. With
	// several references, each repetition takes the best of them: the
	// largest for a higher-is-better metric (op ">="), the smallest for a
	// cost (op "<=").
	// info, when set, makes the next ratio a line for its spread only:
	// another line gives that goal's verdict.
	info := ""
	ratio := func(c, metric, impl string, refs []string, op string, limit float64) {
		defer func() { info = "" }()
		a := r.byRep(key{c, impl, metric})
		if len(a) == 0 {
			return
		}
		var ratios []float64
		used := map[string]int{}
		for rep, av := range a {
			best, name := math.NaN(), ""
			for _, ref := range refs {
				b, ok := r.byRep(key{c, ref, metric})[rep]
				if !ok || b <= 0 {
					continue
				}
				if math.IsNaN(best) || (op == ">=" && b > best) || (op == "<=" && b < best) {
					best, name = b, ref
				}
			}
			if name == "" {
				continue
			}
			used[name]++
			ratios = append(ratios, av/best)
		}
		if len(ratios) == 0 {
			return
		}
		st := statsOf(ratios)
		ok := check(op, st.med, limit)
		refName := strings.Join(refs, "|")
		if len(refs) > 1 {
			var picked []string
			for _, ref := range refs {
				if used[ref] > 0 {
					picked = append(picked, fmt.Sprintf("%s %d×", ref, used[ref]))
				}
			}
			what := "fastest"
			if op == "<=" {
				what = "best"
			}
			refName = fmt.Sprintf("%s of %s (%s)", what, strings.Join(refs, ","), strings.Join(picked, ", "))
		}
		verdict := mark(ok)
		if info != "" {
			verdict = info
		}
		line := fmt.Sprintf("%-15s %s %s / %s = %.3f %s (goal %s %.2f): %s", c, metric, impl, refName, st.med, st.describe(f3), op, limit, verdict)
		if st.halfRange() > 0.05 && st.n > 1 {
			line += fmt.Sprintf("; spread ±%.1f%% is over ±5%%", 100*st.halfRange())
		}
		goal := fmt.Sprintf("%s %g", op, limit)
		ref := strings.Join(refs, ",")
		metP := &ok
		if info != "" {
			metP, goal = nil, ""
		}
		out = append(out, goalResult{line: line, recs: []result{
			{Case: c, Impl: impl, Metric: "ratio", Value: st.med, Unit: "ratio", Of: metric, Reference: ref, Goal: goal, Met: metP, N: st.n},
			{Case: c, Impl: impl, Metric: "spread", Value: st.halfRange(), Unit: "fraction", Of: metric, Reference: ref, N: st.n,
				Min: ptr(st.min), Max: ptr(st.max), Q1: ptr(st.q1), Q3: ptr(st.q3)},
		}})
	}
	// value: impl's own metric, the median over the repetitions.
	value := func(c, metric, impl, op string, limit float64) {
		v := r.vals(key{c, impl, metric})
		if len(v) == 0 {
			return
		}
		st := statsOf(v)
		ok := check(op, st.med, limit)
		ff := func(x float64) string { return format(metric, x) }
		line := fmt.Sprintf("%-15s %s %s = %s %s (goal %s %s): %s", c, metric, impl, ff(st.med), st.describe(ff), op, ff(limit), mark(ok))
		goal := fmt.Sprintf("%s %g", op, limit)
		out = append(out, goalResult{line: line, recs: []result{
			{Case: c, Impl: impl, Metric: "spread", Value: st.halfRange(), Unit: "fraction", Of: metric, Goal: goal, Met: &ok, N: st.n,
				Min: ptr(st.min), Max: ptr(st.max), Q1: ptr(st.q1), Q3: ptr(st.q3)},
		}})
	}
	// diff: impl's metric minus the reference's, per repetition.
	diff := func(c, metric, impl, ref string, limit float64) {
		a, b := r.byRep(key{c, impl, metric}), r.byRep(key{c, ref, metric})
		var d []float64
		for rep, av := range a {
			if bv, ok := b[rep]; ok {
				d = append(d, av-bv)
			}
		}
		if len(d) == 0 {
			return
		}
		st := statsOf(d)
		ok := st.med <= limit
		fs := func(x float64) string { return fmt.Sprintf("%+.2f", x) }
		line := fmt.Sprintf("%-15s %s %s - %s = %+.2f s %s (goal <= %+.2f s): %s", c, metric, impl, ref, st.med, st.describe(fs), limit, mark(ok))
		out = append(out, goalResult{line: line, recs: []result{
			{Case: c, Impl: impl, Metric: "difference", Value: st.med, Unit: units[metric], Of: metric, Reference: ref, Goal: fmt.Sprintf("<= %g", limit), Met: &ok, N: st.n,
				Min: ptr(st.min), Max: ptr(st.max), Q1: ptr(st.q1), Q3: ptr(st.q3)},
		}})
	}

	tcpPeers := []string{"yamux", "smux", "http2"}
	holTCP := []string{"yamux", "smux", "http2", "ours-tcp"}
	ratio("loopback-1", "throughput", "ours", []string{"quic-go"}, ">=", 0.95)
	ratio("loopback-8", "throughput", "ours", []string{"quic-go"}, ">=", 0.95)
	value("loopback-8", "jain", "ours", ">=", 0.98)
	ratio("loopback-1", "throughput", "ours-xquic", []string{"xquic"}, ">=", 0.95)
	ratio("cpu-per-gb", "cpu_seconds_per_gb", "ours", []string{"quic-go"}, "<=", 1.05)
	ratio("cpu-per-gb", "cpu_seconds_per_gb", "ours-tcp", tcpPeers, "<=", 1.00)
	ratio("tcp-loopback-1", "throughput", "ours-tcp", []string{"smux", "yamux"}, ">=", 1.00)
	ratio("tcp-loopback-1", "cpu_seconds_per_gb", "ours-tcp", []string{"smux", "yamux"}, "<=", 1.00)
	ratio("rtt50-1", "throughput", "ours", []string{"quic-go-large"}, ">=", 0.90)
	// What the path can decide: no implementation moves more than the cap,
	// and a reference held by its default window moves at most window/RTT
	// (its budget for one stream, impls.go): yamux 256 KiB and http2 1 MiB
	// over 50 ms, 5.2 and 21 MB/s. Where the cap is under the goal times
	// that bound, the goal is out of the path's reach: a measured ratio over
	// it says only how far under its own bound the reference ran (yamux's
	// half-window updates hold it at 2.2-3.1 MB/s, and its verdict flipped
	// between runs at the edge). The ratio is shown, with no verdict;
	// rtt50-1-500, whose cap has room, decides the goal.
	capBound := func(c string, mbit int64, ref string, limit float64) {
		im, ok := implByName(ref)
		if !ok {
			return
		}
		window := im.budget(1)
		bound := float64(window) / rtt.Seconds() / 1e6
		capMB := float64(mbit) / 8
		if capMB >= limit*bound {
			return
		}
		info = fmt.Sprintf("NOT DECIDED here: the %d Mbit/s cap (%.1f MB/s) is under %g× %s's window bound (%d KiB / %v = %.1f MB/s); rtt50-1-500 decides it",
			mbit, capMB, limit, ref, window>>10, rtt, bound)
	}
	capBound("rtt50-1", rttRateMbit, "yamux", 10)
	ratio("rtt50-1", "throughput", "ours", []string{"yamux"}, ">=", 10)
	capBound("rtt50-1", rttRateMbit, "http2", 2.5)
	ratio("rtt50-1", "throughput", "ours", []string{"http2"}, ">=", 2.5)
	capBound("rtt50-1-500", fastRateMbit, "yamux", 10)
	ratio("rtt50-1-500", "throughput", "ours", []string{"quic-go-large"}, ">=", 0.90)
	ratio("rtt50-1-500", "throughput", "ours", []string{"yamux"}, ">=", 10)
	capBound("rtt50-1-500", fastRateMbit, "http2", 2.5)
	ratio("rtt50-1-500", "throughput", "ours", []string{"http2"}, ">=", 2.5)
	diff("rtt50-1", "time_to_90", "ours", "quic-go-large", 0.25)
	diff("rtt50-1", "time_to_90", "ours", "quic-go", 0.25)
	info = "per repetition, for the spread; the verdict is on the pooled line below"
	ratio("hol-latency", "p99_ms", "ours", holTCP, "<=", 0.5)
	// A repetition holds 100-odd round trips for QUIC and fewer for TCP,
	// so its p99 is one of its two or three slowest: the tail is better
	// read from every round trip of the run, pooled over the repetitions.
	if pool := r.holPool["ours"]; len(pool) > 0 {
		pooled := func(impl string) (float64, int) {
			v := slices.Clone(r.holPool[impl])
			if len(v) == 0 {
				return math.NaN(), 0
			}
			sort.Float64s(v)
			return nearestRank(v, 0.99), len(v)
		}
		a, na := pooled("ours")
		best, name, nb := math.NaN(), "", 0
		for _, ref := range holTCP {
			if b, n := pooled(ref); n > 0 && (math.IsNaN(best) || b < best) {
				best, name, nb = b, ref, n
			}
		}
		if name != "" {
			ok := a/best <= 0.5
			out = append(out, goalResult{
				line: fmt.Sprintf("%-15s p99_ms pooled over the repetitions: ours %.1f ms (%d round trips) / best TCP-based %s %.1f ms (%d) = %.3f (goal <= 0.50): %s",
					"hol-latency", a, na, name, best, nb, a/best, mark(ok)),
				recs: []result{{Case: "hol-latency", Impl: "ours", Metric: "ratio", Value: a / best, Unit: "ratio", Of: "p99_ms_pooled", Reference: name, Goal: "<= 0.5", Met: &ok, N: na}},
			})
		}
	}
	value("loss-8", "jain", "ours", ">=", 0.98)
	value("stall-isolation", "fraction", "ours", ">=", 0.95)
	value("resume-latency", "rtts", "ours", "<=", 1.5)
	value("idle-streams", "bytes_per_stream", "ours", "<=", 4500)
	// Receive buffering never exceeds the budget, over every binding.
	for _, impl := range []string{"ours", "ours-tcp", "ours-xquic"} {
		v := r.vals(key{"memory-under-stall", impl, "peak_heap_bytes"})
		if len(v) == 0 {
			continue
		}
		b := median(r.vals(key{"memory-under-stall", impl, "budget_bytes"}))
		mx := slices.Max(v)
		ok := mx <= b
		out = append(out, goalResult{line: fmt.Sprintf("%-15s peak_heap_bytes %s = %s, max over reps %s, budget %s: %s", "memory-under-stall", impl,
			format("peak_heap_bytes", median(v)), format("peak_heap_bytes", mx), format("budget_bytes", b), mark(ok)),
			recs: []result{{Case: "memory-under-stall", Impl: impl, Metric: "spread", Value: statsOf(v).halfRange(), Unit: "fraction", Of: "peak_heap_bytes",
				Goal: fmt.Sprintf("<= %g", b), Met: &ok, N: len(v), Min: ptr(slices.Min(v)), Max: ptr(mx)}}})
	}
	return out
}
