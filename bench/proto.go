package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The bench protocol on every stream, whatever the implementation: the
// client writes a fixed header saying what the server's reader does, then
// writes data until the server's reply (one JSON line on the reverse
// direction) arrives; then it closes the stream. The server reads as the
// header says, samples how many bytes it has read, sends the reply at the
// header's end time and keeps draining until the stream ends, so no writer
// is ever left blocked. Times are Unix nanoseconds: client and server are
// processes on one machine and share its clock.

const headerLen = 64

var headerMagic = [4]byte{'B', 'P', 'B', '1'}

const (
	modeSink uint8 = iota + 1 // read everything, sample, reply at End
	modeIdle                  // read the header only, hold the stream
	modeEcho                  // read echoSize bytes, write echoSize back, until EOF
)

// echoSize is the request and the response of modeEcho (hol-latency).
const echoSize = 1024

type header struct {
	Mode       uint8
	Start      int64 // when the client starts writing
	End        int64 // when the server replies
	StallFrom  int64 // the reader reads nothing in [StallFrom, StallTo) (0: never)
	StallTo    int64
	SampleEvry int64 // sampling period, ns
}

func (h header) marshal() []byte {
	b := make([]byte, headerLen)
	copy(b, headerMagic[:])
	b[4] = h.Mode
	for i, v := range []int64{h.Start, h.End, h.StallFrom, h.StallTo, h.SampleEvry} {
		binary.BigEndian.PutUint64(b[8+8*i:], uint64(v))
	}
	return b
}

func parseHeader(b []byte) (header, error) {
	if len(b) != headerLen || [4]byte(b[:4]) != headerMagic {
		return header{}, errors.New("bad bench header")
	}
	var h header
	h.Mode = b[4]
	v := make([]int64, 5)
	for i := range v {
		v[i] = int64(binary.BigEndian.Uint64(b[8+8*i:]))
	}
	h.Start, h.End, h.StallFrom, h.StallTo, h.SampleEvry = v[0], v[1], v[2], v[3], v[4]
	if h.SampleEvry <= 0 || h.End < h.Start || h.End-h.Start > int64(5*time.Minute) {
		return header{}, errors.New("bench header out of range")
	}
	return h, nil
}

// reply is what the server reports for a stream.
type reply struct {
	// Samples are [time, bytes read so far, the server process's CPU
	// time so far (user+sys, ns)] triples.
	Samples [][3]int64 `json:"samples"`
	// Resumed is when the reader read again after its stall (0: no stall).
	Resumed int64  `json:"resumed"`
	Err     string `json:"err,omitempty"`
}

// bytesAt returns the bytes read by time t, interpolating between samples.
func (r *reply) bytesAt(t int64) float64 { return r.at(t, 1) }

// cpuAt returns the server process's CPU seconds used by time t.
func (r *reply) cpuAt(t int64) float64 { return r.at(t, 2) / 1e9 }

// at interpolates column col of the samples at time t.
func (r *reply) at(t int64, col int) float64 {
	s := r.Samples
	if len(s) == 0 {
		return 0
	}
	if t <= s[0][0] {
		return float64(s[0][col])
	}
	for i := 1; i < len(s); i++ {
		if t <= s[i][0] {
			a, b := s[i-1], s[i]
			if b[0] == a[0] {
				return float64(b[col])
			}
			return float64(a[col]) + float64(b[col]-a[col])*float64(t-a[0])/float64(b[0]-a[0])
		}
	}
	return float64(s[len(s)-1][col])
}

// ---- server side ----

type serverState struct {
	held  sync.Mutex
	idle  []io.ReadWriteCloser
	nIdle atomic.Int64
	nBad  atomic.Int64
	// bufs holds the streams' read buffers, made when the process starts,
	// so that a memory reading (memory-under-stall's peak over its
	// baseline) counts the implementation's buffering, not the bench's own
	// 64 KiB per stream. A stream beyond them makes its own.
	bufs spares[[]byte]
	// samples holds the streams' sample arrays, made when the process
	// starts for the same reason; a stream beyond them, or one whose run
	// needs more samples, makes its own.
	samples spares[[][3]int64]
}

const (
	readChunk = 64 << 10
	readBufs  = 16 // every case's streams but idle-streams', which read none
	// sampleCap is the samples a made-ahead array holds: 10 s at the
	// clients' 10 ms.
	sampleCap = 1024
)

func newServerState() *serverState {
	st := &serverState{bufs: make(spares[[]byte], readBufs), samples: make(spares[[][3]int64], readBufs)}
	for range readBufs {
		st.bufs.put(make([]byte, readChunk))
		st.samples.put(make([][3]int64, 0, sampleCap))
	}
	return st
}

// spares holds values made ahead, as many as its capacity.
type spares[T any] chan T

// get takes a spare, or makes one with fresh if there is none.
func (c spares[T]) get(fresh func() T) T {
	select {
	case v := <-c:
		return v
	default:
		return fresh()
	}
}

// put gives v back, dropping it if the spares are full.
func (c spares[T]) put(v T) {
	select {
	case c <- v:
	default:
	}
}

// sampleArray takes an empty sample array of capacity at least n;
// putSampleArray gives it back.
func (st *serverState) sampleArray(n int) [][3]int64 {
	fresh := func() [][3]int64 { return make([][3]int64, 0, n) }
	if n > sampleCap {
		return fresh()
	}
	return st.samples.get(fresh)[:0]
}

func (st *serverState) putSampleArray(a [][3]int64) {
	if cap(a) == sampleCap {
		st.samples.put(a[:0])
	}
}

// handle runs one stream on the server.
func (st *serverState) handle(rwc io.ReadWriteCloser) {
	hb := make([]byte, headerLen)
	if _, err := io.ReadFull(rwc, hb); err != nil {
		st.nBad.Add(1)
		rwc.Close()
		return
	}
	h, err := parseHeader(hb)
	if err != nil {
		st.nBad.Add(1)
		rwc.Close()
		return
	}
	if h.Mode == modeEcho {
		b := make([]byte, echoSize)
		for {
			if _, err := io.ReadFull(rwc, b); err != nil {
				break
			}
			if _, err := rwc.Write(b); err != nil {
				break
			}
		}
		rwc.Close()
		return
	}
	if h.Mode == modeIdle {
		st.held.Lock()
		st.idle = append(st.idle, rwc)
		st.held.Unlock()
		st.nIdle.Add(1)
		return
	}
	var n, resumed atomic.Int64
	sent := make(chan struct{})
	go func() { // the sampler, which also sends the reply
		defer close(sent)
		every := time.Duration(h.SampleEvry)
		maxSamples := int((h.End-time.Now().UnixNano())/h.SampleEvry) + 4
		r := reply{Samples: st.sampleArray(max(maxSamples, 4))}
		defer st.putSampleArray(r.Samples)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			now := time.Now().UnixNano()
			r.Samples = append(r.Samples, [3]int64{now, n.Load(), cpuNow()})
			if now >= h.End || len(r.Samples) >= cap(r.Samples) {
				break
			}
			<-t.C
		}
		r.Resumed = resumed.Load()
		b, _ := json.Marshal(&r)
		rwc.Write(append(b, '\n'))
	}()
	buf := st.bufs.get(func() []byte { return make([]byte, readChunk) })
	defer st.bufs.put(buf)
	for {
		if now := time.Now().UnixNano(); h.StallFrom != 0 && now >= h.StallFrom && now < h.StallTo && resumed.Load() == 0 {
			time.Sleep(time.Duration(min(h.StallTo, h.End) - now)) // never past End: then drain
			resumed.Store(time.Now().UnixNano())
			continue
		}
		k, err := rwc.Read(buf)
		n.Add(int64(k))
		if err != nil {
			break
		}
	}
	<-sent
	rwc.Close()
}

// ---- client side ----

// writeLog records when Writes returned, for the resume-latency case.
type writeLog struct {
	times []int64 // bounded: appends stop at cap
}

func (w *writeLog) add(t int64) {
	if w != nil && len(w.times) < cap(w.times) {
		w.times = append(w.times, t)
	}
}

// drive runs the client side of one stream: header, data until the reply,
// close. It returns the reply. stop, if non-nil, is closed by the caller to
// end a stream that has no reply coming (it is closed by a watchdog).
func drive(rwc io.ReadWriteCloser, h header, chunk int, data []byte, log *writeLog) (*reply, error) {
	defer rwc.Close()
	if _, err := rwc.Write(h.marshal()); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	var stop atomic.Bool
	type result struct {
		r   *reply
		err error
	}
	got := make(chan result, 1)
	go func() {
		br := bufio.NewReaderSize(io.LimitReader(rwc, 8<<20), 64<<10)
		line, err := br.ReadBytes('\n')
		stop.Store(true)
		if err != nil {
			got <- result{nil, fmt.Errorf("read reply: %w", err)}
			return
		}
		var r reply
		if err := json.Unmarshal(line, &r); err != nil {
			got <- result{nil, fmt.Errorf("parse reply: %w", err)}
			return
		}
		got <- result{&r, nil}
	}()
	var werr error
	for !stop.Load() {
		if _, err := rwc.Write(data[:chunk]); err != nil {
			werr = err
			break
		}
		log.add(time.Now().UnixNano())
	}
	res := <-got
	if res.err != nil {
		if werr != nil {
			return nil, fmt.Errorf("write: %w (then %v)", werr, res.err)
		}
		return nil, res.err
	}
	return res.r, nil
}
