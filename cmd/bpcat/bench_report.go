package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bpmux/bp/mux"
)

// benchReport collects a test's measurements and prints them: as
// iperf3 prints them (text, as they come), or as one iperf3-shaped JSON
// document at the end.
type benchReport struct {
	w       io.Writer
	json    bool
	bidir   bool
	reverse bool
	every   time.Duration
	stopAt  time.Time // when the senders stop
	sess    *mux.Session
	streams []*benchStream
	prev    []mux.StreamStats // at the last interval
	start   time.Time
	last    time.Time // the end of the last interval
	doc     iperfDoc
}

// benchMinInterval is the shortest interval reported (a last one cut
// short by the end of the test or an interrupt).
const benchMinInterval = 10 * time.Millisecond

func newBenchReport(w io.Writer, bf *benchFlags, addr, cookie string, sess *mux.Session, streams []*benchStream, start time.Time) *benchReport {
	r := &benchReport{w: w, json: bf.json, bidir: bf.bidir, reverse: bf.reverse, every: bf.interval,
		stopAt: start.Add(bf.duration), sess: sess, streams: streams, start: start, last: start,
		prev: make([]mux.StreamStats, len(streams))}
	for i, bs := range streams {
		r.prev[i] = bs.s.Stats()
	}
	lh, lp := benchHostPort(sess.LocalAddr())
	if ip := net.ParseIP(lh); ip != nil && ip.IsUnspecified() {
		lh = "*" // bound to every address: the one used is not known
	}
	rh, rp := benchHostPort(sess.RemoteAddr())
	host, port, _ := net.SplitHostPort(addr)
	pn, _ := strconv.Atoi(port)
	cfg := sessConfig(bf)
	r.doc.Start = iperfStart{
		Version:      benchVersion(),
		SystemInfo:   systemInfo(),
		Timestamp:    iperfTimestamp{Time: start.UTC().Format(time.RFC1123), Timesecs: start.Unix()},
		ConnectingTo: iperfHostPort{Host: host, Port: pn},
		Cookie:       cookie,
		TestStart: iperfTestStart{Protocol: "bp/1", NumStreams: bf.parallel, Blksize: copyBufSize,
			Duration: bf.duration.Seconds(), Reverse: b2i(bf.reverse), TargetBitrate: 8 * bf.rate,
			Bidir: b2i(bf.bidir), Interval: bf.interval.Seconds()},
		BP: bpStart{Protocol: "bp/1 over QUIC", InitialWindow: cfg.InitialWindow, MaxWindow: cfg.MaxWindow,
			SessionBudget: cfg.SessionBudget, DeadPeerSecond: bf.deadPeer.Seconds(),
			Measured: "bytes written by the sender; bytes read by the receiving application"},
	}
	for _, bs := range streams {
		r.doc.Start.Connected = append(r.doc.Start.Connected,
			iperfConnected{Socket: bs.s.ID(), LocalHost: lh, LocalPort: lp, RemoteHost: rh, RemotePort: rp})
	}
	r.doc.Intervals = []iperfInterval{}
	if !r.json {
		fmt.Fprintf(w, "Connecting to host %s, port %d\n", host, pn)
		if bf.reverse {
			fmt.Fprintf(w, "Reverse mode, remote host %s is sending\n", host)
		}
		for _, bs := range streams { // one QUIC connection carries every stream
			fmt.Fprintf(w, "[%3d] local %s port %d connected to %s port %d\n", bs.s.ID(), lh, lp, rh, rp)
		}
		fmt.Fprintf(w, "bp/1 over QUIC, one session: %s for %v", r.plan(bf), bf.duration)
		if bf.rate > 0 {
			fmt.Fprintf(w, ", each paced to %s", formatBits(8*float64(bf.rate)))
		}
		fmt.Fprintln(w)
		if r.every > 0 {
			fmt.Fprintf(w, "%s Interval           Transfer     Bitrate          Stalls      Window\n", r.idHeader())
		}
	}
	return r
}

// plan says in words which streams go which way.
func (r *benchReport) plan(bf *benchFlags) string {
	n := bf.parallel
	switch {
	case bf.bidir:
		return fmt.Sprintf("%d stream(s) each way", n)
	case bf.reverse:
		return fmt.Sprintf("%d stream(s) from the server", n)
	}
	return fmt.Sprintf("%d stream(s) to the server", n)
}

// sessConfig is the mux configuration the flags give (for the start
// section), with the library's defaults filled in.
func sessConfig(bf *benchFlags) mux.Config {
	cfg, err := bf.sessionFlags.config(nil)
	if err != nil {
		return mux.Config{}
	}
	if cfg == nil {
		cfg = &mux.Config{} // the defaults
	}
	c, err := cfg.WithDefaults()
	if err != nil {
		return mux.Config{}
	}
	return c
}

// main reports whether bs belongs to the main direction: "sum" and
// "sum_sent"/"sum_received" (the others, with --bidir, are the reverse).
func (r *benchReport) main(bs *benchStream) bool { return !r.bidir || bs.up }

func (r *benchReport) idHeader() string {
	if r.bidir {
		return "[ ID][Role]"
	}
	return "[ ID]"
}

// id labels a line: the stream's ID, and its role with --bidir (TX-C:
// this side sends; RX-C: it receives).
func (r *benchReport) id(label string, up bool) string {
	if !r.bidir {
		return "[" + label + "]"
	}
	if up {
		return "[" + label + "][TX-C]"
	}
	return "[" + label + "][RX-C]"
}

// interval records the interval from the last one to now.
func (r *benchReport) interval(now time.Time) {
	if r.every <= 0 || now.Sub(r.last) < benchMinInterval {
		return
	}
	t0, t1 := r.last.Sub(r.start).Seconds(), now.Sub(r.start).Seconds()
	secs := t1 - t0
	iv := iperfInterval{Streams: []iperfIntervalStream{}}
	sums := [2]*iperfIntervalSum{
		{Start: t0, End: t1, Seconds: secs, Sender: !r.reverse},
		{Start: t0, End: t1, Seconds: secs, Sender: false},
	}
	for i, bs := range r.streams {
		st, prev := bs.s.Stats(), r.prev[i]
		r.prev[i] = st
		e := iperfIntervalStream{Socket: bs.s.ID(), Start: t0, End: t1, Seconds: secs, Sender: bs.up}
		if bs.up {
			e.Bytes = st.BytesSent - prev.BytesSent
			e.BP = bpInterval{Window: st.SendLimit - st.PeerConsumed, Credit: st.SendCredit, InFlight: st.ConsumerLag,
				Stalls: st.Stalls - prev.Stalls, TimeStalledSeconds: (st.TimeStalled - prev.TimeStalled).Seconds()}
		} else {
			e.Bytes = st.BytesConsumed - prev.BytesConsumed
			e.BP = bpInterval{Window: st.RecvWindow, InFlight: st.Buffered, Stalls: st.BlockedReceived - prev.BlockedReceived}
		}
		e.BitsPerSecond = 8 * float64(e.Bytes) / secs
		iv.Streams = append(iv.Streams, e)
		sum := sums[0]
		if !r.main(bs) {
			sum = sums[1]
		}
		sum.Bytes += e.Bytes
		sum.BP.Stalls += e.BP.Stalls
		sum.BP.TimeStalledSeconds += e.BP.TimeStalledSeconds
		sum.BP.InFlight += e.BP.InFlight
	}
	for _, s := range sums {
		s.BitsPerSecond = 8 * float64(s.Bytes) / secs
	}
	iv.Sum = sums[0]
	if r.bidir {
		iv.SumBidirReverse = sums[1]
	}
	r.last = now
	r.doc.Intervals = append(r.doc.Intervals, iv)
	if r.json {
		return
	}
	for _, e := range iv.Streams {
		fmt.Fprintf(r.w, "%s %6.2f-%-6.2f sec  %s  %s  %6d  %10s\n", r.id(fmt.Sprintf("%3d", e.Socket), e.Sender),
			e.Start, e.End, formatBytesIperf(e.Bytes), formatBits(e.BitsPerSecond), e.BP.Stalls, formatSize(e.BP.Window))
	}
	if len(r.streams) > 1 {
		r.printIntervalSum(iv.Sum, true)
		if r.bidir {
			r.printIntervalSum(iv.SumBidirReverse, false)
		}
		fmt.Fprintln(r.w, "- - - - - - - - - - - - - - - - - - - - - - - - -")
	}
}

func (r *benchReport) printIntervalSum(s *iperfIntervalSum, up bool) {
	fmt.Fprintf(r.w, "%s %6.2f-%-6.2f sec  %s  %s  %6d\n", r.id("SUM", up),
		s.Start, s.End, formatBytesIperf(s.Bytes), formatBits(s.BitsPerSecond), s.BP.Stalls)
}

// finish prints the summary at now: the server's results res (nil when
// they did not arrive), this side's CPU, and err if the test did not
// complete.
func (r *benchReport) finish(now time.Time, res *benchResult, cpu cpuPercent, err error) {
	remote := map[uint64]benchStreamResult{}
	if res != nil {
		for _, sr := range res.Streams {
			remote[sr.ID] = sr
		}
	}
	sendSecs := min(now.Sub(r.start), r.stopAt.Sub(r.start)).Seconds()
	end := &r.doc.End
	end.Streams = []iperfEndStream{}
	var sums [2][2]iperfSum // [main, reverse][sent, received]
	var delivered [2][]float64
	for _, bs := range r.streams {
		st := bs.s.Stats()
		id := bs.s.ID()
		rs, haveRemote := remote[id]
		recvSecs := bs.finishedAt(now).Sub(r.start).Seconds()
		var snd, rcv iperfStreamEnd
		if bs.up {
			snd = iperfStreamEnd{Bytes: sat(st.BytesSent, benchHeaderLen), Seconds: sendSecs, BP: &bpStreamEnd{Stalls: st.Stalls,
				TimeStalledSeconds: st.TimeStalled.Seconds(), PeakInFlight: st.PeakConsumerLag, Window: st.SendLimit - st.PeerConsumed}}
			rcv = iperfStreamEnd{Bytes: sat(st.PeerConsumed, benchHeaderLen), Seconds: recvSecs}
			if haveRemote {
				rcv.Bytes, rcv.Seconds = rs.Bytes, max(rs.Seconds, recvSecs)
			}
		} else {
			snd = iperfStreamEnd{Bytes: st.BytesReceived, Seconds: sendSecs}
			if haveRemote {
				snd.Bytes, snd.Seconds = rs.Bytes, rs.Seconds
				snd.BP = &bpStreamEnd{Stalls: rs.Stalls, TimeStalledSeconds: rs.TimeStalled.Seconds(), PeakInFlight: rs.PeakLag, Window: rs.Window}
			}
			rcv = iperfStreamEnd{Bytes: st.BytesConsumed, Seconds: recvSecs}
		}
		for _, e := range []*iperfStreamEnd{&snd, &rcv} {
			e.Socket, e.End, e.Sender = id, e.Seconds, bs.up
			e.BitsPerSecond = 8 * float64(e.Bytes) / max(e.Seconds, 1e-9)
		}
		end.Streams = append(end.Streams, iperfEndStream{Sender: snd, Receiver: rcv})
		dir := 0
		if !r.main(bs) {
			dir = 1
		}
		sums[dir][0].add(snd)
		sums[dir][1].add(rcv)
		delivered[dir] = append(delivered[dir], float64(rcv.Bytes))
	}
	for d := range sums {
		for k := range sums[d] {
			s := &sums[d][k]
			s.Sender = !r.reverse && (!r.bidir || d == 0)
			s.BitsPerSecond = 8 * float64(s.Bytes) / max(s.Seconds, 1e-9)
		}
	}
	end.SumSent, end.SumReceived = &sums[0][0], &sums[0][1]
	end.BP.JainFairness = jain(delivered[0])
	if r.bidir {
		end.SumSentBidirReverse, end.SumReceivedBidirReverse = &sums[1][0], &sums[1][1]
		f := jain(delivered[1])
		end.BP.JainFairnessBidirReverse = &f
	}
	end.CPU = iperfCPU{HostTotal: cpu.Total, HostUser: cpu.User, HostSystem: cpu.System}
	if res != nil && res.CPU.Measured {
		end.CPU.RemoteTotal, end.CPU.RemoteUser, end.CPU.RemoteSystem = res.CPU.Total, res.CPU.User, res.CPU.System
		end.BP.RemoteCPUMeasured = true
	}
	end.BP.ServerResults = res != nil
	end.BP.RTTSeconds = r.sess.Stats().RTT.Seconds()
	if err != nil {
		r.doc.Error = oneLine(err)
	}
	if r.json {
		b, jerr := json.MarshalIndent(&r.doc, "", "\t")
		if jerr != nil { // cannot happen: the document has only plain values
			fmt.Fprintf(os.Stderr, "bpcat bench: encoding the JSON document: %v\n", jerr)
			return
		}
		r.w.Write(append(b, '\n'))
		return
	}
	r.printEnd(res != nil, err)
}

// add sums one stream's end into s.
func (s *iperfSum) add(e iperfStreamEnd) {
	s.Bytes += e.Bytes
	s.Seconds = max(s.Seconds, e.Seconds)
	s.End = s.Seconds
	if e.BP != nil {
		if s.BP == nil {
			s.BP = &bpSum{}
		}
		s.BP.Stalls += e.BP.Stalls
		s.BP.TimeStalledSeconds += e.BP.TimeStalledSeconds
		s.BP.PeakInFlight += e.BP.PeakInFlight
	}
}

// printEnd prints the summary as iperf3 does: each stream's sender and
// receiver lines, then the sums, then what iperf3 has no columns for.
func (r *benchReport) printEnd(serverResults bool, err error) {
	end := &r.doc.End
	if len(r.streams) == 1 || len(r.doc.Intervals) == 0 { // else the last interval ended with one
		fmt.Fprintln(r.w, "- - - - - - - - - - - - - - - - - - - - - - - - -")
	}
	fmt.Fprintf(r.w, "%s Interval           Transfer     Bitrate          Stalls  Stalled  Peak in flight\n", r.idHeader())
	line := func(label string, up bool, e iperfStreamEnd, bp *bpSum, role string) {
		extra := strings.Repeat(" ", 33)
		if bp != nil {
			extra = fmt.Sprintf("  %6d  %6.2fs  %14s", bp.Stalls, bp.TimeStalledSeconds, formatSize(bp.PeakInFlight))
		}
		fmt.Fprintf(r.w, "%s %6.2f-%-6.2f sec  %s  %s%s  %s\n", r.id(label, up), 0.0, e.Seconds,
			formatBytesIperf(e.Bytes), formatBits(e.BitsPerSecond), extra, role)
	}
	bpOf := func(e *bpStreamEnd) *bpSum {
		if e == nil {
			return nil
		}
		return &bpSum{Stalls: e.Stalls, TimeStalledSeconds: e.TimeStalledSeconds, PeakInFlight: e.PeakInFlight}
	}
	for i, s := range end.Streams {
		up := r.streams[i].up
		label := fmt.Sprintf("%3d", s.Sender.Socket)
		line(label, up, s.Sender, bpOf(s.Sender.BP), "sender")
		line(label, up, s.Receiver, nil, "receiver")
	}
	sum := func(sent, recv *iperfSum, up bool) {
		line("SUM", up, iperfStreamEnd{Seconds: sent.Seconds, Bytes: sent.Bytes, BitsPerSecond: sent.BitsPerSecond}, sent.BP, "sender")
		line("SUM", up, iperfStreamEnd{Seconds: recv.Seconds, Bytes: recv.Bytes, BitsPerSecond: recv.BitsPerSecond}, nil, "receiver")
	}
	if len(r.streams) > 1 {
		sum(end.SumSent, end.SumReceived, !r.reverse)
		if r.bidir {
			sum(end.SumSentBidirReverse, end.SumReceivedBidirReverse, false)
		}
	}
	var b strings.Builder
	n := len(end.Streams)
	if r.bidir {
		n /= 2
	}
	fmt.Fprintf(&b, "fairness %.3f (Jain's index, %d stream(s)", end.BP.JainFairness, n)
	if f := end.BP.JainFairnessBidirReverse; f != nil {
		fmt.Fprintf(&b, "; %.3f the other way", *f)
	}
	fmt.Fprintf(&b, "), RTT %v; CPU here %.1f%% (user %.1f%%, system %.1f%%)",
		time.Duration(end.BP.RTTSeconds*float64(time.Second)).Round(time.Microsecond), end.CPU.HostTotal, end.CPU.HostUser, end.CPU.HostSystem)
	if end.BP.RemoteCPUMeasured {
		fmt.Fprintf(&b, ", at the server %.1f%% (user %.1f%%, system %.1f%%)", end.CPU.RemoteTotal, end.CPU.RemoteUser, end.CPU.RemoteSystem)
	}
	fmt.Fprintln(r.w, b.String())
	switch {
	case err != nil:
		fmt.Fprintf(r.w, "ended early (%s): the figures are what was measured until then\n", oneLine(err))
	case !serverResults:
		fmt.Fprintln(r.w, "the server sent no results: its figures are what this side saw")
	default:
		fmt.Fprintln(r.w, "\nbpcat bench done.")
	}
}

// jain is Jain's fairness index of xs: 1 when all are equal, 1/n when one
// has everything.
func jain(xs []float64) float64 {
	var sum, sum2 float64
	for _, x := range xs {
		sum, sum2 = sum+x, sum2+x*x
	}
	if sum2 == 0 {
		return 1
	}
	return sum * sum / (float64(len(xs)) * sum2)
}

// sat is a-b, or 0 if b > a.
func sat(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// benchHostPort splits a net.Addr into host and port.
func benchHostPort(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// benchVersion names this program and its version, for "version".
func benchVersion() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return "bpcat " + v
}

// systemInfo describes this host, for "system_info".
func systemInfo() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s %s %s %s", h, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
