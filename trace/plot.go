package trace

import (
	"cmp"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// PlotOptions sets the picture's title and size in pixels. Zero sizes
// take 960×720.
type PlotOptions struct {
	Title         string
	Width, Height int
}

// series is one line of the plot: values of one quantity of one stream.
type series struct {
	color int          // index of the stream, and so of its color
	width float64      // stroke width
	step  bool         // the value holds until the next point (a window size)
	pts   [][2]float64 // (t, value)
}

// panel is one chart of the plot, sharing the time axis with the others.
type panel struct {
	title  string
	series []series
	marks  [][2]float64 // (t, stream index) of stalls, drawn as ticks
}

// Plot draws the trace as SVG: for every stream, the bytes its receiving
// application has read (top), its receive window and the bytes buffered
// unread (middle), and the send credit it had, with every stall marked
// (bottom). Several streams share one picture, a color each.
func Plot(w io.Writer, recs []Record, opts PlotOptions) error {
	c := &svgCanvas{}
	draw(c, recs, opts)
	_, err := io.WriteString(w, c.String())
	return err
}

// PlotPNG draws the same picture as Plot, as a PNG image.
func PlotPNG(w io.Writer, recs []Record, opts PlotOptions) error {
	opts = withSize(opts)
	c := newPNGCanvas(opts.Width, opts.Height)
	draw(c, recs, opts)
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

// palette holds the streams' colors, chosen to be told apart.
var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 255}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 255}, {0xff, 0x7f, 0x0e, 255},
	{0x94, 0x67, 0xbd, 255}, {0x8c, 0x56, 0x4b, 255}, {0xe3, 0x77, 0xc2, 255}, {0x17, 0xbe, 0xcf, 255},
}

// maxStreamsDrawn bounds the streams drawn; more are summarized in a note.
const maxStreamsDrawn = 16

func panels(recs []Record) (read, top, bottom panel, streams []uint64) {
	byStream := map[uint64]int{}
	index := func(id uint64) int {
		i, ok := byStream[id]
		if !ok {
			i = len(streams)
			byStream[id] = i
			streams = append(streams, id)
		}
		return i
	}
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b Record) int { return cmp.Compare(a.T, b.T) })
	read = panel{title: "bytes read by the receiving application (the slope is the rate)"}
	top = panel{title: "receive window (solid) and bytes buffered unread (thin)"}
	bottom = panel{title: "send credit; ticks mark stalls (writer out of credit)"}
	consumed := map[int]*series{}
	win := map[int]*series{}
	buf := map[int]*series{}
	credit := map[int]*series{}
	get := func(m map[int]*series, i int) *series {
		s, ok := m[i]
		if !ok {
			s = &series{color: i, width: 2}
			m[i] = s
		}
		return s
	}
	for _, r := range sorted {
		i := index(r.Stream)
		if i >= maxStreamsDrawn {
			continue
		}
		switch r.Event {
		case "grant", "window", "consumed", "peer_blocked":
			get(consumed, i).pts = append(get(consumed, i).pts, [2]float64{r.T, float64(r.Consumed)})
			get(win, i).pts = append(get(win, i).pts, [2]float64{r.T, float64(r.Window)})
			get(buf, i).pts = append(get(buf, i).pts, [2]float64{r.T, float64(r.Buffered)})
		case "credit", "blocked", "unblocked":
			get(credit, i).pts = append(get(credit, i).pts, [2]float64{r.T, float64(r.Credit)})
			if r.Event == "blocked" {
				bottom.marks = append(bottom.marks, [2]float64{r.T, float64(i)})
			}
		}
	}
	for i := range min(len(streams), maxStreamsDrawn) {
		if s, ok := consumed[i]; ok {
			read.series = append(read.series, *s)
		}
		if s, ok := win[i]; ok {
			s.step = true
			top.series = append(top.series, *s)
		}
		if s, ok := buf[i]; ok {
			s.width = 1
			top.series = append(top.series, *s)
		}
		if s, ok := credit[i]; ok {
			bottom.series = append(bottom.series, *s)
		}
	}
	return read, top, bottom, streams
}

// canvas is what the plot draws on: SVG or a bitmap.
type canvas interface {
	size(w, h int)
	line(x1, y1, x2, y2 float64, c color.RGBA, width float64)
	polyline(pts [][2]float64, c color.RGBA, width float64)
	text(x, y float64, s string, anchor string, c color.RGBA)
}

var (
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{0xcc, 0xcc, 0xcc, 255}
	dark  = color.RGBA{0x55, 0x55, 0x55, 255}
)

func draw(c canvas, recs []Record, opts PlotOptions) {
	opts = withSize(opts)
	c.size(opts.Width, opts.Height)
	read, top, bottom, streams := panels(recs)
	tmax := 0.0
	for _, r := range recs {
		tmax = max(tmax, r.T)
	}
	if tmax == 0 {
		tmax = 1
	}
	title := opts.Title
	if title == "" {
		title = "bp/1 flow control"
	}
	c.text(20, 22, title, "start", black)
	left, right := 80.0, float64(opts.Width)-20
	h := (float64(opts.Height) - 140) / 3
	drawPanel(c, read, left, 40, right, 40+h, tmax)
	drawPanel(c, top, left, 70+h, right, 70+2*h, tmax)
	drawPanel(c, bottom, left, 100+2*h, right, 100+3*h, tmax)
	c.text((left+right)/2, float64(opts.Height)-12, "time (s)", "middle", black)
	// Legend, right-aligned on the title's line: a color per stream.
	drawn := streams[:min(len(streams), maxStreamsDrawn)]
	x := right
	if len(streams) > maxStreamsDrawn {
		note := fmt.Sprintf("(+%d streams not drawn)", len(streams)-maxStreamsDrawn)
		c.text(x, 22, note, "end", dark)
		x -= 7*float64(len(note)) + 10
	}
	for i := len(drawn) - 1; i >= 0; i-- {
		label := "stream " + strconv.FormatUint(drawn[i], 10)
		c.text(x, 22, label, "end", black)
		x -= 7*float64(len(label)) + 4
		c.line(x-18, 18, x, 18, palette[i%len(palette)], 3)
		x -= 30
	}
}

func drawPanel(c canvas, p panel, x0, y0, x1, y1, tmax float64) {
	vmax := 0.0
	for _, s := range p.series {
		for _, pt := range s.pts {
			vmax = max(vmax, pt[1])
		}
	}
	vmax = niceBytes(vmax)
	c.text(x0, y0-6, p.title, "start", dark)
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		y := y1 - (y1-y0)*float64(i)/4
		c.line(x0, y, x1, y, grey, 1)
		c.text(x0-6, y+4, bytesLabel(vmax*float64(i)/4), "end", dark)
	}
	step := niceCeil(tmax / 8)
	for t := 0.0; t <= tmax+step/1000; t += step {
		x := x0 + (x1-x0)*t/tmax
		c.line(x, y1, x, y1+4, dark, 1)
		c.text(x, y1+16, strconv.FormatFloat(t, 'g', 4, 64), "middle", dark)
	}
	c.line(x0, y0, x0, y1, black, 1)
	c.line(x0, y1, x1, y1, black, 1)
	scale := func(pt [2]float64) [2]float64 {
		return [2]float64{x0 + (x1-x0)*pt[0]/tmax, y1 - (y1-y0)*pt[1]/vmax}
	}
	for _, s := range p.series {
		pts := make([][2]float64, 0, 2*len(s.pts))
		for i, pt := range s.pts {
			// A window size holds until the next event; so does a credit
			// of zero (a stall), which only an event can end.
			if i > 0 && (s.step || s.pts[i-1][1] == 0) {
				pts = append(pts, scale([2]float64{pt[0], s.pts[i-1][1]}))
			}
			pts = append(pts, scale(pt))
		}
		c.polyline(decimate(pts), palette[s.color%len(palette)], s.width)
	}
	for _, m := range p.marks {
		x := x0 + (x1-x0)*m[0]/tmax
		c.line(x, y1, x, y1-8, palette[int(m[1])%len(palette)], 1)
	}
}

// decimate keeps, of the points that fall in one pixel column, the first,
// the lowest, the highest and the last, in their order: the line looks the
// same, and a trace of a million events draws with a few thousand points.
func decimate(pts [][2]float64) [][2]float64 {
	out := pts[:0:0]
	for i := 0; i < len(pts); {
		col := int(pts[i][0])
		j := i
		lo, hi := i, i
		for j < len(pts) && int(pts[j][0]) == col {
			if pts[j][1] < pts[lo][1] {
				lo = j
			}
			if pts[j][1] > pts[hi][1] {
				hi = j
			}
			j++
		}
		keep := []int{i, lo, hi, j - 1}
		slices.Sort(keep)
		for k, idx := range keep {
			if k == 0 || idx != keep[k-1] {
				out = append(out, pts[idx])
			}
		}
		i = j
	}
	return out
}

// niceBytes rounds a byte count up to a power of two, or three times one,
// so that quarters of it read well in KiB and MiB.
func niceBytes(v float64) float64 {
	p := 1024.0
	for p < v {
		if 1.5*p >= v {
			return 1.5 * p
		}
		p *= 2
	}
	return p
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func bytesLabel(v float64) string {
	switch {
	case v >= 1<<30:
		return strconv.FormatFloat(v/(1<<30), 'g', 3, 64) + " GiB"
	case v >= 1<<20:
		return strconv.FormatFloat(v/(1<<20), 'g', 3, 64) + " MiB"
	case v >= 1<<10:
		return strconv.FormatFloat(v/(1<<10), 'g', 3, 64) + " KiB"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + " B"
}

// svgCanvas builds an SVG document.
type svgCanvas struct{ b strings.Builder }

func (c *svgCanvas) size(w, h int) {
	fmt.Fprintf(&c.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&c.b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
}

func rgb(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func (c *svgCanvas) line(x1, y1, x2, y2 float64, col color.RGBA, width float64) {
	fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"/>`+"\n", x1, y1, x2, y2, rgb(col), width)
}

func (c *svgCanvas) polyline(pts [][2]float64, col color.RGBA, width float64) {
	if len(pts) == 0 {
		return
	}
	c.b.WriteString(`<polyline fill="none" stroke="` + rgb(col) + `" stroke-width="` + strconv.FormatFloat(width, 'g', 3, 64) + `" points="`)
	for _, p := range pts {
		fmt.Fprintf(&c.b, "%.1f,%.1f ", p[0], p[1])
	}
	c.b.WriteString("\"/>\n")
}

func (c *svgCanvas) text(x, y float64, s, anchor string, col color.RGBA) {
	fmt.Fprintf(&c.b, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s">%s</text>`+"\n", x, y, anchor, rgb(col), escapeXML(s))
}

func (c *svgCanvas) String() string { return c.b.String() + "</svg>\n" }

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// pngCanvas draws on a bitmap.
type pngCanvas struct{ img *image.RGBA }

func newPNGCanvas(w, h int) *pngCanvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	return &pngCanvas{img: img}
}

func (c *pngCanvas) size(int, int) {}

func (c *pngCanvas) line(x1, y1, x2, y2 float64, col color.RGBA, width float64) {
	n := int(math.Max(math.Abs(x2-x1), math.Abs(y2-y1))) + 1
	r := int(width / 2)
	for i := 0; i <= n; i++ {
		f := float64(i) / float64(n)
		x, y := int(x1+(x2-x1)*f), int(y1+(y2-y1)*f)
		for dx := -r; dx <= r; dx++ {
			for dy := -r; dy <= r; dy++ {
				c.img.SetRGBA(x+dx, y+dy, col)
			}
		}
	}
}

func (c *pngCanvas) polyline(pts [][2]float64, col color.RGBA, width float64) {
	for i := 1; i < len(pts); i++ {
		c.line(pts[i-1][0], pts[i-1][1], pts[i][0], pts[i][1], col, width)
	}
}

func (c *pngCanvas) text(x, y float64, s, anchor string, col color.RGBA) {
	d := &font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: basicfont.Face7x13}
	w := d.MeasureString(s).Round()
	switch anchor {
	case "middle":
		x -= float64(w) / 2
	case "end":
		x -= float64(w)
	}
	d.Dot = fixed.P(int(x), int(y))
	d.DrawString(s)
}
