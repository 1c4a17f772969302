package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchSmokeInProcess runs the in-process scenarios that need neither
// root nor long: the outputs must exist and hold those scenarios' numbers.
func TestBenchSmokeInProcess(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := bench([]string{"--smoke", "--only", "onepath,cost", "-o", dir}, &out, &errb)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	require.Contains(t, out.String(), "plain gVisor TCP", "the table is printed")

	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	require.NoError(t, err)
	for _, want := range []string{"## onepath:", "## cost:", "## Targets", "<!-- reading -->"} {
		require.Contains(t, string(md), want)
	}

	js, err := os.ReadFile(filepath.Join(dir, "results.json"))
	require.NoError(t, err)
	var res struct {
		Smoke   bool `json:"smoke"`
		Machine struct {
			Kernel string `json:"kernel"`
			NProc  int    `json:"nproc"`
		} `json:"machine"`
		Scenarios []struct {
			Name    string             `json:"name"`
			Skipped string             `json:"skipped"`
			Error   string             `json:"error"`
			Metrics map[string]float64 `json:"metrics"`
		} `json:"scenarios"`
	}
	require.NoError(t, json.Unmarshal(js, &res), "results.json is valid JSON")
	require.True(t, res.Smoke)
	require.NotEmpty(t, res.Machine.Kernel)
	require.Positive(t, res.Machine.NProc)
	var names []string
	for _, s := range res.Scenarios {
		names = append(names, s.Name)
		require.Empty(t, s.Skipped, s.Name)
		require.Empty(t, s.Error, s.Name)
	}
	require.Equal(t, []string{"onepath", "cost"}, names)
	require.Positive(t, res.Scenarios[0].Metrics["ratio"], "onepath has its ratio")
	require.Positive(t, res.Scenarios[1].Metrics["mptcp_cpu_s_per_gib"], "cost has its CPU figure")
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--only", "onepath,bogus"}, `unknown scenario "bogus"`},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--frobnicate"}, "flag provided but not defined"},
	} {
		var out, errb bytes.Buffer
		code := bench(append(tc.args, "-o", t.TempDir()), &out, &errb)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
	}
	var out, errb bytes.Buffer
	require.Equal(t, 0, bench([]string{"-h"}, &out, &errb))
	require.True(t, strings.Contains(errb.String(), "umptcp bench [-o DIR]"), errb.String())
}
