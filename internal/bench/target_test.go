package bench

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTargetEvaluation(t *testing.T) {
	for _, tc := range []struct {
		name         string
		atLeast      bool
		unit         string
		value, bound *float64
		status       string
		detail       string
	}{
		{"above a floor", true, "", ptr(0.96), ptr(0.95), Met, ""},
		{"exactly the floor", true, "", ptr(0.95), ptr(0.95), Met, ""},
		{"below a floor", true, "", ptr(0.90), ptr(0.95), Missed, "missed by 0.05 (5 %)"},
		{"under a ceiling", false, "ms", ptr(180), ptr(220), Met, ""},
		{"over a ceiling", false, "ms", ptr(690), ptr(220), Missed, "missed by 470 ms (214 %)"},
		{"against a zero bound", true, "", ptr(-1), ptr(0), Missed, "missed by 1.00"},
		{"no value", true, "", nil, ptr(0.95), NoValue, "why"},
		{"no bound", true, "", ptr(0.9), nil, NoValue, "why"},
		{"NaN value", true, "", ptr(math.NaN()), ptr(0.95), NoValue, "why"},
		{"infinite bound", false, "ms", ptr(100), ptr(math.Inf(1)), NoValue, "why"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTarget("s", "n", "w", tc.atLeast, tc.unit, tc.value, tc.bound, "why")
			require.Equal(t, tc.status, g.Status)
			require.Equal(t, tc.detail, g.Detail)
			if g.Status == NoValue {
				require.False(t, g.Value != nil && g.Bound != nil, "NoValue only without a value or a bound")
			}
		})
	}
}

func TestTargetsTable(t *testing.T) {
	tbl := TargetsTable([]Target{
		newTarget("handover", "recovery", "≤ 220 ms", false, "ms", ptr(690), ptr(220), ""),
		newTarget("equal", "ratio", "≥ 0.95", true, "", ptr(0.98), ptr(0.95), ""),
		newTarget("equal", "vs kernel", "≥ kernel", true, "", ptr(0.98), nil, "skipped: needs root"),
	})
	require.Equal(t, []string{"handover", "recovery", "≤ 220 ms", "690 ms", "**missed** by 470 ms (214 %)"}, tbl.Rows[0])
	require.Equal(t, "**met**", tbl.Rows[1][4])
	require.Equal(t, "0.98", tbl.Rows[2][3], "the measured value is shown even without a bound")
	require.Equal(t, "not measured: skipped: needs root", tbl.Rows[2][4])
}
