package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Chart is a line chart: the time series behind a plot (kept in
// results.json too) and what WriteSVG draws.
type Chart struct {
	File    string   `json:"file"` // the SVG's name in the output directory
	Title   string   `json:"title"`
	XLabel  string   `json:"x_label"`
	YLabel  string   `json:"y_label"`
	Series  []Series `json:"series"`
	Markers []Marker `json:"markers,omitempty"`
}

// Series is one line: Y[i] at X[i].
type Series struct {
	Name string    `json:"name"`
	X    []float64 `json:"x"`
	Y    []float64 `json:"y"`
}

// Marker is a labelled vertical line at X (an event, e.g. a blackhole).
type Marker struct {
	X     float64 `json:"x"`
	Label string  `json:"label"`
}

// Geometry of the drawing, in SVG user units (pixels).
const (
	svgWidth   = 900
	svgHeight  = 420
	plotLeft   = 70
	plotTop    = 40
	plotRight  = 680 // the legend lives right of this
	plotBottom = 360
)

// palette holds distinguishable colours for the series, reused in turn.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// WriteSVG draws c: axes with ticks and labels, one polyline per series
// (even an empty one, so that the legend and the lines correspond), the
// markers as dashed vertical lines, and a legend. The Y axis starts at 0
// (the charts show rates).
func (c Chart) WriteSVG(w io.Writer) error {
	xlo, xhi := math.Inf(1), math.Inf(-1)
	yhi := 0.0
	for _, s := range c.Series {
		for i := range min(len(s.X), len(s.Y)) {
			x, y := s.X[i], s.Y[i]
			if !isFinite(x) || !isFinite(y) {
				continue
			}
			xlo, xhi = math.Min(xlo, x), math.Max(xhi, x)
			yhi = math.Max(yhi, y)
		}
	}
	for _, m := range c.Markers {
		if isFinite(m.X) {
			xlo, xhi = math.Min(xlo, m.X), math.Max(xhi, m.X)
		}
	}
	if math.IsInf(xlo, 1) { // no data at all: draw empty axes over [0, 1]
		xlo, xhi = 0, 1
	}
	if xhi <= xlo {
		xhi = xlo + 1
	}
	xticks := niceTicks(xlo, xhi, 8)
	xlo, xhi = xticks[0], xticks[len(xticks)-1] // the axis spans whole ticks
	yticks := niceTicks(0, math.Max(yhi, 1e-9)*1.05, 6)
	ytop := yticks[len(yticks)-1]
	if ytop < yhi {
		ytop = yhi
	}
	px := func(x float64) float64 { return plotLeft + (x-xlo)/(xhi-xlo)*(plotRight-plotLeft) }
	py := func(y float64) float64 { return plotBottom - y/ytop*(plotBottom-plotTop) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", svgWidth, svgHeight)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", plotLeft, esc(c.Title))

	// Grid and ticks.
	xdec, ydec := tickDecimals(xticks), tickDecimals(yticks)
	for _, t := range yticks {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", plotLeft, y, plotRight, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotLeft-6, y+4, strconv.FormatFloat(t, 'f', ydec, 64))
	}
	for _, t := range xticks {
		x := px(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>`+"\n", x, plotTop, x, plotBottom)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x, plotBottom, x, plotBottom+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotBottom+18, strconv.FormatFloat(t, 'f', xdec, 64))
	}
	// Axes.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", plotLeft, plotBottom, plotRight, plotBottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", plotLeft, plotTop, plotLeft, plotBottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (plotLeft+plotRight)/2, plotBottom+40, esc(c.XLabel))
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">%s</text>`+"\n",
		(plotTop+plotBottom)/2, (plotTop+plotBottom)/2, esc(c.YLabel))

	// Markers.
	for _, m := range c.Markers {
		if !isFinite(m.X) {
			continue
		}
		x := px(m.X)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-dasharray="5,4"/>`+"\n", x, plotTop, x, plotBottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", x+4, plotTop+12, esc(m.Label))
	}

	// Series and legend.
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		var pts strings.Builder
		for j := range min(len(s.X), len(s.Y)) {
			if !isFinite(s.X[j]) || !isFinite(s.Y[j]) {
				continue
			}
			if pts.Len() > 0 {
				pts.WriteByte(' ')
			}
			fmt.Fprintf(&pts, "%.1f,%.1f", px(s.X[j]), py(s.Y[j]))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>%s</title></polyline>`+"\n",
			color, pts.String(), esc(s.Name))
		ly := plotTop + 10 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", plotRight+15, ly, plotRight+35, ly, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", plotRight+40, ly+4, esc(s.Name))
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// esc escapes s for XML character data and attribute values.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder: cannot fail
	return b.String()
}

// niceTicks returns about n evenly spaced round values (steps of 1, 2, 2.5
// or 5 times a power of ten) covering [lo, hi]: the first at or below lo,
// the last at or above hi.
func niceTicks(lo, hi float64, n int) []float64 {
	if !(hi > lo) {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / float64(max(n, 1)))
	first := math.Floor(lo/step+1e-9) * step
	var ticks []float64
	for i := 0; ; i++ {
		v := first + float64(i)*step
		ticks = append(ticks, v)
		if v >= hi-step*1e-9 || i > 1000 {
			break
		}
	}
	return ticks
}

// niceStep rounds raw up to 1, 2, 2.5 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if !(raw > 0) {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw*(1-1e-9) {
			return m * mag
		}
	}
	return 10 * mag
}

// tickDecimals is how many decimals print ticks exactly.
func tickDecimals(ticks []float64) int {
	if len(ticks) < 2 {
		return 0
	}
	step := ticks[1] - ticks[0]
	d := 0
	for d < 6 && math.Abs(step*math.Pow(10, float64(d))-math.Round(step*math.Pow(10, float64(d)))) > 1e-6 {
		d++
	}
	return d
}
