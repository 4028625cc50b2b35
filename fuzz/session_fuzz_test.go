package fuzz

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/transport/memconn"
	"github.com/quic-go/quic-go/quicvarint"
)

// FuzzSession runs a server mux.Session over memconn against a raw peer on
// the client side whose every move comes from the fuzzer's input, read as
// a script of records:
//
//	record = op (1 byte) | arg (1 byte) | n (1 byte) | payload (n bytes)
//
// The raw peer writes whatever the script says on its control lane and on
// up to maxRawLanes lanes: raw bytes, frames with arbitrary types, flags and
// payloads, bulk DATA, QUIC-level aborts. Interleaved with it, the server's
// application (also driven by the script, see the op* constants) accepts
// streams, reads from some and not others, writes, closes, resets. Whether
// the control lane starts with a valid SETTINGS is up to the input.
//
// Properties:
//   - nothing panics (a panic in any goroutine crashes the fuzz worker);
//   - the script finishes within hangBound: the server never stops reading
//     a lane the peer can still write, so the raw peer never blocks for
//     good (its waits are bounded by short timeouts and deadlines);
//   - whenever observed (after every op, by a monitor every millisecond,
//     and at the end): BudgetUsed <= BudgetTotal, and each stream's
//     received and buffered bytes stay within the limit it granted;
//   - after the teardown (Close, the peer closing the connection, or
//     Shutdown, by the input's length modulo 3) Session.Close returns
//     within hangBound (else it is reported as a deadlock),
//     the application's goroutines return, and no goroutine is left.
func FuzzSession(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runSession(t, in)
	})
}

// Script ops: op byte modulo opCount.
const (
	opOpenLane   = iota // raw peer opens a lane (not visible until written)
	opCtlRaw            // raw bytes on the control lane (opened on first use); then arg&3: 1 CloseWrite, 2 CancelWrite(arg>>4)
	opLaneRaw           // raw bytes on lane arg
	opCtlFrame          // frame on the control lane: payload = type, flags, body; stream ID arg
	opLaneFrame         // frame on lane arg&15: payload = type, flags, body; arg&0x80: ID+2, arg&0x40: ID+1
	opLaneData          // DATA of uvarint(payload) bytes on lane arg&15; arg&0x80 FIN, 0x40 16 KiB frames, 0x20 within credit
	opLaneAbort         // lane arg&15: (arg>>4)%3 = CancelRead, CancelWrite, CloseWrite; code payload[0]
	opAccept            // server application: Accept (bounded wait)
	opAppRead           // server application: read up to uvarint(payload) bytes of stream arg (bounded wait)
	opAppClose          // server application: stream arg: (arg>>4)%6 = Close, CloseRead, CloseWrite, Reset, FailFast, Drop
	opAppWrite          // server application: write uvarint(payload) bytes on stream arg (bounded wait)
	opAppDrain          // server application: read stream arg to the end in the background
	opPause             // sleep arg%4 ms
	opServerOpen        // server application: Open a stream and write payload on it
	opGoAway            // server application: GoAway with code arg
	opPingFlood         // raw peer: arg PINGs on the control lane
	opCount
)

// Bounds of one input.
const (
	maxOps         = 512
	maxRawLanes    = 16
	maxBulk        = 256 << 10 // one opLaneData
	maxBulkTotal   = 2 << 20
	maxPauseTotal  = 50 * time.Millisecond
	maxPumpWait    = 100 * time.Millisecond // opLaneData waiting for credit, in all
	pumpPoll       = 200 * time.Microsecond
	scriptBudget   = 300 * time.Millisecond // no op starts after this
	hangBound      = 10 * time.Second
	shortWait      = 3 * time.Millisecond // OpenLane, Open, Shutdown
	acceptWait     = 5 * time.Millisecond
	ioDeadline     = 2 * time.Millisecond // application Read and Write
	goroutineSlack = 2
)

// fuzzConfig is a small server config, so that windows, the budget and the
// stream limit are all within reach of a short input.
func fuzzConfig() *mux.Config {
	return &mux.Config{
		InitialWindow: 16 << 10,
		MaxWindow:     64 << 10,
		// Besides the session's and four streams' fixed memory, half of
		// it holds the decoder of compressed DATA.
		SessionBudget:     mux.SessionOverhead + 512<<10 + 4*mux.StreamOverhead,
		MaxStreams:        8,
		MaxFramePayload:   16 << 10,
		KeepAliveInterval: -1,
	}
}

// fuzzMemOptions bounds each lane direction to 64 KiB and lets the raw
// peer open a few more lanes than MaxStreams, so that refusals are within
// reach; a non-zero RTT lets windows auto-tune.
var fuzzMemOptions = memconn.Options{LaneBuffer: 64 << 10, MaxLanes: 12, RTT: time.Millisecond}

// harness is one run of one input.
type harness struct {
	t      *testing.T
	sess   *mux.Session
	client transport.Conn
	start  time.Time
	failed atomic.Bool

	// Raw peer.
	ctl       transport.SendLane
	lanes     []*rawLane
	nextIndex uint64
	drainWG   sync.WaitGroup // the raw peer's readers
	bulk      int
	pumpWait  time.Duration

	// Server application.
	streams []*mux.Stream
	appWG   sync.WaitGroup
	pause   time.Duration
	buf     []byte
}

func (h *harness) fail(format string, args ...any) {
	h.failed.Store(true)
	h.t.Errorf(format, args...)
}

func runSession(t *testing.T, in []byte) {
	base := runtime.NumGoroutine()
	cc, sc := memconn.PairWith(fuzzMemOptions)
	sess, err := mux.New(sc, fuzzConfig())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, sess: sess, client: cc, start: time.Now(), buf: make([]byte, 64<<10)}
	h.startDrains()

	scriptDone := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		h.monitor(scriptDone)
	}()
	go func() {
		defer close(scriptDone)
		h.runScript(in)
	}()
	h.within(scriptDone, "the raw peer's script did not finish: something stopped reading a lane")
	<-monitorDone

	st := sess.Stats()
	t.Logf("before teardown: err=%v accepted=%d refused=%d recv=%d sent=%d budget=%d/%d streams=%d app=%d lanes=%d",
		sess.Err(), st.StreamsAccepted, st.StreamsRefused, st.BytesReceived, st.BytesSent, st.BudgetUsed, st.BudgetTotal, st.Streams, len(h.streams), len(h.lanes))
	h.teardown(in)
	h.checkInvariants("after teardown")
	h.waitGoroutines(base)
}

// within fails the test (and dumps all goroutines) if ch is not closed
// within hangBound.
func (h *harness) within(ch <-chan struct{}, what string) {
	select {
	case <-ch:
	case <-time.After(hangBound):
		h.t.Fatalf("%s within %v\n%s", what, hangBound, allStacks())
	}
}

func allStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// startDrains makes the raw peer read and discard everything the server
// sends on its control lane and on the lanes the server opens, as a live
// peer would.
func (h *harness) startDrains() {
	h.drainWG.Add(2)
	go func() {
		defer h.drainWG.Done()
		r, err := h.client.AcceptControl(context.Background())
		if err == nil {
			io.Copy(io.Discard, r)
		}
	}()
	go func() {
		defer h.drainWG.Done()
		for {
			l, err := h.client.AcceptLane(context.Background())
			if err != nil {
				return
			}
			h.drain(l)
		}
	}()
}

func (h *harness) drain(l transport.Lane) {
	h.drainWG.Add(1)
	go func() {
		defer h.drainWG.Done()
		io.Copy(io.Discard, l)
	}()
}

// rawLane is a lane the raw peer opened.
type rawLane struct {
	transport.Lane
	id        uint64
	sent      uint64 // DATA payload bytes sent by opLaneData
	blockedAt uint64 // the limit of the last BLOCKED opLaneData sent
	// maxOffset is the highest Maximum Offset of the server's
	// WINDOW_UPDATEs, so that opLaneData can keep within credit.
	maxOffset atomic.Uint64
}

// readRawLane reads what the server sends on a raw lane, recording the
// credit its WINDOW_UPDATEs grant. If the stream of frames stops making
// sense, it discards the rest.
func (h *harness) readRawLane(rl *rawLane) {
	h.drainWG.Add(1)
	go func() {
		defer h.drainWG.Done()
		br := bufio.NewReader(rl)
		var payload [framing.MaxControlPayload]byte
		var f framing.Frame
		for {
			hd, err := framing.ReadHeader(br)
			if err != nil {
				break
			}
			if hd.Type == framing.TypeData {
				if _, err := br.Discard(int(hd.Length)); err != nil {
					break
				}
				continue
			}
			if _, err := io.ReadFull(br, payload[:hd.Length]); err != nil {
				break
			}
			if hd.Type == framing.TypeWindowUpdate && framing.DecodePayload(&f, hd, payload[:hd.Length]) == nil {
				for {
					old := rl.maxOffset.Load()
					if f.Offset <= old || rl.maxOffset.CompareAndSwap(old, f.Offset) {
						break
					}
				}
			}
		}
		io.Copy(io.Discard, br)
	}()
}

// monitor checks the invariants every millisecond until done is closed.
func (h *harness) monitor(done <-chan struct{}) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if !h.checkInvariants("monitor") {
				return
			}
		}
	}
}

// checkInvariants checks what must hold at every moment, and reports
// whether it did.
func (h *harness) checkInvariants(when string) bool {
	st := h.sess.Stats()
	ok := true
	if st.BudgetUsed > st.BudgetTotal {
		h.fail("%s: BudgetUsed %d > BudgetTotal %d", when, st.BudgetUsed, st.BudgetTotal)
		ok = false
	}
	for _, s := range h.sess.Streams() {
		ss := s.Stats()
		if ss.BytesReceived > ss.RecvLimit && ss.RecvLimit != 0 {
			h.fail("%s: stream %d received %d bytes past its limit %d", when, ss.ID, ss.BytesReceived, ss.RecvLimit)
			ok = false
		}
		if ss.Buffered > ss.BytesReceived || (ss.RecvLimit != 0 && ss.Buffered > ss.RecvLimit) {
			h.fail("%s: stream %d buffers %d bytes (received %d, limit %d)", when, ss.ID, ss.Buffered, ss.BytesReceived, ss.RecvLimit)
			ok = false
		}
	}
	return ok
}

// teardown ends the session in the way the input picks, and requires that
// everything stops within hangBound.
func (h *harness) teardown(in []byte) {
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		switch len(in) % 3 {
		case 0:
			h.sess.Close()
		case 1: // the peer goes away
			h.client.CloseWithError(uint64(framing.InternalError), "raw peer done")
			<-h.sess.Done()
			h.sess.Close()
		case 2:
			ctx, cancel := context.WithTimeout(context.Background(), shortWait)
			h.sess.Shutdown(ctx)
			cancel()
		}
	}()
	h.within(closed, "Session.Close did not return: deadlock")
	h.client.CloseWithError(0, "")

	app := make(chan struct{})
	go func() { h.appWG.Wait(); close(app) }()
	h.within(app, "the application's Reads did not return after Close")
	drains := make(chan struct{})
	go func() { h.drainWG.Wait(); close(drains) }()
	h.within(drains, "the raw peer's reads did not return after Close")
}

// waitGoroutines requires the number of goroutines to fall back to base
// (plus a small slack) within hangBound.
func (h *harness) waitGoroutines(base int) {
	deadline := time.Now().Add(hangBound)
	for runtime.NumGoroutine() > base+goroutineSlack {
		if time.Now().After(deadline) {
			h.t.Fatalf("goroutines left after the session closed: %d, was %d\n%s", runtime.NumGoroutine(), base, allStacks())
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) runScript(in []byte) {
	for ops := 0; len(in) >= 2 && ops < maxOps && !h.failed.Load(); ops++ {
		if time.Since(h.start) > scriptBudget {
			return
		}
		op, arg := in[0]%opCount, in[1]
		in = in[2:]
		var payload []byte
		if len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			payload, in = in[1:1+n], in[1+n:]
		}
		h.do(op, arg, payload)
		if !h.checkInvariants(fmt.Sprintf("after op %d", op)) {
			return
		}
	}
}

func (h *harness) do(op, arg byte, payload []byte) {
	switch op {
	case opOpenLane:
		h.openLane()
	case opCtlRaw:
		h.ctlWrite(payload)
		if h.ctl != nil {
			switch arg & 3 {
			case 1:
				h.ctl.CloseWrite()
			case 2:
				h.ctl.CancelWrite(uint64(arg >> 4))
			}
		}
	case opLaneRaw:
		if l := h.lane(arg); l != nil {
			l.Write(payload)
		}
	case opCtlFrame:
		h.ctlWrite(rawFrame(uint64(arg), payload))
	case opLaneFrame:
		if l := h.lane(arg); l != nil {
			id := l.id
			if arg&0x80 != 0 {
				id += 2
			}
			if arg&0x40 != 0 {
				id++
			}
			l.Write(rawFrame(id, payload))
		}
	case opLaneData:
		h.laneData(arg, payload)
	case opLaneAbort:
		if l := h.lane(arg); l != nil {
			code := uint64(firstByte(payload))
			switch (arg >> 4) % 3 {
			case 0:
				l.CancelRead(code)
			case 1:
				l.CancelWrite(code)
			case 2:
				l.CloseWrite()
			}
		}
	case opAccept:
		ctx, cancel := context.WithTimeout(context.Background(), acceptWait)
		s, err := h.sess.Accept(ctx)
		cancel()
		if err == nil {
			h.streams = append(h.streams, s)
		}
	case opAppRead:
		if s := h.stream(arg); s != nil {
			n := min(sizeOf(payload, 4096), len(h.buf))
			s.SetReadDeadline(time.Now().Add(ioDeadline))
			s.Read(h.buf[:n])
		}
	case opAppClose:
		if s := h.stream(arg); s != nil {
			switch (arg >> 4) % 6 {
			case 0:
				s.Close()
			case 1:
				s.CloseRead()
			case 2:
				s.CloseWrite()
			case 3:
				s.Reset(framing.Cancel)
			case 4:
				s.SetOverload(mux.FailFast)
			case 5:
				s.SetOverload(mux.Drop)
			}
		}
	case opAppWrite:
		if s := h.stream(arg); s != nil {
			n := min(sizeOf(payload, 1024), len(h.buf))
			s.SetWriteDeadline(time.Now().Add(ioDeadline))
			s.Write(h.buf[:n])
		}
	case opAppDrain:
		if s := h.stream(arg); s != nil {
			s.SetReadDeadline(time.Time{})
			h.appWG.Add(1)
			go func() {
				defer h.appWG.Done()
				io.Copy(io.Discard, s)
			}()
		}
	case opPause:
		if d := time.Duration(arg%4) * time.Millisecond; h.pause+d <= maxPauseTotal {
			t0 := time.Now()
			time.Sleep(d)
			h.pause += time.Since(t0)
		}
	case opServerOpen:
		ctx, cancel := context.WithTimeout(context.Background(), shortWait)
		s, err := h.sess.Open(ctx)
		cancel()
		if err == nil {
			h.streams = append(h.streams, s)
			s.SetWriteDeadline(time.Now().Add(ioDeadline))
			s.Write(payload)
		}
	case opGoAway:
		h.sess.GoAway(framing.ErrorCode(arg))
	case opPingFlood:
		var b []byte
		for i := range int(arg) {
			f := framing.Frame{Header: framing.Header{Type: framing.TypePing}}
			binary.BigEndian.PutUint64(f.PingData[:], uint64(i))
			b, _ = framing.AppendFrame(b, &f)
		}
		h.ctlWrite(b)
	}
}

// openLane opens the raw peer's next lane, with ID 2*index+1, unless the
// server's lane limit holds for longer than shortWait.
func (h *harness) openLane() {
	if len(h.lanes) >= maxRawLanes {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortWait)
	l, err := h.client.OpenLane(ctx)
	cancel()
	if err != nil {
		return
	}
	rl := &rawLane{Lane: l, id: 2*h.nextIndex + 1}
	rl.maxOffset.Store(fuzzConfig().InitialWindow)
	h.lanes = append(h.lanes, rl)
	h.nextIndex++
	h.readRawLane(rl)
}

// lane returns the raw peer's lane arg&15 (modulo the number open),
// opening the first if there is none.
func (h *harness) lane(arg byte) *rawLane {
	if len(h.lanes) == 0 {
		h.openLane()
		if len(h.lanes) == 0 {
			return nil
		}
	}
	return h.lanes[int(arg&15)%len(h.lanes)]
}

func (h *harness) ctlWrite(b []byte) {
	if h.ctl == nil {
		ctx, cancel := context.WithTimeout(context.Background(), shortWait)
		ctl, err := h.client.OpenControl(ctx)
		cancel()
		if err != nil {
			return
		}
		h.ctl = ctl
	}
	h.ctl.Write(b)
}

// laneData writes DATA frames carrying uvarint(payload) bytes, with FIN
// on the last if arg&0x80. With arg&0x20 it keeps within the credit the
// server granted, waiting a little for more (the application must read
// for the credit to grow); else it sends regardless, in frames of 16 KiB
// if arg&0x40 or else in one frame.
func (h *harness) laneData(arg byte, payload []byte) {
	l := h.lane(arg)
	if l == nil {
		return
	}
	size := min(sizeOf(payload, 1000), maxBulk, maxBulkTotal-h.bulk)
	if size < 0 {
		return
	}
	h.bulk += size
	fin := arg&0x80 != 0
	if arg&0x20 == 0 {
		frame := size
		if arg&0x40 != 0 {
			frame = 16 << 10
		}
		h.sendData(l, size, frame, fin)
		return
	}
	if size == 0 {
		h.sendData(l, 0, 0, fin)
		return
	}
	for size > 0 && h.pumpWait < maxPumpWait {
		var avail uint64
		if m := l.maxOffset.Load(); m > l.sent {
			avail = m - l.sent
		}
		if avail == 0 {
			if m := l.maxOffset.Load(); m != l.blockedAt {
				// Out of credit: say so once per limit, as a sender does.
				l.blockedAt = m
				f := framing.Frame{Header: framing.Header{Type: framing.TypeBlocked, StreamID: l.id}, Offset: m}
				b, _ := framing.AppendFrame(nil, &f)
				if _, err := l.Write(b); err != nil {
					return
				}
			}
			t0 := time.Now()
			time.Sleep(pumpPoll)
			h.pumpWait += time.Since(t0)
			continue
		}
		n := min(size, int(min(avail, maxBulk)))
		size -= n
		if h.sendData(l, n, 16<<10, fin && size == 0) != nil {
			return
		}
	}
}

var pattern = func() []byte {
	b := make([]byte, 16<<10)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// sendData writes size payload bytes in DATA frames of at most frame
// bytes (at least one frame, empty if size is 0).
func (h *harness) sendData(l *rawLane, size, frame int, fin bool) error {
	for first := true; first || size > 0; first = false {
		n := min(size, frame)
		size -= n
		l.sent += uint64(n)
		if _, err := l.Write(framing.AppendDataHeader(nil, l.id, n, fin && size == 0)); err != nil {
			return err
		}
		for n > 0 {
			k := min(n, len(pattern))
			if _, err := l.Write(pattern[:k]); err != nil {
				return err
			}
			n -= k
		}
	}
	return nil
}

func (h *harness) stream(arg byte) *mux.Stream {
	if len(h.streams) == 0 {
		return nil
	}
	return h.streams[int(arg)%len(h.streams)]
}

// rawFrame encodes a frame from a script payload: type, flags, then the
// frame's payload, with the given stream ID and the right Length.
func rawFrame(id uint64, p []byte) []byte {
	var typ, flags byte
	if len(p) > 0 {
		typ, p = p[0], p[1:]
	}
	if len(p) > 0 {
		flags, p = p[0], p[1:]
	}
	b := framing.AppendHeader(nil, framing.Header{Type: framing.Type(typ), Flags: framing.Flags(flags), StreamID: id, Length: uint64(len(p))})
	return append(b, p...)
}

// sizeOf reads a size as an unsigned varint (encoding/binary) from p, or
// returns def if p holds none.
func sizeOf(p []byte, def int) int {
	v, n := binary.Uvarint(p)
	if n <= 0 || v > 1<<30 {
		return def
	}
	return int(v)
}

func firstByte(p []byte) byte {
	if len(p) == 0 {
		return 0
	}
	return p[0]
}

// ---- Seed corpus ----

// script builds an input for FuzzSession.
type script struct{ b []byte }

func (s *script) op(op, arg byte, payload []byte) *script {
	if len(payload) > 255 {
		panic("payload too long for one record")
	}
	s.b = append(s.b, op, arg, byte(len(payload)))
	s.b = append(s.b, payload...)
	return s
}

func (s *script) settings(st framing.Settings) *script {
	b, err := framing.AppendFrame(nil, &framing.Frame{Header: framing.Header{Type: framing.TypeSettings}, Settings: st})
	if err != nil {
		panic(err)
	}
	return s.op(opCtlRaw, 0, b)
}

func (s *script) defaultSettings() *script {
	return s.settings(framing.Settings{InitialWindow: 64 << 10, MaxFramePayload: 16 << 10, MaxStreams: 16})
}

// frame appends opLaneFrame (lane >= 0) or opCtlFrame (lane < 0).
func (s *script) frame(lane int, typ framing.Type, flags framing.Flags, body ...byte) *script {
	p := append([]byte{byte(typ), byte(flags)}, body...)
	if lane < 0 {
		return s.op(opCtlFrame, 0, p)
	}
	return s.op(opLaneFrame, byte(lane), p)
}

func (s *script) data(lane int, fin, split bool, n int) *script {
	arg := byte(lane)
	if fin {
		arg |= 0x80
	}
	if split {
		arg |= 0x40
	}
	return s.op(opLaneData, arg, binary.AppendUvarint(nil, uint64(n)))
}

// pump sends n bytes on lane within the credit the server grants.
func (s *script) pump(lane int, fin bool, n int) *script {
	arg := byte(lane) | 0x20
	if fin {
		arg |= 0x80
	}
	return s.op(opLaneData, arg, binary.AppendUvarint(nil, uint64(n)))
}

func (s *script) rawLane(lane int, b []byte) *script { return s.op(opLaneRaw, byte(lane), b) }

func (s *script) do(op byte, arg byte) *script { return s.op(op, arg, nil) }

func (s *script) read(stream byte, n int) *script {
	return s.op(opAppRead, stream, binary.AppendUvarint(nil, uint64(n)))
}

func (s *script) write(stream byte, n int) *script {
	return s.op(opAppWrite, stream, binary.AppendUvarint(nil, uint64(n)))
}

func openingFrame(id uint64) []byte { return framing.AppendDataHeader(nil, id, 0, false) }

func dataFrame(id uint64, fin bool, p []byte) []byte {
	return append(framing.AppendDataHeader(nil, id, len(p), fin), p...)
}

func varints(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = quicvarint.Append(b, x)
	}
	return b
}

// sessionSeeds are the seed inputs of FuzzSession, by file name. Most end
// with a pause so that the server has handled everything before the
// teardown.
func sessionSeeds() map[string][]byte {
	seeds := map[string]*script{}
	add := func(name string) *script {
		s := &script{}
		seeds[name] = s
		return s
	}
	settle := func(s *script) *script { return s.do(opPause, 3).do(opPause, 3) }

	// A well-behaved exchange: SETTINGS, a stream with data and FIN, the
	// application reads it all, answers and closes.
	settle(add("00-settings-stream-data-fin").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, []byte("hello"))).
		data(0, true, false, 3000).
		do(opAccept, 0).read(0, 8192).write(0, 100).do(opAppClose, 2<<4).
		do(opPause, 1).read(0, 8192).read(0, 8192))

	// The same without any SETTINGS from the peer.
	settle(add("01-no-settings-stream").
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).data(0, true, false, 100).
		do(opAccept, 0).do(opAppDrain, 0))

	// DATA past the credit granted (16 KiB initial window): a flow-control
	// error closes the session.
	settle(add("02-data-past-credit").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).
		data(0, false, true, 40000).do(opAccept, 0).read(0, 100))

	// One DATA frame larger than SETTINGS_MAX_FRAME_PAYLOAD.
	settle(add("03-data-frame-too-large").defaultSettings().
		do(opOpenLane, 0).data(0, false, false, 20000))

	// A PING flood: more than the useless-frame limit in a second.
	s := add("04-ping-flood").defaultSettings()
	for range 5 {
		s.do(opPingFlood, 250)
	}
	settle(s)

	// Streams reset by the peer, before and after the application saw
	// them; then resets of streams nobody accepted, each lane ended.
	s = add("05-reset").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, []byte("abc"))).
		frame(0, framing.TypeReset, 0, 6).
		do(opOpenLane, 0).rawLane(1, dataFrame(3, false, []byte("abc"))).
		do(opAccept, 0).do(opAccept, 0).read(1, 10).
		frame(1, framing.TypeReset, 0, 6).read(1, 10).do(opAppClose, 1)
	for i := 2; i < 8; i++ {
		s.do(opOpenLane, 0).frame(i, framing.TypeReset, 0, 6).do(opLaneAbort, byte(i)|2<<4)
	}
	settle(s)

	// Malformed input of several kinds, each in its own seed.
	settle(add("06-malformed-session-frame-on-lane").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, []byte("x"))).
		rawLane(0, []byte{0x05, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8}))
	settle(add("07-malformed-first-frame-unknown-type").defaultSettings().
		do(opOpenLane, 0).rawLane(0, []byte{0x21, 0x00, 0x01, 0x01, 0xaa}))
	settle(add("08-malformed-truncated-header-then-fin").defaultSettings().
		do(opOpenLane, 0).rawLane(0, []byte{0x00, 0x00}).do(opLaneAbort, 2<<4))
	settle(add("09-malformed-bad-flags").defaultSettings().
		do(opOpenLane, 0).rawLane(0, []byte{0x00, 0x02, 0x01, 0x00}))
	settle(add("10-malformed-wrong-parity").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(2)))
	settle(add("11-malformed-stream-frame-on-control").defaultSettings().
		frame(-1, framing.TypeWindowUpdate, 0, 0x10, 0x00))
	settle(add("12-first-control-frame-not-settings").
		op(opCtlRaw, 0, []byte{0x05, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8}))
	settle(add("13-settings-twice").defaultSettings().defaultSettings())
	settle(add("14-settings-out-of-range").
		op(opCtlRaw, 0, []byte{0x07, 0x00, 0x00, 0x05, 0x02, 0x81, 0x00, 0x00, 0x01}))
	settle(add("15-control-lane-ended").defaultSettings().op(opCtlRaw, 1, nil).
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0))
	settle(add("16-lane-fin-without-bp-fin").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, []byte("abc"))).
		do(opLaneAbort, 2<<4).do(opAccept, 0))
	settle(add("17-lane-ends-inside-data").defaultSettings().
		do(opOpenLane, 0).rawLane(0, append(framing.AppendDataHeader(nil, 1, 100, false), "short"...)).
		do(opLaneAbort, 2<<4))

	// More streams than MaxStreams (8): the lane limit holds the peer at
	// 8; streams that end give their lanes back.
	s = add("18-stream-limit").defaultSettings()
	for i := range 12 {
		s.do(opOpenLane, 0).rawLane(i, dataFrame(uint64(2*i+1), true, []byte("x")))
	}
	for i := range 10 {
		s.do(opAccept, 0).do(opAppDrain, byte(i)).do(opAppClose, byte(i)|2<<4)
	}
	settle(s)

	// The application stops reading one stream; the other keeps flowing
	// within credit; BLOCKED and WINDOW_UPDATE both ways.
	settle(add("19-stalled-and-flowing").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0).
		do(opOpenLane, 0).rawLane(1, openingFrame(3)).do(opAccept, 0).do(opAppDrain, 1).
		pump(0, false, 16<<10).frame(0, framing.TypeBlocked, 0, varints(16<<10)...).
		pump(1, false, 300<<10).
		write(0, 20000).frame(0, framing.TypeWindowUpdate, 0, varints(100000, 0)...).
		write(0, 20000).read(0, 65536).pump(0, true, 100).pump(1, true, 0))

	// The application closes a stream while a DATA payload is arriving in
	// pieces (the lane reader is mid-frame): unread data is discarded once.
	settle(add("20-close-while-receiving").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, bytes.Repeat([]byte("a"), 100))).
		rawLane(0, append(framing.AppendDataHeader(nil, 1, 100, false), bytes.Repeat([]byte("b"), 50)...)).
		do(opAccept, 0).do(opPause, 2).do(opAppClose, 0).
		rawLane(0, bytes.Repeat([]byte("c"), 50)).do(opPause, 2).
		data(0, true, false, 10))

	// The same with CloseRead.
	settle(add("21-closeread-while-receiving").defaultSettings().
		do(opOpenLane, 0).rawLane(0, dataFrame(1, false, bytes.Repeat([]byte("a"), 100))).
		rawLane(0, append(framing.AppendDataHeader(nil, 1, 100, false), bytes.Repeat([]byte("b"), 50)...)).
		do(opAccept, 0).do(opPause, 2).do(opAppClose, 1<<4).
		rawLane(0, bytes.Repeat([]byte("c"), 50)))

	// GOAWAY from the server, then more streams from the peer; and a
	// GOAWAY from the peer, then the server tries to open.
	settle(add("22-goaway").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0).
		do(opGoAway, 0).
		do(opOpenLane, 0).rawLane(1, openingFrame(3)).
		frame(-1, framing.TypeGoAway, 0, 0, 0).
		op(opServerOpen, 0, []byte("hi")))

	// Server-opened streams in fail-fast and drop modes; the peer answers
	// with QUIC-level aborts.
	settle(add("23-server-streams-and-aborts").defaultSettings().
		op(opServerOpen, 0, []byte("one")).op(opServerOpen, 0, []byte("two")).
		write(0, 30000).do(opAppClose, 4<<4).write(0, 30000).
		do(opAppClose, 1|5<<4).write(1, 30000).
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0).
		do(opLaneAbort, 0<<4).do(opLaneAbort, 1<<4))

	// Window-update and empty-DATA floods.
	s = add("24-window-update-flood").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0)
	useless := append(framing.AppendHeader(nil, framing.Header{Type: framing.TypeWindowUpdate, StreamID: 1, Length: 2}), 0, 0)
	for range 30 {
		s.rawLane(0, bytes.Repeat(useless, 40))
	}
	settle(s)
	s = add("25-empty-data-flood").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1))
	for range 20 {
		s.rawLane(0, bytes.Repeat(openingFrame(1), 60))
	}
	settle(s)

	// A peer that reuses a stream ID, and one that reports more consumed
	// than was sent.
	settle(add("26-duplicate-stream-id").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).
		do(opOpenLane, 0).rawLane(1, openingFrame(1)))
	settle(add("27-consumed-past-sent").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0).write(0, 10).
		frame(0, framing.TypeWindowUpdate, 0, varints(1<<20, 1<<19)...))

	// Unknown frame types on both kinds of lane, and the empty input.
	settle(add("28-unknown-types").defaultSettings().
		frame(-1, 0x21, 0x80, 1, 2, 3).
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).
		frame(0, 0xfe, 0, 1, 2, 3).data(0, true, false, 5).do(opAccept, 0).do(opAppDrain, 0))
	add("29-empty")

	// Eight streams pumping within credit while the application drains
	// them: windows grow until the session budget (256 KiB) stops them.
	s = add("30-budget-pressure").defaultSettings()
	for i := range 8 {
		s.do(opOpenLane, 0).rawLane(i, openingFrame(uint64(2*i+1))).do(opAccept, 0).do(opAppDrain, byte(i))
	}
	for range 4 {
		for i := range 8 {
			s.pump(i, false, 64<<10)
		}
	}
	for i := range 8 {
		s.pump(i, true, 1)
	}
	settle(s)

	// A stalled stream holds what it was granted while a sibling flows.
	s = add("31-stalled-sibling").defaultSettings().
		do(opOpenLane, 0).rawLane(0, openingFrame(1)).do(opAccept, 0).
		do(opOpenLane, 0).rawLane(1, openingFrame(3)).do(opAccept, 0).do(opAppDrain, 1).
		pump(0, false, 16<<10).frame(0, framing.TypeBlocked, 0, varints(16<<10)...)
	for range 8 {
		s.pump(1, false, 64<<10).frame(1, framing.TypeBlocked, 0, varints(16<<10)...)
	}
	settle(s.read(0, 1000).pump(0, true, 1000).pump(1, true, 1))

	out := make(map[string][]byte, len(seeds))
	for name, s := range seeds {
		out[name] = s.b
	}
	return out
}

// TestSessionSeedCorpus checks that testdata/fuzz/FuzzSession holds the
// seeds sessionSeeds builds (other files there are inputs the fuzzer
// found). Run with BP_UPDATE_SEEDS=1 to
// rewrite them.
func TestSessionSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSession")
	seeds := sessionSeeds()
	if os.Getenv("BP_UPDATE_SEEDS") != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), corpusFile(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("seed %s: %v (run with BP_UPDATE_SEEDS=1)", name, err)
		}
		if !bytes.Equal(got, corpusFile(b)) {
			t.Errorf("seed %s is stale (run with BP_UPDATE_SEEDS=1)", name)
		}
	}
}

// corpusFile encodes one []byte input in the "go test fuzz v1" format.
func corpusFile(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
}
