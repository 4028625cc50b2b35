package trace

import (
	"bytes"
	"encoding/xml"
	"image"
	"image/png"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var epoch = time.Date(2025, 12, 1, 9, 40, 12, 0, time.UTC)

// side returns a trace of one side of a transfer of one stream, with
// wall-clock time from start (or none, if wall is false): a receiver's
// grants or a sender's credit and stalls, 400 events a second.
func side(name, host string, recv, wall bool, start time.Time) []Record {
	recs := []Record{{Event: EventTrace, Host: host}}
	for i := range 800 {
		t := float64(i) / 400
		r := Record{T: t, Side: name, Stream: 1}
		if recv {
			r.Event, r.Window, r.Buffered, r.Consumed = "grant", 262144, uint64(196608+(i%4)*16384), uint64(i)*65536
		} else {
			r.Event, r.Credit, r.Consumed = "credit", uint64((i%4)*16384), uint64(i)*65536
			if i%4 == 3 {
				r.Event = "blocked"
			} else if i%4 == 0 {
				r.Event = "unblocked"
			}
		}
		recs = append(recs, r)
	}
	if wall {
		for i := range recs {
			recs[i].TS = start.Add(time.Duration(recs[i].T * float64(time.Second)))
		}
	}
	return recs
}

func svgOf(t *testing.T, srcs []Source, opts PlotOptions) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, PlotSources(&buf, srcs, opts))
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the SVG is well-formed XML")
	}
	return buf.String()
}

const (
	titleRate   = "delivery rate"
	titleWindow = "receive window"
	titleCredit = "send credit"
	titleStall  = "sender stalled"
)

// TestPlotPanels: a panel is drawn only if some lane has its data.
func TestPlotPanels(t *testing.T) {
	tests := []struct {
		name      string
		srcs      []Source
		want, not []string
	}{
		{"receiver only", []Source{{"a.jsonl", side("listen", "alpha", true, true, epoch)}},
			[]string{titleRate, titleWindow, "listen @ alpha · stream 1"}, []string{titleCredit, titleStall}},
		{"sender only", []Source{{"b.jsonl", side("connect", "beta", false, true, epoch)}},
			[]string{titleRate, titleCredit, titleStall, "connect @ beta"}, []string{titleWindow}},
		{"both ends", []Source{{"a", side("listen", "alpha", true, true, epoch)}, {"b", side("connect", "beta", false, true, epoch)}},
			[]string{titleRate, titleWindow, titleCredit, titleStall, "listen @ alpha and connect @ beta", "2025-12-01"}, nil},
		{"no events", []Source{{"c", []Record{{Event: EventTrace, Host: "h"}}}},
			[]string{"no flow-control events"}, []string{titleRate, titleWindow, titleCredit, titleStall}},
		{"old traces", []Source{{"a", side("recv", "", true, false, epoch)}, {"b", side("send", "", false, false, epoch)}},
			[]string{"no wall-clock time", "do not line up", "recv (a) · stream 1", "send (b)"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := svgOf(t, tt.srcs, PlotOptions{})
			for _, w := range tt.want {
				assert.Contains(t, s, w)
			}
			for _, n := range tt.not {
				assert.NotContains(t, s, n)
			}
		})
	}
}

func TestPlotTitle(t *testing.T) {
	s := svgOf(t, []Source{{"a", side("recv", "h", true, true, epoch)}}, PlotOptions{Title: "two <streams>"})
	assert.Contains(t, s, "two &lt;streams&gt;")
	assert.Contains(t, s, "seconds since ", "the time axis says what it counts")
	assert.Contains(t, s, "KiB", "byte axes have units")
	assert.Contains(t, s, "MiB/s", "the rate axis has units")
}

// countColor counts the pixels of img within a small distance of c.
func countColor(img image.Image, c [3]uint8) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			d := func(a uint32, b uint8) int { return max(int(a>>8)-int(b), int(b)-int(a>>8)) }
			if d(r, c[0]) < 12 && d(g, c[1]) < 12 && d(bl, c[2]) < 12 {
				n++
			}
		}
	}
	return n
}

// TestPlotPNGOverlay decodes the PNG of two ends on one axis: its size is
// as asked, and both ends' colors are drawn.
func TestPlotPNGOverlay(t *testing.T) {
	srcs := []Source{
		{"a.jsonl", side("listen", "alpha", true, true, epoch)},
		{"b.jsonl", side("connect", "beta", false, true, epoch.Add(300*time.Millisecond))},
	}
	for _, size := range [][2]int{{0, 0}, {640, 480}, {1600, 1000}} {
		var buf bytes.Buffer
		require.NoError(t, PlotSourcesPNG(&buf, srcs, PlotOptions{Width: size[0], Height: size[1]}))
		img, err := png.Decode(&buf)
		require.NoError(t, err)
		w, h := withSize(PlotOptions{Width: size[0], Height: size[1]}).Width, withSize(PlotOptions{Width: size[0], Height: size[1]}).Height
		assert.Equal(t, w, img.Bounds().Dx())
		assert.Equal(t, h, img.Bounds().Dy())
		for i := range 2 {
			c := laneColor(i)
			assert.Greater(t, countColor(img, [3]uint8{c.R, c.G, c.B}), 200, "size %v: end %d's color", size, i)
		}
	}
}

// TestOverlayAxis: traces with wall-clock time share its axis, from the
// first event; the later end's events start later.
func TestOverlayAxis(t *testing.T) {
	m := build([]Source{
		{"a", side("listen", "alpha", true, true, epoch)},
		{"b", side("connect", "beta", false, true, epoch.Add(500*time.Millisecond))},
	})
	require.True(t, m.wall)
	require.Len(t, m.lanes, 2)
	assert.True(t, m.start.Equal(epoch))
	assert.InDelta(t, 0, m.lanes[0].first, 1e-9)
	assert.InDelta(t, 0.5, m.lanes[1].first, 1e-9)
	assert.InDelta(t, 2.4975, m.span, 1e-6)
	assert.NotEmpty(t, m.lanes[1].stalls)
}

// TestPlotUnorderedOldTrace: records of an old trace, out of order, are
// sorted before they are drawn.
func TestPlotUnorderedOldTrace(t *testing.T) {
	recs := side("recv", "", true, false, epoch)[1:]
	recs[10], recs[11] = recs[11], recs[10]
	m := build([]Source{{Records: recs}})
	require.Len(t, m.lanes, 1)
	c := m.lanes[0].consumed
	for i := 1; i < len(c); i++ {
		require.LessOrEqual(t, c[i-1].x, c[i].x)
	}
}

func TestStepColumns(t *testing.T) {
	tests := []struct {
		name         string
		ss           []sample
		end          float64
		lo, hi, mean []float64
		has          []bool
	}{
		{"one value held", []sample{{0, 5}}, 4, []float64{5, 5, 5, 5}, []float64{5, 5, 5, 5}, []float64{5, 5, 5, 5}, []bool{true, true, true, true}},
		{"a step mid-column", []sample{{0, 0}, {1.5, 10}}, 4, []float64{0, 0, 10, 10}, []float64{0, 10, 10, 10}, []float64{0, 5, 10, 10}, []bool{true, true, true, true}},
		{"fast sawtooth: a band, not a block", []sample{{0, 0}, {0.25, 8}, {0.5, 0}, {0.75, 8}}, 1, []float64{0, 0, 0, 0}, []float64{8, 0, 0, 0}, []float64{4, 0, 0, 0}, []bool{true, false, false, false}},
		{"starts late", []sample{{2, 3}}, 3, []float64{0, 0, 3, 0}, []float64{0, 0, 3, 0}, []float64{0, 0, 3, 0}, []bool{false, false, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := stepColumns(tt.ss, tt.end, 4, 4)
			assert.Equal(t, tt.has, c.has)
			for k := range tt.has {
				if tt.has[k] {
					assert.InDelta(t, tt.lo[k], c.lo[k], 1e-9, "lo[%d]", k)
					assert.InDelta(t, tt.hi[k], c.hi[k], 1e-9, "hi[%d]", k)
					assert.InDelta(t, tt.mean[k], c.mean[k], 1e-9, "mean[%d]", k)
				}
			}
		})
	}
}

func TestByteTicks(t *testing.T) {
	tests := []struct {
		v    float64
		want []float64
	}{
		{275000, []float64{0, 65536, 131072, 196608, 262144, 327680}},
		{3, []float64{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, byteTicks(tt.v))
	}
}

func TestPlotEmptyTrace(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Plot(&buf, nil, PlotOptions{}))
	assert.True(t, strings.HasSuffix(buf.String(), "</svg>\n"))
	require.NoError(t, PlotPNG(io.Discard, nil, PlotOptions{}))
}
