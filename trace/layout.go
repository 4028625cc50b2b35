package trace

import (
	"fmt"
	"image/color"
	"math"
	"sort"
	"strconv"
	"strings"
)

// palette holds the lanes' colors, chosen to be told apart.
var palette = []color.NRGBA{
	{0x1f, 0x77, 0xb4, 255}, {0xd6, 0x27, 0x28, 255}, {0x2c, 0xa0, 0x2c, 255}, {0xff, 0x7f, 0x0e, 255},
	{0x94, 0x67, 0xbd, 255}, {0x8c, 0x56, 0x4b, 255}, {0xe3, 0x77, 0xc2, 255}, {0x17, 0xbe, 0xcf, 255},
}

func laneColor(i int) color.NRGBA { return palette[i%len(palette)] }

// tint is c made translucent, for bands.
func tint(c color.NRGBA, a uint8) color.NRGBA { c.A = a; return c }

var (
	black = color.NRGBA{0, 0, 0, 255}
	dark  = color.NRGBA{0x44, 0x44, 0x44, 255}
	grid  = color.NRGBA{0xe2, 0xe2, 0xe2, 255}
	axis  = color.NRGBA{0x88, 0x88, 0x88, 255}
)

// area is a panel's plotting rectangle, and the time axis it shares.
type area struct {
	x0, y0, x1, y1 float64
	span           float64 // seconds across
}

func (a area) x(t float64) float64 { return a.x0 + (a.x1-a.x0)*t/a.span }

// scale maps a panel's values to its height and labels its ticks.
type scale struct {
	y     func(v float64) float64 // 0 at the bottom, 1 at the top
	ticks []float64
	label func(v float64) string
}

// panel is one chart of the plot.
type panel struct {
	title  string
	weight float64 // share of the height
	scale  scale
	draw   func(c canvas, a area, y func(float64) float64)
}

func layout(c canvas, m *model, opts PlotOptions) {
	W, H := float64(opts.Width), float64(opts.Height)
	left, right := 76.0, W-18
	ncol := max(1, int(right-left))
	title := opts.Title
	if title == "" {
		title = m.defaultTitle()
	}
	c.text(12, 22, title, anchorStart, styleTitle, black)
	c.text(12, 40, fitText(m.subtitle(), W-24, styleNormal), anchorStart, styleNormal, dark)
	y := legend(c, m, 12, 60, right)

	ps := panels(m, ncol)
	if len(ps) == 0 {
		c.text(W/2, H/2, "no flow-control events to draw", anchorMiddle, styleNormal, dark)
		return
	}
	const header, gap, bottom = 24.0, 14.0, 40.0
	weights := 0.0
	for _, p := range ps {
		weights += p.weight
	}
	avail := H - y - bottom - float64(len(ps))*(header+gap)
	step := niceCeil(m.span / 8)
	if m.span/step < 4 {
		step = niceCeil(m.span / 10)
	}
	for i, p := range ps {
		y0 := y + header
		y1 := y0 + max(20, avail*p.weight/weights)
		a := area{left, y0, right, y1, m.span}
		c.text(12, y0-9, p.title, anchorStart, styleNormal, black)
		for _, v := range p.scale.ticks {
			ty := y1 - (y1-y0)*p.scale.y(v)
			c.rect(left, math.Round(ty), right, math.Round(ty)+1, grid)
			c.text(left-6, ty+4, p.scale.label(v), anchorEnd, styleSmall, dark)
		}
		for k := 0; float64(k)*step <= m.span*1.0001; k++ {
			t := float64(k) * step
			x := math.Round(a.x(t))
			c.rect(x, y0, x+1, y1, grid)
			c.rect(x, y1, x+1, y1+4, axis)
			if i == len(ps)-1 {
				c.text(x, y1+17, strconv.FormatFloat(t, 'g', 6, 64), anchorMiddle, styleSmall, dark)
			}
		}
		p.draw(c, a, func(v float64) float64 { return y1 - (y1-y0)*p.scale.y(v) })
		c.rect(left, y0, left+1, y1+1, axis)
		c.rect(left, y1, right, y1+1, axis)
		y = y1 + gap
		if i == len(ps)-1 {
			c.text((left+right)/2, y1+34, m.axisLabel(), anchorMiddle, styleNormal, black)
		}
	}
}

// defaultTitle says what the traces hold: the sides and hosts.
func (m *model) defaultTitle() string {
	var ends []string
	seen := map[string]bool{}
	for _, l := range m.lanes {
		e := l.side
		if l.host != "" {
			e += " @ " + l.host
		}
		if !seen[e] {
			seen[e] = true
			ends = append(ends, e)
		}
	}
	if len(ends) == 0 {
		return "bp/1 flow control"
	}
	return "bp/1 flow control seen by " + joinAnd(ends)
}

func joinAnd(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// subtitle says when, for how long, and from which files.
func (m *model) subtitle() string {
	var s string
	if m.wall {
		s = fmt.Sprintf("from %s, %s, %d events", m.start.Local().Format("2006-01-02 15:04:05.000 MST"), secondsLabel(m.span), m.events)
	} else {
		s = fmt.Sprintf("%d events; no wall-clock time in the trace: times count from each trace's own start", m.events)
		if len(m.names) > 1 {
			s += " and do not line up"
		}
	}
	var names []string
	for _, n := range m.names {
		if n != "" {
			names = append(names, shortName(n))
		}
	}
	if len(names) > 0 {
		s += "; " + strings.Join(names, ", ")
	}
	return s
}

func (m *model) axisLabel() string {
	if m.wall {
		return "seconds since " + m.start.Local().Format("15:04:05.000")
	}
	return "seconds since the trace started"
}

func secondsLabel(s float64) string {
	if s < 10 {
		return strconv.FormatFloat(s, 'f', 2, 64) + " s"
	}
	return strconv.FormatFloat(s, 'f', 1, 64) + " s"
}

// legend writes a swatch and a label per lane from (x, y), wrapping at
// right, and returns the y below it.
func legend(c canvas, m *model, x, y, right float64) float64 {
	x0 := x
	type entry struct {
		text    string
		col     color.NRGBA
		kind    int  // 0: none, 1: a lane's line, 2: a reason's block, 3: a tick
		newline bool // on a new line
	}
	entries := make([]entry, 0, len(m.lanes)+8)
	for i, l := range m.lanes {
		entries = append(entries, entry{text: m.label(l), col: laneColor(i), kind: 1})
	}
	if m.hidden > 0 {
		entries = append(entries, entry{text: fmt.Sprintf("(%d more lanes not drawn)", m.hidden)})
	}
	for i, r := range m.reasons() {
		entries = append(entries, entry{text: reasonLabel(r), col: reasonColor(r), kind: 2, newline: i == 0})
	}
	if m.hasLosses() {
		entries = append(entries, entry{text: "QUIC packet lost", col: lossColor, kind: 3})
	}
	for _, e := range entries {
		w := 26 + textWidth(e.text, styleNormal) + 18
		if x > x0 && (x+w > right || e.newline) {
			x, y = x0, y+18
		}
		switch e.kind {
		case 1:
			c.rect(x, y-6, x+20, y-3, e.col)
		case 2:
			c.rect(x+4, y-10, x+20, y, e.col)
		case 3:
			c.rect(x+12, y-11, x+13, y+1, e.col)
		}
		c.text(x+26, y, e.text, anchorStart, styleNormal, black)
		x += w
	}
	return y + 6
}

// panels returns the panels that have data, in order.
func panels(m *model, ncol int) []panel {
	var out []panel
	nbin := max(10, ncol/6)
	// Bands fold 3 pixels a column: a sawtooth a little faster than a
	// pixel's time reads as one band rather than a comb.
	ncol = max(1, ncol/3)
	if p, ok := ratePanel(m, nbin); ok {
		out = append(out, p)
	}
	if p, ok := bandPanel(m, ncol, "receive window (thick line) and unread bytes (band: range per pixel column; thin line: mean)",
		func(l *lane) []sample { return l.buf }, func(l *lane) []sample { return l.window }); ok {
		out = append(out, p)
	}
	if p, ok := bandPanel(m, ncol, "send credit available (band: range per pixel column; line: mean)",
		func(l *lane) []sample { return l.credit }, nil); ok {
		out = append(out, p)
	}
	if p, ok := stallPanel(m, nbin); ok {
		out = append(out, p)
	}
	if p, ok := blockedPanel(m); ok {
		out = append(out, p)
	}
	return out
}

// cols are the values of a step function over the columns of a panel.
type cols struct {
	lo, hi, mean []float64
	has          []bool
}

// stepColumns folds the step function of samples (each value holds until
// the next sample, the last until end) into n columns across span
// seconds: its range and time-weighted mean in each.
func stepColumns(ss []sample, end, span float64, n int) cols {
	c := cols{make([]float64, n), make([]float64, n), make([]float64, n), make([]bool, n)}
	wsum := make([]float64, n)
	col := func(t float64) int { return min(n-1, max(0, int(t/span*float64(n)))) }
	for i, s := range ss {
		b := end
		if i+1 < len(ss) {
			b = ss[i+1].x
		}
		b = max(b, s.x)
		for k := col(s.x); k <= col(b); k++ {
			ks, ke := span*float64(k)/float64(n), span*float64(k+1)/float64(n)
			overlap := min(b, ke) - max(s.x, ks)
			if overlap <= 0 && k != col(s.x) {
				continue
			}
			if !c.has[k] {
				c.has[k], c.lo[k], c.hi[k] = true, s.v, s.v
			}
			c.lo[k], c.hi[k] = min(c.lo[k], s.v), max(c.hi[k], s.v)
			if overlap > 0 {
				wsum[k] += overlap
				c.mean[k] += overlap * s.v
			}
		}
	}
	for k := range n {
		if wsum[k] > 0 {
			c.mean[k] /= wsum[k]
		} else {
			c.mean[k] = c.hi[k]
		}
	}
	return c
}

// runs calls f for each run of columns that have data.
func runs(has []bool, f func(i, j int)) {
	for i := 0; i < len(has); {
		if !has[i] {
			i++
			continue
		}
		j := i
		for j < len(has) && has[j] {
			j++
		}
		f(i, j)
		i = j
	}
}

// bandPanel draws, per lane, band(l) as a band and its mean, and line(l)
// (if not nil) as a thick line.
func bandPanel(m *model, ncol int, title string, band, line func(*lane) []sample) (panel, bool) {
	type drawn struct {
		i          int
		band, line cols
	}
	var ds []drawn
	vmax := 0.0
	for i, l := range m.lanes {
		if len(band(l)) == 0 {
			continue
		}
		d := drawn{i: i, band: stepColumns(band(l), l.last, m.span, ncol)}
		if line != nil {
			d.line = stepColumns(line(l), l.last, m.span, ncol)
		}
		for k := range ncol {
			if d.band.has[k] {
				vmax = max(vmax, d.band.hi[k])
			}
			if line != nil && d.line.has[k] {
				vmax = max(vmax, d.line.hi[k])
			}
		}
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return panel{}, false
	}
	ticks := byteTicks(vmax * 1.05)
	top := ticks[len(ticks)-1]
	p := panel{title: title, weight: 1, scale: scale{
		y:     func(v float64) float64 { return v / top },
		ticks: ticks,
		label: bytesLabel,
	}}
	p.draw = func(c canvas, a area, y func(float64) float64) {
		colX := func(k int) float64 { return a.x0 + (a.x1-a.x0)*float64(k)/float64(ncol) }
		for _, d := range ds {
			col := laneColor(d.i)
			runs(d.band.has, func(i, j int) {
				var poly, mean [][2]float64
				for k := i; k < j; k++ {
					poly = append(poly, [2]float64{colX(k), y(d.band.hi[k]) - 0.5}, [2]float64{colX(k + 1), y(d.band.hi[k]) - 0.5})
					mean = append(mean, [2]float64{colX(k) + 0.5, y(d.band.mean[k])})
				}
				for k := j - 1; k >= i; k-- {
					poly = append(poly, [2]float64{colX(k + 1), y(d.band.lo[k]) + 0.5}, [2]float64{colX(k), y(d.band.lo[k]) + 0.5})
				}
				c.polygon(poly, tint(col, 0x48))
				if len(mean) == 1 {
					mean = append(mean, [2]float64{mean[0][0] + 1, mean[0][1]})
				}
				c.polyline(mean, col, 1.25)
			})
			if line != nil {
				runs(d.line.has, func(i, j int) {
					var pts [][2]float64
					for k := i; k < j; k++ {
						pts = append(pts, [2]float64{colX(k), y(d.line.mean[k])}, [2]float64{colX(k + 1), y(d.line.mean[k])})
					}
					c.polyline(pts, col, 2.5)
				})
			}
		}
	}
	return p, true
}

// bins are a lane's values over equal slices of time.
type bins struct {
	v   []float64
	has []bool
}

// binned returns f over nbin bins across span for lane l, each bin kept
// only if the lane covers at least half of it.
func binned(l *lane, span float64, nbin int, f func(a, b float64) float64) bins {
	out := bins{make([]float64, nbin), make([]bool, nbin)}
	bw := span / float64(nbin)
	for k := range nbin {
		a, b := max(l.first, bw*float64(k)), min(l.last, bw*float64(k+1))
		if b-a >= bw/2 || (l.last-l.first < bw && b > a) {
			out.v[k], out.has[k] = f(a, b), true
		}
	}
	return out
}

// cumulative interpolates a monotonic count at t.
func cumulative(ss []sample, t float64) float64 {
	i := sort.Search(len(ss), func(i int) bool { return ss[i].x >= t })
	switch {
	case i == 0:
		return ss[0].v
	case i == len(ss):
		return ss[len(ss)-1].v
	}
	p, q := ss[i-1], ss[i]
	if q.x == p.x {
		return q.v
	}
	return p.v + (q.v-p.v)*(t-p.x)/(q.x-p.x)
}

// stepBins draws bins as a step line, and fills under it if fill.
func stepBins(c canvas, a area, y func(float64) float64, b bins, col color.NRGBA, width float64, fill bool) {
	n := len(b.v)
	bx := func(k int) float64 { return a.x0 + (a.x1-a.x0)*float64(k)/float64(n) }
	runs(b.has, func(i, j int) {
		var pts [][2]float64
		for k := i; k < j; k++ {
			pts = append(pts, [2]float64{bx(k), y(b.v[k])}, [2]float64{bx(k + 1), y(b.v[k])})
		}
		if fill {
			poly := append(append([][2]float64{{bx(i), y(0)}}, pts...), [2]float64{bx(j), y(0)})
			c.polygon(poly, tint(col, 0x30))
		}
		c.polyline(pts, col, width)
	})
}

// ratePanel draws each lane's delivery rate.
func ratePanel(m *model, nbin int) (panel, bool) {
	type drawn struct {
		i int
		b bins
	}
	var ds []drawn
	lo, hi := math.Inf(1), 0.0
	for i, l := range m.lanes {
		if len(l.consumed) < 2 {
			continue
		}
		ss := l.consumed
		b := binned(l, m.span, nbin, func(a, b float64) float64 {
			return (cumulative(ss, b) - cumulative(ss, a)) / (b - a)
		})
		for k, v := range b.v {
			if b.has[k] {
				hi = max(hi, v)
				if v > 0 {
					lo = min(lo, v)
				}
			}
		}
		ds = append(ds, drawn{i, b})
	}
	if len(ds) == 0 || hi == 0 {
		return panel{}, false
	}
	title := "delivery rate: bytes read by the receiving application per second"
	var sc scale
	if hi/lo > 30 {
		title += " (log scale)"
		sc = logRateScale(lo, hi)
	} else {
		sc = linearRateScale(hi)
	}
	p := panel{title: title, weight: 1, scale: sc}
	p.draw = func(c canvas, a area, y func(float64) float64) {
		// The ends of one transfer see the same rate: the first is drawn
		// wider, so that the others show on top of it.
		for k, d := range ds {
			stepBins(c, a, y, d.b, laneColor(d.i), max(1.5, 3.5-1.5*float64(k)), false)
		}
	}
	return p, true
}

// logRateScale spans lo to hi on a log axis, with ticks at 1, 10 and 100
// of B/s, KiB/s, MiB/s and GiB/s.
func logRateScale(lo, hi float64) scale {
	var ticks []float64
	for u := 1.0; u <= 1<<40; u *= 1024 {
		ticks = append(ticks, u, 10*u, 100*u)
	}
	a, b := 0, len(ticks)-1
	for a+1 < len(ticks) && ticks[a+1] <= lo {
		a++
	}
	for b > 0 && ticks[b-1] >= hi {
		b--
	}
	if b <= a {
		b = a + 1
	}
	ticks = ticks[a : b+1]
	la, lb := math.Log(ticks[0]), math.Log(ticks[len(ticks)-1])
	return scale{
		y: func(v float64) float64 {
			if v <= ticks[0] {
				return 0
			}
			return (math.Log(v) - la) / (lb - la)
		},
		ticks: ticks,
		label: func(v float64) string { return bytesLabel(v) + "/s" },
	}
}

// linearRateScale spans 0 to a little above hi.
func linearRateScale(hi float64) scale {
	unit := 1.0
	for unit*1024 <= hi {
		unit *= 1024
	}
	step := niceCeil(hi * 1.05 / unit / 4)
	top := 4 * step * unit
	return scale{
		y:     func(v float64) float64 { return v / top },
		ticks: []float64{0, top / 4, top / 2, 3 * top / 4, top},
		label: func(v float64) string { return bytesLabel(v) + "/s" },
	}
}

// stallPanel draws the share of time each sending lane was stalled.
func stallPanel(m *model, nbin int) (panel, bool) {
	type drawn struct {
		i int
		b bins
	}
	var ds []drawn
	for i, l := range m.lanes {
		if len(l.credit) == 0 {
			continue
		}
		st := creditStalls(l.stalls)
		ds = append(ds, drawn{i, binned(l, m.span, nbin, func(a, b float64) float64 {
			in := 0.0
			k := sort.Search(len(st), func(k int) bool { return st[k].b > a })
			for ; k < len(st) && st[k].a < b; k++ {
				in += max(0, min(b, st[k].b)-max(a, st[k].a))
			}
			return 100 * in / (b - a)
		})})
	}
	if len(ds) == 0 {
		return panel{}, false
	}
	p := panel{title: "sender stalled: % of the time it had data to send and no credit", weight: 0.6, scale: scale{
		y:     func(v float64) float64 { return v / 100 },
		ticks: []float64{0, 50, 100},
		label: func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + " %" },
	}}
	p.draw = func(c canvas, a area, y func(float64) float64) {
		for _, d := range ds {
			stepBins(c, a, y, d.b, laneColor(d.i), 1.75, true)
		}
	}
	return p, true
}

// creditStalls returns the union of the stalls (sorted by start) for want
// of credit, as disjoint intervals in order.
func creditStalls(st []stall) []stall {
	var out []stall
	for _, s := range st {
		if !isCreditStall(s.reason) {
			continue
		}
		if n := len(out); n > 0 && s.a <= out[n-1].b {
			out[n-1].b = max(out[n-1].b, s.b)
			continue
		}
		out = append(out, s)
	}
	return out
}

// byteTicks returns ticks from 0 to at least v, a power of two apart, so
// that they read well in KiB and MiB: at most 6 of them.
func byteTicks(v float64) []float64 {
	step := 1.0
	for step*5 < v {
		step *= 2
	}
	ticks := []float64{0}
	for t := step; ; t += step {
		ticks = append(ticks, t)
		if t >= v {
			return ticks
		}
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p*(1+1e-9) {
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

// fitText cuts s to width pixels, ending it with "…" if cut.
func fitText(s string, width float64, st style) string {
	if textWidth(s, st) <= width {
		return s
	}
	r := []rune(s)
	n := max(0, int(width/float64(faces[st].Advance))-1)
	return string(r[:min(n, len(r))]) + "…"
}
