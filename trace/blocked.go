package trace

import (
	"image/color"
	"math"
	"strconv"
)

// reasonColors are the colors of the block reasons, told apart from each
// other and from the lanes' palette.
var reasonColors = map[string]color.NRGBA{
	"peer_window":    {0xe6, 0x4a, 0x19, 255}, // red-orange
	"session_budget": {0x6a, 0x1b, 0x9a, 255}, // deep purple
	"transport":      {0x00, 0x83, 0x8f, 255}, // dark cyan
	"unread":         {0xd8, 0xa5, 0x00, 255}, // mustard
	"":               {0x7d, 0x7d, 0x7d, 255}, // no reason: an old trace
}

// otherReason colors a reason this package does not know.
var otherReason = color.NRGBA{0xb0, 0x6c, 0x9c, 255}

// reasonOrder lists the reasons as the legend names them.
var reasonOrder = []string{"peer_window", "session_budget", "transport", "unread", ""}

// lossColor marks QUIC's packet losses.
var lossColor = black

func reasonColor(r string) color.NRGBA {
	if c, ok := reasonColors[r]; ok {
		return c
	}
	return otherReason
}

// reasonLabel names a reason in the legend.
func reasonLabel(r string) string {
	if r == "" {
		return "blocked (no reason in the trace)"
	}
	return "blocked: " + r
}

// reasons returns the reasons of the lanes' stalls, in legend order,
// then any unknown ones in order of appearance.
func (m *model) reasons() []string {
	seen := map[string]bool{}
	var unknown []string
	for _, l := range m.lanes {
		for _, s := range l.stalls {
			if !seen[s.reason] {
				seen[s.reason] = true
				if _, ok := reasonColors[s.reason]; !ok {
					unknown = append(unknown, s.reason)
				}
			}
		}
	}
	var out []string
	for _, r := range reasonOrder {
		if seen[r] {
			out = append(out, r)
		}
	}
	return append(out, unknown...)
}

// hasLosses reports whether any source has packet losses.
func (m *model) hasLosses() bool {
	for _, ls := range m.losses {
		if len(ls) > 0 {
			return true
		}
	}
	return false
}

// blockedRow is one row of the blocked panel: a lane's stalls, or a
// source's packet losses.
type blockedRow struct {
	lane   int     // the lane's index, or -1 for losses
	src    int     // the source, for losses
	stalls []stall // a lane's
	split  bool    // the lane has stalls of both sides: the receiving side's below
}

// blockedPanel draws, one row per lane that was ever blocked, its stalls
// as intervals colored by reason, and a row per trace with QUIC's packet
// losses as ticks.
func blockedPanel(m *model) (panel, bool) {
	var rows []blockedRow
	for i, l := range m.lanes {
		if len(l.stalls) == 0 {
			continue
		}
		send, recv := false, false
		for _, s := range l.stalls {
			send, recv = send || !isRecvStall(s.reason), recv || isRecvStall(s.reason)
		}
		rows = append(rows, blockedRow{lane: i, stalls: l.stalls, split: send && recv})
	}
	for si, ls := range m.losses {
		if len(ls) > 0 {
			rows = append(rows, blockedRow{lane: -1, src: si})
		}
	}
	if len(rows) == 0 {
		return panel{}, false
	}
	title := "blocked: intervals by reason, one row per lane (stream and side)"
	if m.hasLosses() {
		title += "; ticks: QUIC packets lost"
	}
	p := panel{title: title, weight: min(1, 0.2+0.12*float64(len(rows))), scale: scale{y: func(v float64) float64 { return v }}}
	p.draw = func(c canvas, a area, _ func(float64) float64) {
		h := (a.y1 - a.y0) / float64(len(rows))
		for k, row := range rows {
			top, bot := a.y0+float64(k)*h+1, a.y0+float64(k+1)*h-1
			mid := (top + bot) / 2
			if k > 0 {
				c.rect(a.x0, math.Round(top-1), a.x1, math.Round(top-1)+1, grid)
			}
			if row.lane < 0 {
				c.text(a.x0-6, mid+4, "lost", anchorEnd, styleSmall, dark)
				if first := m.firstLane(row.src); first >= 0 {
					c.rect(a.x0-44, mid-1, a.x0-34, mid+2, laneColor(first))
				}
				for _, px := range pixelTicks(a, m.losses[row.src]) {
					c.rect(px, top+h/4, px+1, bot-h/4, lossColor)
				}
				continue
			}
			l := m.lanes[row.lane]
			// The lane's span, faintly: blocked or not, it was there.
			c.rect(math.Round(a.x(l.first)), top, math.Max(math.Round(a.x(l.first))+1, math.Round(a.x(max(l.last, l.first)))), bot, tint(laneColor(row.lane), 0x1c))
			c.rect(a.x0-16, mid-4, a.x0-4, mid+4, laneColor(row.lane))
			c.text(a.x0-20, mid+4, "s"+strconv.FormatUint(l.stream, 10), anchorEnd, styleSmall, dark)
			for _, r := range m.reasons() {
				y0, y1 := top, bot
				if row.split {
					if isRecvStall(r) {
						y0 = mid
					} else {
						y1 = mid
					}
				}
				for _, sp := range pixelSpans(a, row.stalls, r) {
					c.rect(sp[0], y0, sp[1], y1, reasonColor(r))
				}
			}
		}
	}
	return p, true
}

// firstLane returns the index of source src's first lane, or -1.
func (m *model) firstLane(src int) int {
	for i, l := range m.lanes {
		if l.src == src {
			return i
		}
	}
	return -1
}

// pixelSpans returns the stalls of reason r as whole-pixel spans across
// a, each at least a pixel wide, spans that touch merged: at most one per
// pixel column, however many stalls there were.
func pixelSpans(a area, st []stall, r string) [][2]float64 {
	var out [][2]float64
	for _, s := range st {
		if s.reason != r {
			continue
		}
		x0 := math.Floor(a.x(s.a))
		x1 := max(x0+1, math.Ceil(a.x(s.b)))
		if n := len(out); n > 0 && x0 <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], x1)
			continue
		}
		out = append(out, [2]float64{x0, x1})
	}
	return out
}

// pixelTicks returns the pixel columns of times ts (in order) across a,
// each once.
func pixelTicks(a area, ts []float64) []float64 {
	var out []float64
	for _, t := range ts {
		x := math.Floor(a.x(t))
		if n := len(out); n == 0 || out[n-1] != x {
			out = append(out, x)
		}
	}
	return out
}
