package trace

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleTrace() []Record {
	var recs []Record
	for i := range 40 {
		t := float64(i) * 0.05
		for _, s := range []uint64{1, 3} {
			recs = append(recs,
				Record{T: t, Side: "recv", Stream: s, Event: "grant", Window: uint64(65536 * (1 + i/10)), Buffered: uint64(1000 * i), Limit: uint64(65536 * i)},
				Record{T: t + 0.01, Side: "send", Stream: s, Event: "credit", Credit: uint64(30000 + 100*i)},
				Record{T: t + 0.04, Side: "send", Stream: s, Event: "blocked"},
			)
		}
	}
	return recs
}

func TestPlotSVG(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Plot(&buf, sampleTrace(), PlotOptions{Title: "two <streams>"}))
	dec := xml.NewDecoder(&buf)
	elements := map[string]int{}
	for i := 0; i < 100000; i++ {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the SVG is well-formed XML")
		if se, ok := tok.(xml.StartElement); ok {
			elements[se.Name.Local]++
		}
	}
	assert.Equal(t, 1, elements["svg"])
	assert.Equal(t, 8, elements["polyline"], "read, window and buffered for 2 streams, credit for 2")
	assert.Greater(t, elements["line"], 80, "axes, grid and a tick per stall")
}

func TestPlotSVGText(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Plot(&buf, sampleTrace(), PlotOptions{Title: "two <streams>"}))
	s := buf.String()
	for _, want := range []string{"two &lt;streams&gt;", "stream 1", "stream 3", "KiB", "time (s)"} {
		assert.Contains(t, s, want)
	}
}

func TestPlotPNG(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, PlotPNG(&buf, sampleTrace(), PlotOptions{Width: 640, Height: 480}))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	assert.Equal(t, 640, img.Bounds().Dx())
	assert.Equal(t, 480, img.Bounds().Dy())
	colored := 0
	for y := 0; y < 480; y += 2 {
		for x := 0; x < 640; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r != g || g != b {
				colored++
			}
		}
	}
	assert.Greater(t, colored, 200, "the streams' lines are drawn in color")
}

func TestPlotEmptyTrace(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Plot(&buf, nil, PlotOptions{}))
	assert.True(t, strings.HasSuffix(buf.String(), "</svg>\n"))
	require.NoError(t, PlotPNG(io.Discard, nil, PlotOptions{}))
}

func TestDecimateKeepsShape(t *testing.T) {
	var pts [][2]float64
	for i := range 10000 { // 100 points per pixel column, a sawtooth
		pts = append(pts, [2]float64{float64(i) / 100, float64(i % 7)})
	}
	out := decimate(pts)
	assert.LessOrEqual(t, len(out), 4*100)
	assert.Equal(t, pts[0], out[0])
	assert.Equal(t, pts[len(pts)-1], out[len(out)-1])
	lo, hi := 1e9, -1e9
	for _, p := range out {
		lo, hi = min(lo, p[1]), max(hi, p[1])
	}
	assert.Equal(t, 0.0, lo, "the lowest value survives")
	assert.Equal(t, 6.0, hi, "the highest value survives")
	for i := 1; i < len(out); i++ {
		assert.LessOrEqual(t, out[i-1][0], out[i][0], "points stay in time order")
	}
}
