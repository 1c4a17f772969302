package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ReadingMarker is the line after which RESULTS.md holds a human's reading
// of the numbers; a new run keeps everything from it on.
const ReadingMarker = "<!-- reading -->"

// readingTail returns the part of an existing RESULTS.md from the marker
// line on (the marker included), or "" if there is none.
func readingTail(old string) string {
	off := 0
	for _, line := range strings.SplitAfter(old, "\n") {
		if strings.TrimSpace(line) == ReadingMarker {
			return old[off:]
		}
		off += len(line)
	}
	return ""
}

// WriteOutputs writes RESULTS.md (keeping the reading of an existing one),
// results.json and the SVG plots into dir, creating it if needed.
func WriteOutputs(dir string, r *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, sc := range r.Scenarios {
		sc.Plots = nil
		for _, c := range sc.Charts {
			if err := writeFile(filepath.Join(dir, c.File), c.WriteSVG); err != nil {
				errs = append(errs, err)
				continue
			}
			sc.Plots = append(sc.Plots, c.File)
		}
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		errs = append(errs, err)
	}
	mdPath := filepath.Join(dir, "RESULTS.md")
	old, err := os.ReadFile(mdPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.WriteFile(mdPath, []byte(RenderMarkdown(r, string(old))), 0o644); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writeFile writes path through f.
func writeFile(path string, f func(io.Writer) error) error {
	var b bytes.Buffer
	if err := f(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// RenderMarkdown renders r as RESULTS.md. old is the previous file's text
// (or ""): its reading (from the ReadingMarker line on) is kept verbatim;
// without one, an empty reading section is started for a human to fill.
func RenderMarkdown(r *Results, old string) string {
	var b strings.Builder
	b.WriteString("# umptcp bench results\n\n")
	kind := "full run"
	if r.Smoke {
		kind = "smoke run (tiny sizes: the numbers only prove the harness works)"
	}
	fmt.Fprintf(&b, "%s, %s, %.0f s. Every rate is compared with a baseline measured in the same run over the same (emulated) paths; compare ratios across machines, not absolute rates.\n\n",
		r.Date.UTC().Format("2006-01-02 15:04 UTC"), kind, r.Seconds)
	m := r.Machine
	b.WriteString("| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| kernel | %s |\n| CPU | %s |\n| CPUs (nproc) | %d |\n", cell(m.Kernel), cell(m.CPU), m.NProc)
	if m.MemoryGiB > 0 {
		fmt.Fprintf(&b, "| memory | %.1f GiB |\n", m.MemoryGiB)
	}
	fmt.Fprintf(&b, "| Go | %s |\n| umptcp commit | %s |\n| root | %s |\n\n", cell(m.Go), cell(m.Commit), yesNo(m.Root))

	for _, sc := range r.Scenarios {
		fmt.Fprintf(&b, "## %s: %s\n\n", sc.Name, sc.Title)
		if sc.Setup != "" {
			b.WriteString(sc.Setup + "\n\n")
		}
		if sc.Skipped != "" {
			fmt.Fprintf(&b, "**Skipped:** %s\n\n", sc.Skipped)
			continue
		}
		if sc.Error != "" {
			fmt.Fprintf(&b, "**Failed:** %s\n\n", cell(sc.Error))
		}
		for _, t := range sc.Tables {
			writeTable(&b, t)
		}
		for _, p := range sc.SkippedParts {
			fmt.Fprintf(&b, "- skipped: %s (%s)\n", p.Part, p.Reason)
		}
		for _, n := range sc.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		for _, p := range sc.Plots {
			fmt.Fprintf(&b, "\n![%s](%s)\n", p, p)
		}
		b.WriteString("\n")
	}

	b.WriteString("## Targets\n\n")
	var targets []Target
	for _, sc := range r.Scenarios {
		targets = append(targets, sc.Targets...)
	}
	if len(targets) == 0 {
		b.WriteString("No scenario with a target ran.\n\n")
	} else {
		writeTable(&b, TargetsTable(targets))
	}

	if tail := readingTail(old); tail != "" {
		b.WriteString(tail)
	} else {
		b.WriteString(ReadingMarker + "\n")
	}
	return b.String()
}

// TargetsTable lays targets out as a table: the goal, the measured value,
// and met or missed by how much.
func TargetsTable(targets []Target) Table {
	t := Table{Columns: []string{"scenario", "target", "goal", "measured", "result"}, TextCols: 5}
	for _, g := range targets {
		measured := "–"
		if g.Value != nil {
			measured = formatValue(*g.Value, g.Unit)
		}
		result := g.Status
		switch g.Status {
		case Met:
			result = "**met**"
		case Missed:
			result = "**missed** " + strings.TrimPrefix(g.Detail, "missed ")
		default:
			if g.Detail != "" {
				result += ": " + g.Detail
			}
		}
		t.Rows = append(t.Rows, []string{g.Scenario, g.Name, g.Want, measured, result})
	}
	return t
}

// writeTable writes t as a markdown table.
func writeTable(b *strings.Builder, t Table) {
	if t.Title != "" {
		fmt.Fprintf(b, "%s\n\n", t.Title)
	}
	row := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + cell(c) + " |")
		}
		b.WriteString("\n")
	}
	row(t.Columns)
	b.WriteString("|")
	for i := range t.Columns {
		if i < max(t.TextCols, 1) {
			b.WriteString("---|")
		} else {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		row(r)
	}
	b.WriteString("\n")
}

// cell makes s safe inside a markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// TextTable renders t for a terminal: columns padded, no markdown.
func TextTable(t Table) string {
	width := make([]int, len(t.Columns))
	for i, c := range t.Columns {
		width[i] = len([]rune(c))
	}
	for _, r := range t.Rows {
		for i, c := range r {
			if i < len(width) {
				width[i] = max(width[i], len([]rune(c)))
			}
		}
	}
	var b strings.Builder
	if t.Title != "" {
		b.WriteString("  " + t.Title + "\n")
	}
	line := func(cells []string) {
		b.WriteString(" ")
		for i, c := range cells {
			if i >= len(width) {
				break
			}
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(" " + c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		b.WriteString("\n")
	}
	line(t.Columns)
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}
