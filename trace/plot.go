package trace

import (
	"cmp"
	"image/png"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PlotOptions sets the picture's title and size in pixels. Zero sizes
// take 960×720; an empty title says what the traces hold.
type PlotOptions struct {
	Title         string
	Width, Height int
}

// Source is one trace to draw, named (a file name, say) for the legend
// when its records do not name their host.
type Source struct {
	Name    string
	Records []Record
}

// Plot draws the trace as SVG. See PlotSources.
func Plot(w io.Writer, recs []Record, opts PlotOptions) error {
	return PlotSources(w, []Source{{Records: recs}}, opts)
}

// PlotPNG draws the same picture as Plot, as a PNG image.
func PlotPNG(w io.Writer, recs []Record, opts PlotOptions) error {
	return PlotSourcesPNG(w, []Source{{Records: recs}}, opts)
}

// PlotSources draws one or more traces as SVG, on one time axis: the
// ends of a transfer, or the hops of a relay, each traced by its own
// process. Every stream seen by every side (a "lane") has a color. The
// picture has up to five panels, each drawn only if some lane has its
// data:
//
//   - the delivery rate: bytes read by the receiving application per
//     second (a sender knows it from the credit its peer returns);
//   - the receive window, and the bytes received but not yet read;
//   - the send credit available;
//   - the share of time the sender was stalled, out of credit (reasons
//     peer_window and session_budget);
//   - the blocked intervals, a row per lane, colored by reason
//     (peer_window, session_budget, transport, unread: see
//     mux.BlockReason), with QUIC's packet losses as ticks on a row per
//     qlog trace that has any.
//
// A stall's interval ends at its unblocked event and lasts the duration
// the event gives (from its blocked event, in traces without durations);
// a stall never unblocked lasts to the end of its trace (its last record,
// EventEnd for qlog).
//
// A quantity that changes faster than a pixel column can show is drawn as
// a band from its lowest to its highest value in the column, with a line
// through its time-weighted mean. If every trace carries wall-clock time
// (ts), they share its axis; otherwise each trace's times count from its
// own start, and a note says so.
func PlotSources(w io.Writer, srcs []Source, opts PlotOptions) error {
	opts = withSize(opts)
	c := newSVGCanvas(opts.Width, opts.Height)
	layout(c, build(srcs), opts)
	_, err := io.WriteString(w, c.String())
	return err
}

// PlotSourcesPNG draws the same picture as PlotSources, as a PNG image.
func PlotSourcesPNG(w io.Writer, srcs []Source, opts PlotOptions) error {
	opts = withSize(opts)
	c := newPNGCanvas(opts.Width, opts.Height)
	layout(c, build(srcs), opts)
	return png.Encode(w, c.img)
}

func withSize(o PlotOptions) PlotOptions {
	if o.Width <= 0 {
		o.Width = 960
	}
	if o.Height <= 0 {
		o.Height = 720
	}
	return o
}

// sample is one point of a step function: v from x on.
type sample struct{ x, v float64 }

// lane is what one side saw of one stream.
type lane struct {
	src          int
	name         string // the source's name
	side, host   string
	local, peer  string
	stream       uint64
	first, last  float64            // the span of its events on the plot's axis
	consumed     []sample           // bytes read by the receiving application
	window, buf  []sample           // receive side
	credit       []sample           // send side
	stalls       []stall            // sorted by start
	pending      map[string]float64 // stalls begun and not yet ended, by reason
	drops, bytes uint64             // dropped writes and their bytes
	hidden       bool               // beyond maxLanes: counted, not drawn
}

// stall is an interval [a, b] a stream was blocked for reason (empty in
// traces older than reasons).
type stall struct {
	a, b   float64
	reason string
}

// isCreditStall reports whether a stall's reason is the sending side's
// want of credit (or unknown, as in old traces, where it was the only
// kind).
func isCreditStall(reason string) bool {
	return reason == "" || reason == "peer_window" || reason == "session_budget"
}

// isRecvStall reports whether a stall's reason is the receiving side's.
func isRecvStall(reason string) bool { return reason == "unread" }

// model is what the plot draws: lanes on one time axis.
type model struct {
	lanes  []*lane
	hidden int       // lanes beyond maxLanes, not drawn
	wall   bool      // x is seconds since start, on the wall clock
	start  time.Time // the earliest record's wall-clock time, if wall
	span   float64   // seconds
	events int
	names  []string
	losses [][]float64 // QUIC's packet losses, by source
}

// maxLanes bounds the lanes drawn; more are summarized in a note.
const maxLanes = 16

// isSendEvent and isRecvEvent sort mux's events by the side they describe.
func isSendEvent(e string) bool {
	return e == "credit" || e == "blocked" || e == "unblocked" || e == "dropped"
}

func isRecvEvent(e string) bool {
	return e == "grant" || e == "window" || e == "consumed" || e == "peer_blocked"
}

// build sorts the sources' records onto one axis and into lanes.
func build(srcs []Source) *model {
	m := &model{wall: len(srcs) > 0}
	for _, s := range srcs {
		m.names = append(m.names, s.Name)
		for _, r := range s.Records {
			if r.TS.IsZero() {
				m.wall = false
			} else if (isSendEvent(r.Event) || isRecvEvent(r.Event)) && (m.start.IsZero() || r.TS.Before(m.start)) {
				// The axis starts at the first event, not at the start of
				// a process that waited for its peer.
				m.start = r.TS
			}
		}
	}
	if !m.wall {
		m.start = time.Time{}
	}
	type key struct {
		src    int
		side   string
		stream uint64
	}
	byKey := map[key]*lane{}
	for si, s := range srcs {
		recs := slices.Clone(s.Records)
		x := func(r Record) float64 {
			if m.wall {
				return max(0, r.TS.Sub(m.start).Seconds())
			}
			return r.T
		}
		// Writers since ts keep their records in order; older ones did not.
		slices.SortStableFunc(recs, func(a, b Record) int { return cmp.Compare(x(a), x(b)) })
		host := ""
		addrs := map[string][2]string{}
		end := 0.0 // the trace's end: its last record's time
		var losses []float64
		for _, r := range recs {
			end = max(end, x(r))
			switch r.Event {
			case EventTrace:
				host = r.Host
			case EventSession:
				addrs[r.Side] = [2]string{r.Local, r.Remote}
			case EventPacketLost:
				losses = append(losses, x(r))
			}
		}
		m.losses = append(m.losses, losses)
		first := len(m.lanes)
		for _, r := range recs {
			send, recv := isSendEvent(r.Event), isRecvEvent(r.Event)
			if !send && !recv {
				continue
			}
			m.events++
			t := x(r)
			k := key{si, r.Side, r.Stream}
			l := byKey[k]
			if l == nil {
				if len(m.lanes) == maxLanes {
					m.hidden++
					byKey[k] = &lane{hidden: true} // counted once, not drawn
					continue
				}
				a := addrs[r.Side]
				l = &lane{src: si, name: s.Name, side: r.Side, host: host, local: a[0], peer: a[1], stream: r.Stream, first: t, pending: map[string]float64{}}
				byKey[k] = l
				m.lanes = append(m.lanes, l)
			}
			if l.hidden {
				continue
			}
			l.last = t
			m.span = max(m.span, t)
			if recv {
				l.consumed = append(l.consumed, sample{t, float64(r.Consumed)})
				l.window = append(l.window, sample{t, float64(r.Window)})
				l.buf = append(l.buf, sample{t, float64(r.Buffered)})
				continue
			}
			switch r.Event {
			case "credit":
				// The peer's consumption, as its WINDOW_UPDATE reported it.
				if r.Consumed > 0 {
					l.consumed = append(l.consumed, sample{t, float64(r.Consumed)})
				}
			case "blocked":
				if _, ok := l.pending[r.Reason]; !ok {
					l.pending[r.Reason] = t
				}
			case "unblocked":
				// The stall's interval is its duration up to now, where the
				// event gives it: a short transport stall has no blocked
				// event, and a long one's came late (docs/qlog.md).
				a, ok := l.pending[r.Reason]
				delete(l.pending, r.Reason)
				if r.Duration > 0 {
					a, ok = max(0, t-r.Duration), true
				}
				if ok {
					l.stalls = append(l.stalls, stall{a, t, r.Reason})
				}
			case "dropped":
				l.drops++
				l.bytes += r.Dropped
			}
			if (r.Event == "blocked" || r.Event == "unblocked") && isRecvStall(r.Reason) {
				continue // the receiving side's stall: no credit to draw
			}
			l.credit = append(l.credit, sample{t, float64(r.Credit)})
		}
		for _, l := range m.lanes[first:] {
			for reason, a := range l.pending { // still stalled when the trace ended
				l.stalls = append(l.stalls, stall{a, max(a, end), reason})
				m.span = max(m.span, end)
			}
			l.pending = nil
			slices.SortFunc(l.stalls, func(p, q stall) int {
				return cmp.Or(cmp.Compare(p.a, q.a), cmp.Compare(p.b, q.b), strings.Compare(p.reason, q.reason))
			})
		}
	}
	if m.span <= 0 {
		m.span = 1
	}
	return m
}

// label names a lane in the legend: side, host (or the source's name),
// stream, and the addresses if known.
func (m *model) label(l *lane) string {
	s := l.side
	if s == "" {
		s = "?"
	}
	switch {
	case l.host != "":
		s += " @ " + l.host
	case l.name != "":
		s += " (" + shortName(l.name) + ")"
	}
	s += " · stream " + strconv.FormatUint(l.stream, 10)
	if l.local != "" && l.peer != "" {
		s += " · " + l.local + " <-> " + l.peer
	}
	if l.drops > 0 {
		s += " · " + strconv.FormatUint(l.drops, 10) + " writes dropped (" + bytesLabel(float64(l.bytes)) + ")"
	}
	return s
}

// shortName elides the middle of a long file name, keeping its start and
// its end (a qlog file's "_client.sqlog"): a connection ID of 20 bytes
// would fill a legend line.
func shortName(n string) string {
	const head, tail = 8, 16
	r := []rune(n)
	if len(r) <= head+tail+4 {
		return n
	}
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
