package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/bpmux/bp/interop/link"
	"github.com/bpmux/bp/transport"
)

// rtt is the round-trip time of the rtt cases: 25 ms each way through the
// impairment proxy or the packet-level link.
const rtt = 50 * time.Millisecond

// timing holds every duration of a run; -quick shortens them.
type timing struct {
	reps, reps8, tcpReps, rttReps, holReps   int
	lossReps                                 int
	stallReps, resumeReps, memReps, idleReps int
	warm, measure                            time.Duration // loopback cases
	rttRun, rttSkip, rttFinal                time.Duration // rtt50-1 and loss-8
	holWarm, holRun                          time.Duration // hol-latency
	lossRun                                  time.Duration // loss-8 (skips rttSkip)
	resumeFlow, resumePause, resume          time.Duration // resume-latency
	stallFlow, stallHold                     time.Duration // memory-under-stall
	idleStreams                              int
}

// setReps sets every case's repetitions to n (-reps).
func (t *timing) setReps(n int) {
	t.reps, t.reps8, t.tcpReps, t.rttReps, t.holReps, t.lossReps = n, n, n, n, n, n
	t.stallReps, t.resumeReps, t.memReps, t.idleReps = n, n, n, n
}

var fullTiming = timing{
	reps: 9, reps8: 8, tcpReps: 5, rttReps: 2, holReps: 3, lossReps: 2,
	stallReps: 2, resumeReps: 2, memReps: 4, idleReps: 2,
	warm: 400 * time.Millisecond, measure: 1200 * time.Millisecond,
	rttRun: 3 * time.Second, rttSkip: time.Second, rttFinal: time.Second,
	holWarm: 500 * time.Millisecond, holRun: 8 * time.Second, lossRun: 5 * time.Second,
	resumeFlow: time.Second, resumePause: 1500 * time.Millisecond, resume: 500 * time.Millisecond,
	stallFlow: 500 * time.Millisecond, stallHold: 1500 * time.Millisecond,
	idleStreams: 10000,
}

var quickTiming = timing{
	reps: 1, reps8: 1, tcpReps: 1, rttReps: 1, holReps: 1, lossReps: 1,
	stallReps: 1, resumeReps: 1, memReps: 1, idleReps: 1,
	warm: 250 * time.Millisecond, measure: 500 * time.Millisecond,
	rttRun: 1500 * time.Millisecond, rttSkip: 750 * time.Millisecond, rttFinal: 500 * time.Millisecond,
	holWarm: 500 * time.Millisecond, holRun: 2 * time.Second, lossRun: 1500 * time.Millisecond,
	resumeFlow: 600 * time.Millisecond, resumePause: time.Second, resume: 300 * time.Millisecond,
	stallFlow: 300 * time.Millisecond, stallHold: 700 * time.Millisecond,
	idleStreams: 10000,
}

// A caseDef runs one repetition of a case for one implementation and
// records its metrics.
type caseDef struct {
	name string
	link bool // runs on the packet-level link (root only)
	run  func(r *runner, im impl) error
	// runAll, if set, runs one repetition for all implementations at once.
	runAll func(r *runner, ims []impl) error
	reps   func(t timing) int
	// impls and quick are the implementations a full and a -quick run use
	// (nil: all); only, if set, bounds what -impls may choose.
	impls, quick, only []string
	// notQuick leaves the case out of -quick runs.
	notQuick bool
	// alias names the case that measures this one (cpu-per-gb comes from
	// loopback-1's runs): run alone, this case runs that one's runs.
	alias string
}

// implsFor returns the implementations c runs: chosen (from -impls) if
// given, else c's defaults, in the order of chosen (the order of impls by
// default).
func (c caseDef) implsFor(chosen []impl, given, quick bool) []impl {
	want := c.impls
	if quick && c.quick != nil {
		want = c.quick
	}
	if given {
		want = c.only
	}
	var out []impl
	for _, im := range chosen {
		if want == nil || slices.Contains(want, im.name) {
			out = append(out, im)
		}
	}
	return out
}

var (
	allQUIC   = []string{"ours", "quic-go", "quic-go-large", "ours-xquic"}
	tcpBased  = []string{"ours-tcp", "smux", "yamux", "http2"}
	pathImpls = append(slices.Clone(allQUIC), tcpBased...) // every impl but plain xquic
)

var cases = []caseDef{
	{name: "loopback-1", run: runLoopback1, reps: func(t timing) int { return t.reps },
		quick: []string{"ours", "quic-go", "ours-xquic", "xquic", "ours-tcp", "smux", "yamux", "http2"}},
	{name: "cpu-per-gb", alias: "loopback-1", run: runLoopback1, reps: func(t timing) int { return t.reps },
		quick: []string{"ours", "quic-go", "ours-xquic", "xquic", "ours-tcp", "smux", "yamux", "http2"}},
	{name: "loopback-8", run: runLoopback8, reps: func(t timing) int { return t.reps8 },
		impls: pathImpls, quick: []string{"ours", "quic-go", "ours-tcp", "smux"}},
	{name: "tcp-loopback-1", run: runTCPLoopback1, reps: func(t timing) int { return t.tcpReps },
		impls: []string{"ours-tcp", "smux", "yamux"}, only: []string{"ours-tcp", "smux", "yamux", "http2"}},
	{name: "rtt50-1", link: true, run: runRTT50, reps: func(t timing) int { return t.rttReps },
		impls: pathImpls, quick: []string{"ours", "quic-go-large", "yamux", "http2"}},
	{name: "rtt50-1-500", link: true, run: runRTT50Fast, reps: func(t timing) int { return t.rttReps },
		impls: []string{"ours", "quic-go-large", "yamux", "http2"}, notQuick: true},
	{name: "hol-latency", link: true, run: runHOL, reps: func(t timing) int { return t.holReps },
		impls: []string{"ours", "quic-go", "ours-xquic", "ours-tcp", "smux", "yamux", "http2"},
		quick: []string{"ours", "ours-tcp", "smux", "yamux", "http2"}},
	{name: "loss-8", link: true, run: runLoss8, reps: func(t timing) int { return t.lossReps },
		impls: []string{"ours", "quic-go", "ours-xquic", "ours-tcp", "smux", "yamux", "http2"},
		quick: []string{"ours", "quic-go", "ours-tcp"}},
	{name: "stall-isolation", run: runStallIsolation, reps: func(t timing) int { return t.stallReps },
		impls: pathImpls, quick: []string{"ours", "quic-go"}},
	// quic-go-large is left out: its writer is never blocked by a 1.5 s pause.
	{name: "resume-latency", run: runResume, reps: func(t timing) int { return t.resumeReps },
		impls: []string{"ours", "quic-go", "ours-xquic", "ours-tcp", "smux", "yamux", "http2"}, quick: []string{"ours", "quic-go"}},
	{name: "idle-streams", runAll: runIdleAll, reps: func(t timing) int { return t.idleReps },
		quick: []string{"ours", "quic-go"}},
	{name: "memory-under-stall", run: runMemoryUnderStall, reps: func(t timing) int { return t.memReps },
		impls: pathImpls, quick: []string{"ours"}},
}

// ---- one measurement ----

// path is where a measurement runs: loopback (neither set), through the
// userspace delay proxy at 50 ms RTT, or on the packet-level link.
type path struct {
	viaProxy bool
	link     *linkSetting
}

type plan struct {
	streams int
	path    path
	dur     time.Duration // from the start of writing to the server's reply
	// stall returns the reader's pause for stream i, relative to the
	// start (to == 0: none).
	stall     func(i int) (from, to time.Duration)
	chunk     int
	logWrites bool
	peak      bool // sample the server's heap
	// cpuFrom and cpuTo, if cpuTo > 0, bound the window (relative to the
	// start) over which the client process's CPU time is taken.
	cpuFrom, cpuTo time.Duration
	// echo adds a request/response stream (hol-latency) beside the
	// streams: 1 KiB each way, back to back, from the start to the end;
	// the round trips that start after echoWarm are kept.
	echo     bool
	echoWarm time.Duration
}

// linkDir is one direction of the link: 25 ms, a rate cap, a drop-tail
// queue of one bandwidth-delay product (rate × RTT) in bytes, and loss.
func linkDir(rateMbit int64, loss float64) link.Direction {
	rate := rateMbit * link.Mbit
	return link.Direction{Delay: rtt / 2, Rate: rate, QueueBytes: int(rate * int64(rtt) / int64(time.Second)), Loss: loss}
}

// linkPathFor is the link of a case: both directions alike, with one seed
// per repetition, so every implementation of a repetition meets the same
// random decisions for the same packet sequence.
func (r *runner) linkPathFor(rateMbit int64, loss float64) path {
	d := linkDir(rateMbit, loss)
	return path{link: &linkSetting{AtoB: d, BtoA: d, Seed: uint64(1 + r.rep)}}
}

type outcome struct {
	t0        int64           // when the writers started
	clientCPU float64         // the client process's CPU seconds in [cpuFrom, cpuTo]
	latencies []time.Duration // echo round trips started after echoWarm
	replies   []*reply
	logs      []*writeLog
	base      int64 // server heap before the streams opened (after GC)
	peakLive  int64 // highest server heap after GC during the run
	peakRaw   int64 // highest server heap sampled without GC
}

const writeChunk = 64 << 10

var payload = make([]byte, writeChunk)

func (r *runner) measure(im impl, p plan) (*outcome, error) {
	onLink := p.path.link != nil
	if onLink {
		if err := r.link.set(*p.path.link); err != nil {
			return nil, err
		}
	}
	ch, err := r.startChild(im, false, onLink)
	if err != nil {
		return nil, err
	}
	defer ch.stop()
	addr := ch.addr
	if p.path.viaProxy {
		px, err := newDelayProxy(im.udp, addr, rtt/2)
		if err != nil {
			return nil, err
		}
		defer px.Close()
		addr = px.Addr()
	}
	var cl client
	if onLink {
		err = r.link.runInA(func() (err error) { cl, err = r.dial(im, addr, ch.pin, opts{}); return err })
	} else {
		cl, err = r.dial(im, addr, ch.pin, opts{})
	}
	if err != nil {
		return nil, err
	}
	var closeOnce sync.Once
	closeClient := func() { closeOnce.Do(func() { cl.Close() }) }
	defer closeClient()

	out := &outcome{replies: make([]*reply, p.streams), logs: make([]*writeLog, p.streams)}
	if p.peak {
		if out.base, err = ch.callInt("mem", "mem", 1, 30*time.Second); err != nil {
			return nil, err
		}
		if _, err := ch.call("peak-start", 5*time.Second); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type rwc interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
		Close() error
	}
	streams := make([]rwc, 0, p.streams)
	for range p.streams {
		st, err := cl.Open(ctx)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		streams = append(streams, st)
	}
	var echo rwc
	if p.echo {
		if echo, err = cl.Open(ctx); err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
	}
	t0 := time.Now().Add(5 * time.Millisecond)
	out.t0 = t0.UnixNano()
	end := t0.Add(p.dur)
	// The watchdog: whatever happens, the run ends 15 s after its end.
	wd := time.AfterFunc(time.Until(end)+15*time.Second, closeClient)
	defer wd.Stop()

	var wg sync.WaitGroup
	errs := make([]error, p.streams+1)
	chunk := p.chunk
	if chunk == 0 {
		chunk = writeChunk
	}
	for i, st := range streams {
		h := header{Mode: modeSink, Start: t0.UnixNano(), End: end.UnixNano(), SampleEvry: int64(10 * time.Millisecond)}
		if p.stall != nil {
			if from, to := p.stall(i); to > 0 {
				h.StallFrom, h.StallTo = t0.Add(from).UnixNano(), t0.Add(to).UnixNano()
			}
		}
		if p.logWrites {
			out.logs[i] = &writeLog{times: make([]int64, 0, 1<<16)}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(t0))
			out.replies[i], errs[i] = drive(st, h, chunk, payload, out.logs[i])
		}()
	}
	if p.echo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.latencies, errs[p.streams] = driveEcho(echo, t0, t0.Add(p.echoWarm), end)
		}()
	}
	var cpuWG sync.WaitGroup
	if p.cpuTo > 0 {
		cpuWG.Add(1)
		go func() {
			defer cpuWG.Done()
			time.Sleep(time.Until(t0.Add(p.cpuFrom)))
			c0 := cpuNow()
			time.Sleep(time.Until(t0.Add(p.cpuTo)))
			out.clientCPU = float64(cpuNow()-c0) / 1e9
		}()
	}
	wg.Wait()
	cpuWG.Wait()
	if !wd.Stop() {
		return nil, fmt.Errorf("%s: the run did not end within 15 s of its end (watchdog closed the session)", im.name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if p.peak {
		// The peak is the run's, to its End: not the replies' allocations.
		f, err := ch.call(fmt.Sprintf("peak-stop %d", end.UnixNano()), 10*time.Second)
		if err != nil {
			return nil, err
		}
		if len(f) != 3 || f[0] != "peak" {
			return nil, fmt.Errorf("server process: unexpected answer %q", f)
		}
		fmt.Sscan(f[1], &out.peakLive)
		fmt.Sscan(f[2], &out.peakRaw)
	}
	return out, nil
}

// driveEcho runs the request/response stream: a header, then 1 KiB
// requests, each sent once the previous response has been read whole,
// until end. It returns the round trips of the requests sent after from.
func driveEcho(st interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}, t0, from, end time.Time) ([]time.Duration, error) {
	defer st.Close()
	h := header{Mode: modeEcho, Start: t0.UnixNano(), End: end.UnixNano(), SampleEvry: 1}
	if _, err := st.Write(h.marshal()); err != nil {
		return nil, fmt.Errorf("echo: write header: %w", err)
	}
	time.Sleep(time.Until(t0))
	req, resp := make([]byte, echoSize), make([]byte, echoSize)
	lat := make([]time.Duration, 0, 4096)
	for {
		start := time.Now()
		if !start.Before(end) {
			return lat, nil
		}
		if _, err := st.Write(req); err != nil {
			return nil, fmt.Errorf("echo: write: %w", err)
		}
		if _, err := io.ReadFull(st, resp); err != nil {
			return nil, fmt.Errorf("echo: read: %w", err)
		}
		if start.After(from) {
			lat = append(lat, time.Since(start))
		}
	}
}

func (r *runner) dial(im impl, addr, pin string, o opts) (client, error) {
	tlsConf, err := transport.PinnedClientConfig(pin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := im.dial(ctx, addr, tlsConf.Clone(), o)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", im.name, err)
	}
	return cl, nil
}

var _ = tls.VersionTLS13

// rate returns the MB/s (1e6 bytes/s) a reply shows over [from, to].
func rate(rp *reply, from, to int64) float64 {
	return (rp.bytesAt(to) - rp.bytesAt(from)) / (float64(to-from) / 1e9) / 1e6
}

// ---- the cases ----

// loopback runs n streams on loopback and returns each stream's rate over
// the measured window and the CPU seconds both processes spent per GB
// moved in it.
func (r *runner) loopback(im impl, n int) ([]float64, float64, error) {
	t := r.t
	o, err := r.measure(im, plan{streams: n, dur: t.warm + t.measure, cpuFrom: t.warm, cpuTo: t.warm + t.measure})
	if err != nil {
		return nil, 0, err
	}
	from, to := o.t0+int64(t.warm), o.t0+int64(t.warm+t.measure)
	per := make([]float64, n)
	bytes := 0.0
	for i, rp := range o.replies {
		per[i] = rate(rp, from, to)
		bytes += rp.bytesAt(to) - rp.bytesAt(from)
	}
	cpu := o.clientCPU + o.replies[0].cpuAt(to) - o.replies[0].cpuAt(from)
	perGB := math.NaN()
	if bytes > 0 {
		perGB = cpu / (bytes / 1e9)
	}
	return per, perGB, nil
}

// runLoopback1 records loopback-1's throughput and, from the same runs,
// cpu-per-gb.
func runLoopback1(r *runner, im impl) error {
	per, cpu, err := r.loopback(im, 1)
	if err != nil {
		return err
	}
	r.record("loopback-1", im.name, "throughput", per[0])
	r.record("cpu-per-gb", im.name, "cpu_seconds_per_gb", cpu)
	return nil
}

func runTCPLoopback1(r *runner, im impl) error {
	per, cpu, err := r.loopback(im, 1)
	if err != nil {
		return err
	}
	r.record("tcp-loopback-1", im.name, "throughput", per[0])
	r.record("tcp-loopback-1", im.name, "cpu_seconds_per_gb", cpu)
	return nil
}

func jain(per []float64) float64 {
	sum, sq := 0.0, 0.0
	for _, x := range per {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return math.NaN()
	}
	return sum * sum / (float64(len(per)) * sq)
}

func runLoopback8(r *runner, im impl) error {
	per, cpu, err := r.loopback(im, 8)
	if err != nil {
		return err
	}
	sum := 0.0
	for _, x := range per {
		sum += x
	}
	r.record("loopback-8", im.name, "throughput", sum)
	if j := jain(per); !math.IsNaN(j) {
		r.record("loopback-8", im.name, "jain", j)
	}
	r.record("loopback-8", im.name, "cpu_seconds_per_gb", cpu)
	return nil
}

func runStallIsolation(r *runner, im impl) error {
	t := r.t
	dur := t.warm + t.measure
	// Stream 0's reader stops halfway through the warm-up, once its window
	// has grown, and stays stopped to the end; the other 7 keep reading.
	withStall, err := r.measure(im, plan{streams: 8, dur: dur,
		stall: func(i int) (time.Duration, time.Duration) {
			if i == 0 {
				return t.warm / 2, dur + time.Hour
			}
			return 0, 0
		}})
	if err != nil {
		return err
	}
	alone, err := r.measure(im, plan{streams: 7, dur: dur})
	if err != nil {
		return err
	}
	sum := func(o *outcome, skip int) float64 {
		s := 0.0
		for i, rp := range o.replies {
			if i >= skip {
				s += rate(rp, o.t0+int64(t.warm), o.t0+int64(dur))
			}
		}
		return s
	}
	with, base := sum(withStall, 1), sum(alone, 0)
	r.record("stall-isolation", im.name, "throughput", with)
	if base > 0 {
		r.record("stall-isolation", im.name, "fraction", with/base)
	}
	return nil
}

func runResume(r *runner, im impl) error {
	t := r.t
	flow, pause := t.resumeFlow, t.resumePause
	o, err := r.measure(im, plan{streams: 1, path: path{viaProxy: true}, dur: flow + pause + t.resume, chunk: 16 << 10, logWrites: true,
		stall: func(int) (time.Duration, time.Duration) { return flow, flow + pause }})
	if err != nil {
		return err
	}
	resumed := o.replies[0].Resumed
	if r.verbose {
		fmt.Fprintf(os.Stderr, "  resume-latency %s: resumed at %.0f ms; %s\n", im.name, float64(resumed-o.t0)/1e6, describeWrites(o.logs[0].times, o.t0))
	}
	if resumed == 0 {
		return fmt.Errorf("%s: the server's reader never resumed", im.name)
	}
	times := o.logs[0].times
	i := sort.Search(len(times), func(i int) bool { return times[i] > resumed })
	if i == len(times) {
		r.note("resume-latency %s: the writer did not move after the reader resumed", im.name)
		return nil
	}
	if i > 0 && resumed-times[i-1] < int64(2*rtt) {
		r.note("resume-latency %s: the writer was not blocked when the reader resumed (last write %.0f ms before): its buffers outlast a %v pause",
			im.name, float64(resumed-times[i-1])/1e6, pause)
		return nil
	}
	r.record("resume-latency", im.name, "rtts", float64(times[i]-resumed)/float64(rtt))
	return nil
}

// idleSettle is how long the idle streams sit before the heap is read:
// longer than any implementation's release of a quiet stream's buffers
// (ours drops a stream's receive buffer after 2 s without data, checked
// every second).
const idleSettle = 3500 * time.Millisecond

type idleRun struct {
	im     impl
	ch     *child
	cl     client
	before int64 // server heap with one stream open
	// the same, split, and the goroutines
	heapBefore, stackBefore, gBefore int64
	opened                           int64 // server heap right after the n streams arrived
}

func (x *idleRun) close() {
	if x.cl != nil {
		x.cl.Close()
	}
	if x.ch != nil {
		x.ch.stop()
	}
}

// runIdleAll runs one repetition of idle-streams for every
// implementation: each opens its streams (one after another), then all sit
// idle together for idleSettle, then each server's heap is read. Each
// server is a process of its own, so their heaps do not mix.
func runIdleAll(r *runner, ims []impl) error {
	runs := make([]*idleRun, 0, len(ims))
	defer func() {
		for _, x := range runs {
			x.close()
		}
	}()
	for _, im := range ims {
		x := &idleRun{im: im}
		runs = append(runs, x)
		if err := r.idleOpen(x); err != nil {
			return fmt.Errorf("%s: %w", im.name, err)
		}
	}
	time.Sleep(idleSettle)
	n := r.t.idleStreams
	for _, x := range runs {
		f, err := x.ch.call("mem", 30*time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", x.im.name, err)
		}
		var after, heap, stack, gs int64
		if len(f) != 6 || f[0] != "mem" {
			return fmt.Errorf("%s: server process: unexpected answer %q", x.im.name, f)
		}
		fmt.Sscan(f[1], &after)
		fmt.Sscan(f[3], &heap)
		fmt.Sscan(f[4], &stack)
		fmt.Sscan(f[5], &gs)
		d := func(v, base int64) float64 { return float64(v-base) / float64(n-1) }
		r.note("idle-streams %s: %.0f bytes per stream right after opening, %.0f after %v idle (heap %.0f + stack %.0f; %.2f goroutines per stream)",
			x.im.name, d(x.opened, x.before), d(after, x.before), idleSettle, d(heap, x.heapBefore), d(stack, x.stackBefore), d(gs, x.gBefore))
		r.record("idle-streams", x.im.name, "bytes_per_stream", float64(after-x.before)/float64(n-1))
	}
	return nil
}

func (r *runner) idleOpen(x *idleRun) error {
	n, im := r.t.idleStreams, x.im
	var err error
	if x.ch, err = r.startChild(im, true, false); err != nil {
		return err
	}
	if x.cl, err = r.dial(im, x.ch.addr, x.ch.pin, opts{manyStreams: true}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hdr := header{Mode: modeIdle, SampleEvry: 1}.marshal()
	open := func(k int) error {
		for j := range k {
			st, err := x.cl.Open(ctx)
			if err != nil {
				return fmt.Errorf("open stream %d: %w", j, err)
			}
			if _, err := st.Write(hdr); err != nil {
				return fmt.Errorf("stream %d: write: %w", j, err)
			}
		}
		return nil
	}
	wait := func(k int64) error {
		deadline := time.Now().Add(90 * time.Second)
		for {
			f, err := x.ch.call("count", 10*time.Second)
			if err != nil {
				return err
			}
			var held, bad int64
			fmt.Sscan(f[1], &held)
			fmt.Sscan(f[2], &bad)
			switch {
			case bad > 0:
				return fmt.Errorf("the server saw %d broken streams", bad)
			case held >= k:
				return nil
			case time.Now().After(deadline):
				return fmt.Errorf("only %d of %d idle streams arrived within 90 s", held, k)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// One stream first, so that the baseline has every per-session
	// structure and code path warm; then the other n-1, for n in all.
	if err := open(1); err != nil {
		return err
	}
	if err := wait(1); err != nil {
		return err
	}
	f, err := x.ch.call("mem", 30*time.Second)
	if err != nil {
		return err
	}
	if len(f) != 6 || f[0] != "mem" {
		return fmt.Errorf("server process: unexpected answer %q", f)
	}
	fmt.Sscan(f[1], &x.before)
	fmt.Sscan(f[3], &x.heapBefore)
	fmt.Sscan(f[4], &x.stackBefore)
	fmt.Sscan(f[5], &x.gBefore)
	start := time.Now()
	if err := open(n - 1); err != nil {
		return err
	}
	if err := wait(int64(n)); err != nil {
		return err
	}
	took := time.Since(start)
	if x.opened, err = x.ch.callInt("mem", "mem", 1, 30*time.Second); err != nil {
		return err
	}
	r.note("idle-streams %s: %d streams opened in %v", im.name, n, took.Round(time.Millisecond))
	return nil
}

func runMemoryUnderStall(r *runner, im impl) error {
	t := r.t
	const n = 8
	o, err := r.measure(im, plan{streams: n, dur: t.stallFlow + t.stallHold, peak: true,
		stall: func(int) (time.Duration, time.Duration) { return t.stallFlow, t.stallFlow + t.stallHold + time.Hour }})
	if err != nil {
		return err
	}
	r.note("memory-under-stall %s: baseline %d, live peak %d, raw (no GC) peak %d bytes", im.name, o.base, o.peakLive, o.peakRaw)
	r.record("memory-under-stall", im.name, "peak_heap_bytes", float64(o.peakLive-o.base))
	r.record("memory-under-stall", im.name, "budget_bytes", float64(im.budget(n)))
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// describeWrites summarises a write log around [from, to] for -v.
func describeWrites(times []int64, t0 int64) string {
	var b []byte
	last := t0
	for _, t := range times {
		if t-last > int64(20*time.Millisecond) {
			b = fmt.Appendf(b, " gap %.0f-%.0f ms;", float64(last-t0)/1e6, float64(t-t0)/1e6)
		}
		last = t
	}
	hist := make([]int, 0, 64)
	for _, t := range times {
		i := int((t - t0) / int64(100*time.Millisecond))
		for len(hist) <= i && len(hist) < 64 {
			hist = append(hist, 0)
		}
		if i < len(hist) {
			hist[i]++
		}
	}
	return fmt.Sprintf("%d writes, last at %.0f ms; writes per 100 ms %v;%s", len(times), float64(last-t0)/1e6, hist, b)
}
