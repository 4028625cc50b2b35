package trace

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/font/inconsolata"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"
)

// anchor says which point of a text its coordinates name.
type anchor int

const (
	anchorStart anchor = iota
	anchorMiddle
	anchorEnd
)

// canvas is what the plot draws on: SVG or a bitmap. Coordinates are in
// pixels from the top left; texts are placed by their baseline.
type canvas interface {
	rect(x0, y0, x1, y1 float64, c color.NRGBA)
	polyline(pts [][2]float64, c color.NRGBA, width float64)
	polygon(pts [][2]float64, c color.NRGBA)
	text(x, y float64, s string, a anchor, st style, c color.NRGBA)
}

// style is a text's face: the plot draws with bitmap faces (monospaced,
// so that the layout can measure what it writes, and crisp at any size of
// picture).
type style int

const (
	styleSmall  style = iota // tick labels: 7×13
	styleNormal              // panel titles, legend, notes: 8×16
	styleTitle               // the headline: 8×16 bold
)

var faces = [...]*basicfont.Face{styleSmall: basicfont.Face7x13, styleNormal: inconsolata.Regular8x16, styleTitle: inconsolata.Bold8x16}

// svgSizes are font sizes whose monospaced advance matches the faces'.
var svgSizes = [...]float64{styleSmall: 11.5, styleNormal: 13.3, styleTitle: 13.3}

// textWidth is the width of s in pixels.
func textWidth(s string, st style) float64 {
	return float64(faces[st].Advance * utf8.RuneCountInString(s))
}

// svgCanvas builds an SVG document.
type svgCanvas struct{ b strings.Builder }

func newSVGCanvas(w, h int) *svgCanvas {
	c := &svgCanvas{}
	fmt.Fprintf(&c.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Inconsolata, 'DejaVu Sans Mono', Menlo, Consolas, monospace">`+"\n", w, h, w, h)
	fmt.Fprintf(&c.b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	return c
}

// paint returns the SVG attributes of a color: rgb and, if not opaque,
// an opacity.
func paint(attr string, c color.NRGBA) string {
	s := fmt.Sprintf(`%s="#%02x%02x%02x"`, attr, c.R, c.G, c.B)
	if c.A != 255 {
		s += fmt.Sprintf(` %s-opacity="%.2f"`, attr, float64(c.A)/255)
	}
	return s
}

func (c *svgCanvas) rect(x0, y0, x1, y1 float64, col color.NRGBA) {
	fmt.Fprintf(&c.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" %s/>`+"\n", x0, y0, x1-x0, y1-y0, paint("fill", col))
}

func (c *svgCanvas) points(pts [][2]float64) {
	for i, p := range pts {
		if i > 0 {
			c.b.WriteByte(' ')
		}
		c.b.WriteString(strconv.FormatFloat(p[0], 'f', 1, 64))
		c.b.WriteByte(',')
		c.b.WriteString(strconv.FormatFloat(p[1], 'f', 1, 64))
	}
}

func (c *svgCanvas) polyline(pts [][2]float64, col color.NRGBA, width float64) {
	if len(pts) < 2 {
		return
	}
	fmt.Fprintf(&c.b, `<polyline fill="none" %s stroke-width="%g" stroke-linejoin="round" points="`, paint("stroke", col), width)
	c.points(pts)
	c.b.WriteString("\"/>\n")
}

func (c *svgCanvas) polygon(pts [][2]float64, col color.NRGBA) {
	if len(pts) < 3 {
		return
	}
	fmt.Fprintf(&c.b, `<polygon %s points="`, paint("fill", col))
	c.points(pts)
	c.b.WriteString("\"/>\n")
}

func (c *svgCanvas) text(x, y float64, s string, a anchor, st style, col color.NRGBA) {
	weight := ""
	if st == styleTitle {
		weight = ` font-weight="bold"`
	}
	fmt.Fprintf(&c.b, `<text x="%.1f" y="%.1f" font-size="%g"%s text-anchor="%s" %s>%s</text>`+"\n",
		x, y, svgSizes[st], weight, [...]string{"start", "middle", "end"}[a], paint("fill", col), escapeXML(s))
}

func (c *svgCanvas) String() string { return c.b.String() + "</svg>\n" }

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// pngCanvas draws on a bitmap, with anti-aliased lines and text.
type pngCanvas struct {
	img *image.RGBA
	r   vector.Rasterizer
}

func newPNGCanvas(w, h int) *pngCanvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	return &pngCanvas{img: img}
}

func (c *pngCanvas) rect(x0, y0, x1, y1 float64, col color.NRGBA) {
	r := image.Rect(int(math.Round(x0)), int(math.Round(y0)), int(math.Round(x1)), int(math.Round(y1)))
	draw.Draw(c.img, r, image.NewUniform(col), image.Point{}, draw.Over)
}

// fill rasterizes the closed paths that add adds, within their bounding
// box, and paints them in col.
func (c *pngCanvas) fill(bounds [4]float64, col color.NRGBA, add func(moveTo, lineTo func(x, y float64))) {
	// The rasterizer closes a path only when told: close each before the
	// next begins, and the last at the end.
	open := false
	box := image.Rect(int(math.Floor(bounds[0]))-1, int(math.Floor(bounds[1]))-1,
		int(math.Ceil(bounds[2]))+1, int(math.Ceil(bounds[3]))+1).Intersect(c.img.Bounds())
	if box.Empty() {
		return
	}
	ox, oy := float32(box.Min.X), float32(box.Min.Y)
	c.r.Reset(box.Dx(), box.Dy())
	add(func(x, y float64) {
		if open {
			c.r.ClosePath()
		}
		c.r.MoveTo(float32(x)-ox, float32(y)-oy)
		open = true
	}, func(x, y float64) { c.r.LineTo(float32(x)-ox, float32(y)-oy) })
	if open {
		c.r.ClosePath()
	}
	c.r.Draw(c.img, box, image.NewUniform(col), image.Point{})
}

func bbox(pts [][2]float64, pad float64) [4]float64 {
	b := [4]float64{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
	for _, p := range pts {
		b = [4]float64{min(b[0], p[0]-pad), min(b[1], p[1]-pad), max(b[2], p[0]+pad), max(b[3], p[1]+pad)}
	}
	return b
}

// polyline strokes each segment as a quadrilateral, all with the same
// orientation, so that their overlaps at the joints add up to full cover.
func (c *pngCanvas) polyline(pts [][2]float64, col color.NRGBA, width float64) {
	if len(pts) < 2 {
		return
	}
	h := width / 2
	c.fill(bbox(pts, h+1), col, func(moveTo, lineTo func(x, y float64)) {
		for i := 1; i < len(pts); i++ {
			p, q := pts[i-1], pts[i]
			dx, dy := q[0]-p[0], q[1]-p[1]
			l := math.Hypot(dx, dy)
			if l == 0 {
				continue
			}
			// Extend each segment by half the width at both ends, so that
			// joints and ends are covered (square caps).
			ex, ey := dx/l*h, dy/l*h
			nx, ny := -ey, ex
			moveTo(p[0]-ex+nx, p[1]-ey+ny)
			lineTo(q[0]+ex+nx, q[1]+ey+ny)
			lineTo(q[0]+ex-nx, q[1]+ey-ny)
			lineTo(p[0]-ex-nx, p[1]-ey-ny)
		}
	})
}

func (c *pngCanvas) polygon(pts [][2]float64, col color.NRGBA) {
	if len(pts) < 3 {
		return
	}
	c.fill(bbox(pts, 0), col, func(moveTo, lineTo func(x, y float64)) {
		moveTo(pts[0][0], pts[0][1])
		for _, p := range pts[1:] {
			lineTo(p[0], p[1])
		}
	})
}

func (c *pngCanvas) text(x, y float64, s string, a anchor, st style, col color.NRGBA) {
	switch a {
	case anchorMiddle:
		x -= textWidth(s, st) / 2
	case anchorEnd:
		x -= textWidth(s, st)
	}
	d := &font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: faces[st], Dot: fixed.P(int(math.Round(x)), int(math.Round(y)))}
	d.DrawString(s)
}
