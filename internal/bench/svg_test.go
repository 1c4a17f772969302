package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// svgElements decodes an SVG document with encoding/xml (failing on any
// malformation) and counts its elements by name.
func svgElements(t *testing.T, doc []byte) map[string]int {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	counts := map[string]int{}
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "well-formed XML")
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				require.Equal(t, "svg", el.Name.Local, "root element")
			}
			depth++
			counts[el.Name.Local]++
		case xml.EndElement:
			depth--
		}
	}
	require.Zero(t, depth, "every element closed")
	return counts
}

func TestChartSVGWellFormed(t *testing.T) {
	c := Chart{
		Title:  `throughput <per path> & "goodput"`,
		XLabel: "seconds", YLabel: "Mbit/s",
		Series: []Series{
			{Name: "path 0 (50 Mbit/s)", X: []float64{0.1, 0.2, 0.3}, Y: []float64{10, 50, 49}},
			{Name: "path 1 <dead>", X: []float64{0.1, 0.2, 0.3}, Y: []float64{12, math.NaN(), 0}},
			{Name: "empty"},
		},
		Markers: []Marker{{X: 0.2, Label: "path 1 blackholed"}},
	}
	var b bytes.Buffer
	require.NoError(t, c.WriteSVG(&b))
	counts := svgElements(t, b.Bytes())
	require.Equal(t, len(c.Series), counts["polyline"], "one polyline per series, the empty one too")
	require.Contains(t, b.String(), "&lt;per path&gt; &amp;", "text is escaped")
	require.Contains(t, b.String(), "path 1 blackholed")
	for _, s := range c.Series {
		require.Contains(t, b.String(), esc(s.Name), "legend names every series")
	}
}

func TestChartSVGNoData(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Chart{Title: "nothing"}.WriteSVG(&b))
	counts := svgElements(t, b.Bytes())
	require.Zero(t, counts["polyline"])
}

func TestChartSVGPointsInsidePlot(t *testing.T) {
	c := Chart{Series: []Series{{Name: "a", X: []float64{0.1, 3.7, 7.3}, Y: []float64{0, 333, 12}}}}
	var b bytes.Buffer
	require.NoError(t, c.WriteSVG(&b))
	s := b.String()
	i := strings.Index(s, `points="`)
	require.Positive(t, i)
	pts := strings.Fields(s[i+len(`points="`) : i+len(`points="`)+strings.Index(s[i+len(`points="`):], `"`)])
	require.Len(t, pts, 3)
	for _, p := range pts {
		var x, y float64
		_, err := fmt.Sscanf(p, "%g,%g", &x, &y)
		require.NoError(t, err)
		require.True(t, x >= plotLeft && x <= plotRight, "x %v inside the plot", x)
		require.True(t, y >= plotTop && y <= plotBottom, "y %v inside the plot", y)
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		n      int
	}{{0, 1, 5}, {0.1, 7.3, 8}, {0, 97.3, 6}, {3, 3, 4}, {0, 1e-9, 6}, {0, 12345, 6}} {
		ticks := niceTicks(tc.lo, tc.hi, tc.n)
		require.GreaterOrEqual(t, len(ticks), 2, "%+v", tc)
		require.LessOrEqual(t, ticks[0], tc.lo, "%+v", tc)
		require.GreaterOrEqual(t, ticks[len(ticks)-1], math.Max(tc.hi, tc.lo)-1e-12, "%+v", tc)
		require.LessOrEqual(t, len(ticks), 3*tc.n+2, "%+v: %v", tc, ticks)
	}
}
