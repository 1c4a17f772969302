package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sampleResults is a small, fully filled Results for the rendering tests.
func sampleResults() *Results {
	sc := &Scenario{Name: "equal", Title: "two equal paths", Setup: "set-up text",
		Tables: []Table{{Columns: []string{"leg", "Mbit/s"}, Rows: [][]string{{"umptcp | default", "94.8"}}}},
		Charts: []Chart{{File: "equal.svg", Title: "t", Series: []Series{{Name: "a", X: []float64{0, 1}, Y: []float64{1, 2}}}}},
	}
	sc.metric("ratio", 0.98)
	sc.metric("nan", math.NaN()) // dropped: JSON cannot carry it
	sc.skipPart("Linux kernel legs", "needs root")
	sc.Targets = append(sc.Targets,
		newTarget("equal", "default ÷ sum", "≥ 0.95", true, "", ptr(0.98), ptr(0.95), ""),
		newTarget("equal", "vs kernel", "≥ the kernel's", true, "", ptr(0.98), nil, "kernel leg skipped: needs root"))
	return &Results{Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Seconds: 12, Machine: Machine{Kernel: "6.18", CPU: "cpu", NProc: 2, Go: "go1", Commit: "abc"},
		Scenarios: []*Scenario{sc, {Name: "onepath-tun", Title: "tun", Skipped: "needs root"}}}
}

func TestRenderMarkdownKeepsReading(t *testing.T) {
	r := sampleResults()
	fresh := RenderMarkdown(r, "")
	require.True(t, strings.HasSuffix(fresh, ReadingMarker+"\n"), "a new file ends with an empty reading section")

	old := "# old results\n\n| stale | table |\n\n" + ReadingMarker + "\n\nThe numbers say X.\n\n## More reading\nkeep | this <exactly>\n"
	got := RenderMarkdown(r, old)
	tail := old[strings.Index(old, ReadingMarker):]
	require.True(t, strings.HasSuffix(got, tail), "the reading is kept verbatim:\n%s", got)
	require.NotContains(t, got, "stale", "the old tables are replaced")
	require.Equal(t, 1, strings.Count(got, ReadingMarker))

	// Rendering the rendered file again keeps the same reading.
	again := RenderMarkdown(r, got)
	require.True(t, strings.HasSuffix(again, tail))
	require.Equal(t, got, again)
}

func TestRenderMarkdownContent(t *testing.T) {
	got := RenderMarkdown(sampleResults(), "")
	for _, want := range []string{
		"| kernel | 6.18 |", "| umptcp commit | abc |",
		"## equal: two equal paths", "set-up text",
		`umptcp \| default`, // a pipe in a cell is escaped
		"skipped: Linux kernel legs (needs root)",
		"## onepath-tun: tun", "**Skipped:** needs root",
		"## Targets", "|---|---|---|---|---|", "| equal | default ÷ sum | ≥ 0.95 | 0.98 | **met** |",
		"| leg | Mbit/s |\n|---|---:|",
		"not measured: kernel leg skipped: needs root",
	} {
		require.Contains(t, got, want)
	}
	require.Less(t, strings.Index(got, "## Targets"), strings.Index(got, ReadingMarker))
}

func TestReadingTail(t *testing.T) {
	require.Equal(t, "", readingTail("no marker here\n"))
	require.Equal(t, "", readingTail("inline "+ReadingMarker+" is not a marker line\n"))
	require.Equal(t, "  "+ReadingMarker+"  \nx\n", readingTail("a\n  "+ReadingMarker+"  \nx\n"))
	require.Equal(t, ReadingMarker, readingTail("a\n"+ReadingMarker), "a marker on the last line without newline")
}

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	r := sampleResults()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte("old\n"+ReadingMarker+"\nmine\n"), 0o644))
	require.NoError(t, WriteOutputs(dir, r))

	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(md), ReadingMarker+"\nmine\n"))
	require.Contains(t, string(md), "![equal.svg](equal.svg)")

	js, err := os.ReadFile(filepath.Join(dir, "results.json"))
	require.NoError(t, err)
	var back Results
	require.NoError(t, json.Unmarshal(js, &back))
	require.Len(t, back.Scenarios, 2)
	require.Equal(t, 0.98, back.Scenarios[0].Metrics["ratio"])
	require.NotContains(t, back.Scenarios[0].Metrics, "nan")
	require.Equal(t, []string{"equal.svg"}, back.Scenarios[0].Plots)
	require.Equal(t, "needs root", back.Scenarios[1].Skipped)
	require.Equal(t, NoValue, back.Scenarios[0].Targets[1].Status)

	svg, err := os.ReadFile(filepath.Join(dir, "equal.svg"))
	require.NoError(t, err)
	svgElements(t, svg)
}

func TestTextTable(t *testing.T) {
	got := TextTable(Table{Title: "x", Columns: []string{"leg", "Mbit/s"}, Rows: [][]string{{"a", "1"}, {"longer name", "100"}}})
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	require.Len(t, lines, 4)
	require.Equal(t, len([]rune(lines[2])), len([]rune(lines[3])), "columns are padded:\n%s", got)
}

func TestMbps(t *testing.T) {
	for in, want := range map[float64]string{9.996e6: "10.0", 9.94e6: "9.94", 99.96e6: "100", 47.26e6: "47.3", 2309.4e6: "2309", math.NaN(): "–"} {
		require.Equal(t, want, mbps(in), "%v", in)
	}
}
