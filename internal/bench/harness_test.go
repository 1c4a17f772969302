package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/tun"
)

// TestInprocTransfers drives the in-process harness end to end (MPTCP over
// two emulated paths, plain TCP over one): transfers complete and the
// traces hold what the scenarios compute from. No rate is asserted.
func TestInprocTransfers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := tun.LinkParams{Rate: 20e6, Delay: 2 * time.Millisecond}
	n, err := newInproc([]tun.LinkParams{p, p}, "")
	require.NoError(t, err)
	cli, srv, err := n.mptcp(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, activeSubflows(cli))
	killed := -1
	tr, err := timedTransfer(ctx, cli, srv, timedOptions{duration: 600 * time.Millisecond, paths: n.counters(),
		eventAt: 300 * time.Millisecond, event: func(tr *trace) error { killed = busiest(tr); n.blackhole(killed); return nil }})
	require.NoError(t, err)
	require.NoError(t, n.close())
	require.GreaterOrEqual(t, killed, 0, "the event ran")
	require.Greater(t, len(tr.T), 10)
	require.Len(t, tr.Paths, 2)
	require.Positive(t, tr.App[len(tr.App)-1], "the receiver read data")
	for i := range tr.Paths {
		require.Positive(t, tr.Paths[i][len(tr.T)-1], "path %d carried data", i)
	}
	series := chartSeries(tr, []string{"a", "b"})
	require.Len(t, series, 3)

	n, err = newInproc([]tun.LinkParams{{}}, "")
	require.NoError(t, err)
	c, s, err := n.tcp(ctx)
	require.NoError(t, err)
	_, err = sizedTransfer(ctx, c, s, 4<<20, time.Minute)
	require.NoError(t, err)
	require.NoError(t, n.close())
}

// TestSizedTransferCancelled checks that a transfer stops when its context
// ends, rather than running into its (long) limit.
func TestSizedTransferCancelled(t *testing.T) {
	n, err := newInproc([]tun.LinkParams{{Rate: 1e6}}, "")
	require.NoError(t, err)
	defer n.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, s, err := n.tcp(ctx)
	require.NoError(t, err)
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	_, err = sizedTransfer(short, c, s, 1<<30, time.Hour)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestRunWithoutRoot runs a scenario with a kernel leg as if not root: the
// leg is reported as skipped, with the reason, in the results and the
// files, and its target has no value.
func TestRunWithoutRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the handover scenario (a few seconds)")
	}
	dir := t.TempDir()
	res, err := Run(context.Background(), Options{Dir: dir, Smoke: true, Only: []string{"handover", "onepath-tun"}, Root: false})
	require.NoError(t, err)
	require.Len(t, res.Scenarios, 2)
	tunSc, h := res.Scenarios[0], res.Scenarios[1]
	require.Equal(t, "onepath-tun", tunSc.Name)
	require.Contains(t, tunSc.Skipped, "needs root")
	require.Equal(t, "handover", h.Name)
	require.Empty(t, h.Error)
	require.Len(t, h.SkippedParts, 1)
	require.Contains(t, h.SkippedParts[0].Reason, "needs root")
	require.Len(t, h.Targets, 2)
	require.Equal(t, NoValue, h.Targets[1].Status, "no kernel to compare with")
	require.Contains(t, h.Metrics, "umptcp_recovery_ms")

	var back Results
	js, err := os.ReadFile(filepath.Join(dir, "results.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(js, &back))
	require.Contains(t, back.Scenarios[0].Skipped, "needs root")
	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	require.NoError(t, err)
	require.Contains(t, string(md), "**Skipped:** needs root")
	require.Contains(t, string(md), "skipped: Linux kernel MPTCP")
	_, err = os.Stat(filepath.Join(dir, "handover.svg"))
	require.NoError(t, err)
}
