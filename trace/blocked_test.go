package trace

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoEnds returns the qlog files of both ends of one connection, by hand
// per docs/qlog.md: the client writes stream 0 and is held by each
// reason in turn; the server reads slowly (its data waits unread) and
// loses a packet; the client's last stall is still going on when its
// trace ends. The server's clock started 40 ms after the client's: its
// times are the client's less 40 ms.
func twoEnds() (client, server []byte) {
	var cev, sev []qev
	cev = append(cev, qev{0.5, "transport:connection_started", `{"local":{"address_v4":{"ip":"127.0.0.1","port":50000}},"remote":{"address_v4":{"ip":"127.0.0.1","port":4242}}}`},
		qev{1, "bp:stream_state_updated", `{"stream_id":0,"new":"open","initiator":"local"}`})
	sev = append(sev, qev{0.2, "transport:connection_started", `{"local":{"address_v4":{"ip":"127.0.0.1","port":4242}},"remote":{"address_v4":{"ip":"127.0.0.1","port":50000}}}`})
	// Credit and reads every 10 ms over a second.
	for i := range 100 {
		ms := float64(i * 10)
		cev = append(cev, qev{ms + 2, "bp:window_update_received", fmt.Sprintf(`{"stream_id":0,"maximum":%d,"peer_consumed":%d,"limit":%d,"credit":%d}`, 262144+i*16384, i*16384, 262144+i*16384, (i%4)*16384)})
		sev = append(sev, qev{ms + 1, "bp:stream_data_moved", fmt.Sprintf(`{"stream_id":0,"offset":%d,"length":16384,"from":"bp","to":"application","consumed":%d,"buffered":%d,"window":262144}`, i*16384, (i+1)*16384, 131072+(i%3)*32768)},
			qev{ms + 1.5, "bp:window_update_sent", fmt.Sprintf(`{"stream_id":0,"maximum":%d,"limit":%d,"window":262144,"consumed":%d}`, 262144+(i+1)*16384, 262144+(i+1)*16384, (i+1)*16384)})
	}
	blocked := func(ms float64, reason, side string) qev {
		return qev{ms, "bp:stream_data_blocked_updated", fmt.Sprintf(`{"stream_id":0,"state":"blocked","reason":%q,"side":%q}`, reason, side)}
	}
	unblocked := func(ms, dur float64, reason, side string) qev {
		return qev{ms, "bp:stream_data_blocked_updated", fmt.Sprintf(`{"stream_id":0,"state":"unblocked","reason":%q,"side":%q,"blocked_ms":%g}`, reason, side, dur)}
	}
	cev = append(cev,
		blocked(100, "peer_window", "send"), unblocked(300, 200, "peer_window", "send"),
		unblocked(420, 40, "transport", "send"), // short: no blocked event
		blocked(500, "session_budget", "send"), unblocked(650, 150, "session_budget", "send"),
		blocked(850, "peer_window", "send"), // never unblocked
		qev{1000, "transport:connection_closed", `{"initiator":"local"}`})
	sev = append(sev, blocked(60, "unread", "recv"), unblocked(260, 200, "unread", "recv"),
		qev{700, "recovery:packet_lost", `{"header":{"packet_type":"1RTT","packet_number":99},"trigger":"time_threshold"}`})
	sortQev(cev)
	sortQev(sev)
	return qlogFile(qlogHeader("client", qref, quicSchema, QlogSchema), cev...),
		qlogFile(qlogHeader("server", qref.Add(40*time.Millisecond), quicSchema, QlogSchema), sev...)
}

func sortQev(evs []qev) {
	for i := 1; i < len(evs); i++ { // insertion sort: the fixtures are small
		for j := i; j > 0 && evs[j].ms < evs[j-1].ms; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

func twoEndSources(t *testing.T) []Source {
	t.Helper()
	c, s := twoEnds()
	var srcs []Source
	for _, f := range []struct {
		name string
		b    []byte
	}{{"conn_client.sqlog", c}, {"conn_server.sqlog", s}} {
		tr, err := ReadAny(bytes.NewReader(f.b), 0)
		require.NoError(t, err)
		srcs = append(srcs, Source{Name: f.name, Records: tr.Records})
	}
	return srcs
}

// TestQlogModel: both ends' qlog files on one wall-clock axis, stalls by
// reason from the unblocked events' durations, an open stall to the end.
func TestQlogModel(t *testing.T) {
	m := build(twoEndSources(t))
	require.True(t, m.wall)
	require.Len(t, m.lanes, 2)
	cl, sv := m.lanes[0], m.lanes[1]
	assert.Equal(t, "client", cl.side)
	assert.Equal(t, "server", sv.side)
	assert.Equal(t, "127.0.0.1:50000", cl.local)
	// The axis starts at the first flow-control event: the client's first
	// credit, at its 2 ms (the server's first read is at its 1 ms, 41 ms
	// on the client's clock).
	assert.True(t, m.start.Equal(qref.Add(2*time.Millisecond)), "%v", m.start)
	at := func(ms float64) float64 { return (ms - 2) / 1e3 } // the client's ms on the axis
	want := []stall{
		{at(100), at(300), "peer_window"},
		{at(380), at(420), "transport"},
		{at(500), at(650), "session_budget"},
		{at(850), at(1000), "peer_window"}, // open: to the end of the client's trace
	}
	require.Len(t, cl.stalls, len(want))
	for i, w := range want {
		assert.InDelta(t, w.a, cl.stalls[i].a, 1e-9, "stall %d", i)
		assert.InDelta(t, w.b, cl.stalls[i].b, 1e-9, "stall %d", i)
		assert.Equal(t, w.reason, cl.stalls[i].reason)
	}
	// The server's times are 40 ms later on its clock's reference.
	require.Len(t, sv.stalls, 1)
	assert.InDelta(t, at(100), sv.stalls[0].a, 1e-9)
	assert.InDelta(t, at(300), sv.stalls[0].b, 1e-9)
	assert.Equal(t, "unread", sv.stalls[0].reason)
	assert.Empty(t, sv.credit, "the receiving side's stalls draw no credit")
	assert.NotEmpty(t, sv.buf)
	assert.NotEmpty(t, sv.consumed)
	assert.NotEmpty(t, cl.credit)
	require.Len(t, m.losses, 2)
	assert.Equal(t, []float64{at(740)}, roundAll(m.losses[1]))
	assert.Equal(t, []string{"peer_window", "session_budget", "transport", "unread"}, m.reasons())
	assert.Len(t, creditStalls(cl.stalls), 3, "the share of time stalled for credit leaves transport stalls out")
}

func roundAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Round(x*1e9) / 1e9
	}
	return out
}

// TestPlotReasonColors decodes the PNG of both ends' qlog files: in the
// bottom half (the blocked panel, below the legend), each reason's color
// is drawn across its intervals and nowhere else.
func TestPlotReasonColors(t *testing.T) {
	srcs := twoEndSources(t)
	m := build(srcs)
	var buf bytes.Buffer
	const W, H = 960, 720
	require.NoError(t, PlotSourcesPNG(&buf, srcs, PlotOptions{Width: W, Height: H}))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	left, right := 76.0, float64(W-18)
	x := func(t float64) int { return int(left + (right-left)*t/m.span) }
	intervals := map[string][][2]float64{}
	for _, l := range m.lanes {
		for _, s := range l.stalls {
			intervals[s.reason] = append(intervals[s.reason], [2]float64{s.a, s.b})
		}
	}
	require.Len(t, intervals, 4)
	for reason, ivs := range intervals {
		c := reasonColor(reason)
		cols := columnsOf(img, [3]uint8{c.R, c.G, c.B}, H/2)
		for _, iv := range ivs {
			for _, px := range []int{x(iv[0]) + 2, x((iv[0] + iv[1]) / 2), x(iv[1]) - 2} {
				assert.True(t, cols[px], "%s: drawn at x=%d (interval %.3f-%.3f s)", reason, px, iv[0], iv[1])
			}
		}
		for px := range cols {
			inside := false
			for _, iv := range ivs {
				inside = inside || (px >= x(iv[0])-2 && px <= x(iv[1])+2)
			}
			assert.True(t, inside, "%s: drawn at x=%d, outside its intervals", reason, px)
		}
	}
	// The legend names every reason.
	s := svgOf(t, srcs, PlotOptions{})
	for _, r := range []string{"peer_window", "session_budget", "transport", "unread"} {
		assert.Contains(t, s, "blocked: "+r)
	}
	assert.Contains(t, s, "QUIC packet lost")
	assert.Contains(t, s, "client (conn_client.sqlog) · stream 0 · 127.0.0.1:50000 &lt;-&gt; 127.0.0.1:4242")
	assert.Contains(t, s, "blocked: intervals by reason")
}

// columnsOf returns the columns of img where a pixel below y0 has color c
// exactly (the intervals are opaque rectangles).
func columnsOf(img image.Image, c [3]uint8, y0 int) map[int]bool {
	out := map[int]bool{}
	b := img.Bounds()
	for y := y0; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == c[0] && uint8(g>>8) == c[1] && uint8(bl>>8) == c[2] {
				out[x] = true
			}
		}
	}
	return out
}

// TestJSONLinesReasons: a JSON-lines trace written from mux's events
// keeps the stalls' reasons and durations, and plots them as qlog's do.
func TestJSONLinesReasons(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, epoch)
	hook := w.Hook("connect")
	at := func(ms int) time.Time { return epoch.Add(time.Duration(ms) * time.Millisecond) }
	hook(mux.Event{Time: at(0), Stream: 1, Kind: mux.EventCredit, Credit: 1000})
	hook(mux.Event{Time: at(100), Stream: 1, Kind: mux.EventBlocked, Reason: mux.ReasonPeerWindow})
	hook(mux.Event{Time: at(300), Stream: 1, Kind: mux.EventUnblocked, Reason: mux.ReasonPeerWindow, Duration: 200 * time.Millisecond, Signal: 1500 * time.Microsecond, Credit: 500})
	hook(mux.Event{Time: at(400), Stream: 1, Kind: mux.EventUnblocked, Reason: mux.ReasonTransport, Duration: 50 * time.Millisecond})
	hook(mux.Event{Time: at(450), Stream: 1, Kind: mux.EventThreshold, Metric: mux.MetricStall, Level: mux.LevelCritical, Value: 7})
	hook(mux.Event{Time: at(500), Stream: 1, Kind: mux.EventSessionClosed, Code: 2, Remote: true})
	require.NoError(t, w.Close())
	assert.Contains(t, buf.String(), `"event":"unblocked","credit":500,"duration":0.2,"signal":0.0015,"reason":"peer_window"}`)
	assert.Contains(t, buf.String(), `"value":7,"metric":"stall","level":"critical"`)
	assert.Contains(t, buf.String(), `"code":2,"by_peer":true`)
	recs, err := Read(&buf, 0)
	require.NoError(t, err)
	require.Len(t, recs, 7)
	assert.Equal(t, Record{T: 0.3, TS: at(300).UTC(), Side: "connect", Stream: 1, Event: "unblocked", Credit: 500, Reason: "peer_window", Duration: 0.2, Signal: 0.0015}, recs[3])
	m := build([]Source{{Records: recs}})
	require.Len(t, m.lanes, 1)
	assert.Equal(t, []stall{{0.1, 0.3, "peer_window"}, {0.35, 0.4, "transport"}}, roundStalls(m.lanes[0].stalls))
	assert.True(t, strings.Contains(svgOf(t, []Source{{Records: recs}}, PlotOptions{}), "blocked: transport"))
}

func roundStalls(st []stall) []stall {
	out := make([]stall, len(st))
	for i, s := range st {
		out[i] = stall{math.Round(s.a*1e9) / 1e9, math.Round(s.b*1e9) / 1e9, s.reason}
	}
	return out
}

func TestShortNames(t *testing.T) {
	assert.Equal(t, "a.jsonl", shortName("a.jsonl"))
	assert.Equal(t, "64220310…154_client.sqlog", shortName("64220310776bb2c227705faa92a95a8154_client.sqlog"))
	assert.Equal(t, "short", fitText("short", 100, styleNormal))
	assert.Equal(t, "abcd…", fitText("abcdefghijkl", 40, styleNormal))
}
