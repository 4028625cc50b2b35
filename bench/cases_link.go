package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"time"
)

// The cases on the packet-level link between network namespaces:
// rtt50-1, rtt50-1-500, hol-latency and loss-8 (linkpath.go sets the link
// up).

// noteLink notes what the link did in a run that shows loss or drops.
func (r *runner) noteLink(c string, im impl, before linkStatsSnap) {
	after, err := r.link.stats()
	if err != nil || !r.verbose {
		return
	}
	ab, ba := after.AtoB, after.BtoA
	fmt.Fprintf(os.Stderr, "  %s %s link: a->b %d packets in, %d lost, %d queue drops; b->a %d in, %d lost, %d queue drops; since setup: queue peak %d B, scheduler late by up to %v\n",
		c, im.name, ab.PacketsIn-before.abIn, ab.DroppedLoss-before.abLoss, ab.DroppedQueue-before.abQueue,
		ba.PacketsIn-before.baIn, ba.DroppedLoss-before.baLoss, ba.DroppedQueue-before.baQueue, ab.QueuePeakBytes, max(ab.LatePeak, ba.LatePeak))
}

type linkStatsSnap struct{ abIn, abLoss, abQueue, baIn, baLoss, baQueue uint64 }

func (r *runner) linkSnap() linkStatsSnap {
	s, err := r.link.stats()
	if err != nil {
		return linkStatsSnap{}
	}
	return linkStatsSnap{s.AtoB.PacketsIn, s.AtoB.DroppedLoss, s.AtoB.DroppedQueue, s.BtoA.PacketsIn, s.BtoA.DroppedLoss, s.BtoA.DroppedQueue}
}

// The link cases' paths. -link-rate can change rttRateMbit, to see what
// the cap hides.
var (
	rttRateMbit int64 = 200 // rtt50-1 and loss-8
	holRateMbit int64 = 50  // hol-latency
	lossRate          = 0.01
)

// fastRateMbit is rtt50-1-500's cap: the rtt50-1 path with room above
// the default windows of yamux (256 KiB, at most 5.2 MB/s at 50 ms) and
// of http2 (Go's server: 1 MiB, at most 21 MB/s), so that their windows,
// not the cap, bound them. At 200 Mbit/s (25 MB/s) no implementation can
// be 2.5 times http2's 21 MB/s or ten times yamux's 2.4 MB/s.
const fastRateMbit = 500

func runRTT50(r *runner, im impl) error { return r.runRTT50At("rtt50-1", rttRateMbit, im) }

func runRTT50Fast(r *runner, im impl) error {
	return r.runRTT50At("rtt50-1-500", fastRateMbit, im)
}

// runRTT50At runs one repetition of an rtt50 case (c) for im: one stream,
// 50 ms RTT, no loss, capped at mbit with a BDP-sized queue.
func (r *runner) runRTT50At(c string, mbit int64, im impl) error {
	t := r.t
	snap := r.linkSnap()
	o, err := r.measure(im, plan{streams: 1, path: r.linkPathFor(mbit, 0), dur: t.rttRun})
	if err != nil {
		return err
	}
	r.noteLink(c, im, snap)
	rp := o.replies[0]
	end := o.t0 + int64(t.rttRun)
	r.record(c, im.name, "throughput", rate(rp, o.t0+int64(t.rttSkip), end))
	final := rate(rp, end-int64(t.rttFinal), end)
	// time_to_90: the first instant at which the preceding 100 ms moved at
	// least 90% of the final rate (the last rttFinal of the run).
	const win = int64(100 * time.Millisecond)
	for _, s := range rp.Samples {
		at := s[0]
		if at-win < o.t0 {
			continue
		}
		if rate(rp, at-win, at) >= 0.9*final && final > 0 {
			r.record(c, im.name, "time_to_90", float64(at-o.t0)/1e9)
			return nil
		}
	}
	r.note("%s %s: never reached 90%% of its final rate %.1f MB/s", c, im.name, final)
	return nil
}

// runHOL is hol-latency: one bulk stream and one request/response stream
// on one session, 50 ms RTT, 1 % loss each way, 50 Mbit/s.
func runHOL(r *runner, im impl) error {
	t := r.t
	snap := r.linkSnap()
	o, err := r.measure(im, plan{streams: 1, path: r.linkPathFor(holRateMbit, lossRate), dur: t.holWarm + t.holRun,
		echo: true, echoWarm: t.holWarm})
	if err != nil {
		return err
	}
	r.noteLink("hol-latency", im, snap)
	lat := o.latencies
	if len(lat) == 0 {
		r.note("hol-latency %s: no request/response completed after the warm-up", im.name)
		return nil
	}
	ms := make([]float64, len(lat))
	for i, d := range lat {
		ms[i] = float64(d) / 1e6
	}
	sort.Float64s(ms)
	r.holPool[im.name] = append(r.holPool[im.name], ms...)
	rank := func(p float64) float64 { return nearestRank(ms, p) }
	rp := o.replies[0]
	bulk := rate(rp, o.t0+int64(t.holWarm), o.t0+int64(t.holWarm+t.holRun))
	r.record("hol-latency", im.name, "p50_ms", rank(0.50))
	r.record("hol-latency", im.name, "p90_ms", rank(0.90))
	r.record("hol-latency", im.name, "p99_ms", rank(0.99))
	r.record("hol-latency", im.name, "throughput", bulk)
	if r.verbose {
		over := 0
		for _, x := range ms {
			if x > 2*float64(rtt/time.Millisecond) {
				over++
			}
		}
		fmt.Fprintf(os.Stderr, "  hol-latency %s: %d round trips, %d over 2 RTT, max %.1f ms, bulk %.2f MB/s\n", im.name, len(ms), over, ms[len(ms)-1], bulk)
	}
	return nil
}

// nearestRank returns the p-quantile of sorted by nearest rank.
func nearestRank(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// runLoss8 is loss-8: 8 streams at 50 ms RTT, 1 % loss each way, on the
// 200 Mbit/s link.
func runLoss8(r *runner, im impl) error {
	t := r.t
	snap := r.linkSnap()
	o, err := r.measure(im, plan{streams: 8, path: r.linkPathFor(rttRateMbit, lossRate), dur: t.lossRun})
	if err != nil {
		return err
	}
	r.noteLink("loss-8", im, snap)
	end := o.t0 + int64(t.lossRun)
	per := make([]float64, len(o.replies))
	sum := 0.0
	for i, rp := range o.replies {
		per[i] = rate(rp, o.t0+int64(t.rttSkip), end)
		sum += per[i]
	}
	r.record("loss-8", im.name, "goodput", sum)
	if j := jain(per); !math.IsNaN(j) {
		r.record("loss-8", im.name, "jain", j)
	}
	return nil
}
