package bench

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// syntheticTrace samples every 10 ms for secs seconds a receiver whose
// rate (bit/s) at time t is rate(t).
func syntheticTrace(secs float64, rate func(t float64) float64) *trace {
	tr := &trace{Paths: [][]uint64{nil}}
	var bytes float64
	for i := 0; float64(i)*0.01 <= secs+1e-9; i++ {
		t := float64(i) * 0.01
		if i > 0 {
			bytes += rate(t) * 0.01 / 8
		}
		tr.T = append(tr.T, t)
		tr.App = append(tr.App, uint64(bytes))
		tr.Paths[0] = append(tr.Paths[0], uint64(bytes))
	}
	return tr
}

func TestTraceGoodputAndWindows(t *testing.T) {
	tr := syntheticTrace(3, func(float64) float64 { return 40e6 })
	require.InDelta(t, 40e6, tr.goodput(1, 2), 40e6*0.001)
	require.True(t, math.IsNaN(tr.goodput(5, 6)), "no samples there")
	x, y := tr.windows(tr.App, 0.1)
	require.Len(t, x, 30)
	for _, v := range y {
		require.InDelta(t, 40, v, 0.1)
	}
}

func TestTraceRecovery(t *testing.T) {
	// 100 Mbit/s, nothing from 2.0 s to 2.35 s but one burst at 2.1 s
	// (data released from reassembly), then 50 Mbit/s.
	tr := syntheticTrace(4, func(t float64) float64 {
		switch {
		case t <= 2:
			return 100e6
		case t > 2.1 && t <= 2.11:
			return 2000e6
		case t <= 2.35:
			return 0
		}
		return 50e6
	})
	after, ok := tr.recovery(2, 25e6)
	require.True(t, ok)
	require.Greater(t, after, 0.2, "the burst alone is not a recovery")
	// The first window with half the rate starts half a window before
	// the flow resumes: [2.30, 2.40] holds 50 ms at 50 Mbit/s.
	require.InDelta(t, 0.30, after, 0.02)

	_, ok = syntheticTrace(3, func(t float64) float64 {
		if t > 1 {
			return 0
		}
		return 100e6
	}).recovery(1, 25e6)
	require.False(t, ok, "never back")

	after, ok = syntheticTrace(3, func(float64) float64 { return 100e6 }).recovery(1, 25e6)
	require.True(t, ok)
	require.Zero(t, after, "no dip: recovered at once")
}

func TestBusiest(t *testing.T) {
	tr := &trace{T: []float64{0, 1, 2}, Paths: [][]uint64{{0, 900, 1000}, {0, 100, 600}}}
	require.Equal(t, 1, busiest(tr), "the last second counts, not the total")
}

func TestRunRejectsUnknownScenario(t *testing.T) {
	_, err := Run(context.Background(), Options{Dir: t.TempDir(), Only: []string{"onepath", "nope"}})
	require.ErrorContains(t, err, `unknown scenario "nope"`)
}

func TestNames(t *testing.T) {
	require.Equal(t, []string{"onepath", "onepath-tun", "equal", "hetero", "handover", "cost", "micro", "scale"}, Names())
}
