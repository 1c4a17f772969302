package conformance

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/bench"
)

// TestBenchSmoke runs the whole `umptcp bench --smoke` suite as root, the
// kernel scenarios included, and checks that every scenario ran (none
// skipped, none failed, each with a table) and that the plots were
// written. As root, a set-up failure fails the test; it only skips
// without root. The numbers are not judged: benchmarks report, tests
// check that they work.
func TestBenchSmoke(t *testing.T) {
	RequireRoot(t)
	if testing.Short() {
		t.Skip("the bench smoke run takes about a minute; skipped with -short")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	res, err := bench.Run(ctx, bench.Options{Dir: dir, Smoke: true, Log: &log, Root: true})
	t.Logf("bench output:\n%s", log.String())
	if err != nil {
		t.Fatalf("bench --smoke: %v", err)
	}
	if got, want := len(res.Scenarios), len(bench.Names()); got != want {
		t.Fatalf("%d scenarios ran, want %d", got, want)
	}
	for _, sc := range res.Scenarios {
		switch {
		case sc.Skipped != "":
			t.Errorf("%s skipped: %s", sc.Name, sc.Skipped)
		case sc.Error != "":
			t.Errorf("%s failed: %s", sc.Name, sc.Error)
		case len(sc.SkippedParts) > 0:
			t.Errorf("%s skipped parts: %+v", sc.Name, sc.SkippedParts)
		case len(sc.Tables) == 0 || len(sc.Metrics) == 0:
			t.Errorf("%s has no results", sc.Name)
		}
	}
	for _, f := range []string{"RESULTS.md", "results.json", "handover.svg", "handover-kernel.svg", "hetero.svg", "hetero-kernel.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
}
