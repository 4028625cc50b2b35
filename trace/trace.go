// Package trace records the flow-control events of bp/1 streams as JSON
// lines, reads them back, and draws them (see Plot): the window's
// evolution made visible.
//
// A trace file holds one JSON object per line. Every line is a Record:
//
//	{"t":0.012345,"side":"recv","stream":1,"event":"grant","limit":262144,"window":131072,"consumed":131072}
//
// t is seconds since the trace started; side names the endpoint that saw
// the event ("send" or "recv" by convention, or any label the writer was
// given); event is the mux.EventKind name. Fields that are zero are left out.
package trace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/bpmux/bp/mux"
)

// Record is one line of a trace.
type Record struct {
	T        float64 `json:"t"`
	Side     string  `json:"side,omitempty"`
	Stream   uint64  `json:"stream"`
	Event    string  `json:"event"`
	Limit    uint64  `json:"limit,omitempty"`
	Window   uint64  `json:"window,omitempty"`
	Consumed uint64  `json:"consumed,omitempty"`
	Buffered uint64  `json:"buffered,omitempty"`
	Credit   uint64  `json:"credit,omitempty"`
	Dropped  uint64  `json:"dropped,omitempty"`
}

// Writer writes events as JSON lines. It is safe for concurrent use; its
// memory is one fixed-size buffer, and a slow file makes the hook wait
// rather than queue.
type Writer struct {
	mu    sync.Mutex
	w     *bufio.Writer
	c     io.Closer // closed by Close, if the destination is one
	start time.Time
	line  []byte
	err   error
	n     int64
}

// NewWriter returns a Writer on w whose times count from start.
func NewWriter(w io.Writer, start time.Time) *Writer {
	tw := &Writer{w: bufio.NewWriterSize(w, 64<<10), start: start, line: make([]byte, 0, 256)}
	if c, ok := w.(io.Closer); ok {
		tw.c = c
	}
	return tw
}

// Hook returns a function for mux.Config.OnEvent that records every event
// of a session under the label side.
func (w *Writer) Hook(side string) func(mux.Event) {
	return func(ev mux.Event) { w.Event(side, ev) }
}

// Event records one event.
func (w *Writer) Event(side string, ev mux.Event) {
	w.Write(Record{
		T:        ev.Time.Sub(w.start).Seconds(),
		Side:     side,
		Stream:   ev.Stream,
		Event:    ev.Kind.String(),
		Limit:    ev.Limit,
		Window:   ev.Window,
		Consumed: ev.Consumed,
		Buffered: ev.Buffered,
		Credit:   ev.Credit,
		Dropped:  ev.Dropped,
	})
}

// Write records r. The first write error is kept and returned by Close;
// later records are dropped.
func (w *Writer) Write(r Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.line = appendRecord(w.line[:0], r)
	if _, err := w.w.Write(w.line); err != nil {
		w.err = fmt.Errorf("trace: %w", err)
		return
	}
	w.n++
}

// Records returns how many records were written.
func (w *Writer) Records() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Flush writes buffered records to the destination.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		if err := w.w.Flush(); err != nil {
			w.err = fmt.Errorf("trace: %w", err)
		}
	}
	return w.err
}

// Close flushes and, if the destination is an io.Closer, closes it.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.c != nil {
		if cerr := w.c.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("trace: %w", cerr)
		}
	}
	return err
}

// appendRecord encodes r as one JSON line without reflection, so that
// recording an event costs no allocation.
func appendRecord(b []byte, r Record) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendFloat(b, r.T, 'f', 6, 64)
	if r.Side != "" {
		b = append(b, `,"side":`...)
		b = strconv.AppendQuote(b, r.Side)
	}
	b = append(b, `,"stream":`...)
	b = strconv.AppendUint(b, r.Stream, 10)
	b = append(b, `,"event":`...)
	b = strconv.AppendQuote(b, r.Event)
	for _, f := range [...]struct {
		name string
		v    uint64
	}{
		{"limit", r.Limit}, {"window", r.Window}, {"consumed", r.Consumed},
		{"buffered", r.Buffered}, {"credit", r.Credit}, {"dropped", r.Dropped},
	} {
		if f.v != 0 {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, f.v, 10)
		}
	}
	return append(b, "}\n"...)
}

// MaxLine is the longest line Read accepts.
const MaxLine = 4096

// ErrBadTrace is returned (wrapped, with the line number) for a line that
// is not a trace record.
var ErrBadTrace = errors.New("trace: not a trace record")

// Read reads a whole trace. At most maxRecords are kept (0 means no limit);
// a longer trace is an error rather than a silent cut.
func Read(r io.Reader, maxRecords int) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, MaxLine), MaxLine)
	var out []Record
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadTrace, line, err)
		}
		if rec.Event == "" {
			return nil, fmt.Errorf("%w: line %d has no event", ErrBadTrace, line)
		}
		if maxRecords > 0 && len(out) == maxRecords {
			return nil, fmt.Errorf("trace: more than %d records", maxRecords)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line is longer than %d bytes", ErrBadTrace, MaxLine)
		}
		return nil, fmt.Errorf("trace: %w", err)
	}
	return out, nil
}
