package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDemo(t *testing.T) {
	code, out, errOut := runCmd("demo", "-q", "-size", "4194304")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "MPTCP in use: client yes, server yes")
	require.Contains(t, out, "subflows: 2", "the default demo uses two paths")
	require.Contains(t, out, "MP_JOIN")
	require.Equal(t, 2, strings.Count(out, "equal"), out)
	require.NotContains(t, out, "DIFFERENT")
}

func TestDemoPathsAndScheduler(t *testing.T) {
	code, out, errOut := runCmd("demo", "-q", "-size", "2097152", "-paths", "3", "-scheduler", "roundrobin", "-rate", "50")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "subflows: 3")
	require.Equal(t, 2, strings.Count(out, "equal"), out)
	code, _, errOut = runCmd("demo", "-scheduler", "nope")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "valid: default")
}

func TestDemoChecksumAndLoss(t *testing.T) {
	code, out, errOut := runCmd("demo", "-q", "-size", "1048576", "-checksum", "-loss", "0.01", "-delay", "2ms")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "DSS checksums on")
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage"},
		{[]string{"bogus"}, "unknown command"},
		{[]string{"nc", "10.0.0.1"}, "expected HOST PORT"},
		{[]string{"nc", "-l", "1", "2"}, "expected PORT"},
		{[]string{"nc", "10.0.0.1", "80"}, "--tun"},
		{[]string{"nc", "--tun", "x,10.0.0.2/24,10.0.0.1", "10.0.0.1", "http"}, "bad port"},
		{[]string{"demo", "-loss", "2"}, "bad arguments"},
	} {
		code, _, errOut := runCmd(tc.args...)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
}

func TestNCBadTunSpec(t *testing.T) {
	code, _, errOut := runCmd("nc", "--tun", "x,10.0.0.2/24,fd00::1", "10.0.0.1", "80")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "one line: %q", errOut)
}

func TestNCFlagsAnywhere(t *testing.T) {
	// Flags after the operands are parsed too: the error is about the
	// missing --tun, not about the operands.
	code, _, errOut := runCmd("nc", "10.0.0.1", "80", "-v")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--tun")
	code, _, errOut = runCmd("nc", "-l", "80", "--tun", "bad")
	require.Equal(t, 1, code)
	require.NotContains(t, errOut, "expected")
}

// TestPathManagerFlags: --endpoint and --limits are checked before any
// device is created, with a message naming the problem; nc and perf share
// them.
func TestPathManagerFlags(t *testing.T) {
	tunA := "--tun=a,10.0.0.2/24,10.0.0.1"
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--endpoint", "10.0.0.2,fast"}, `unknown flag "fast"`},
		{[]string{"--endpoint", "10.0.0.2"}, "needs signal, subflow or fullmesh"},
		{[]string{"--endpoint", "10.0.0.2:80,subflow"}, "a port needs the signal flag"},
		{[]string{"--endpoint", "10.0.0.9,signal"}, "not the stack address of any --tun device"},
		{[]string{"--endpoint", "10.0.0.2,signal", "--endpoint", "10.0.0.2,subflow"}, "given twice"},
		{[]string{"--limits", "subflows=9"}, "subflows must be 0-8"},
		{[]string{"--limits", "paths=1"}, `unknown limit "paths"`},
	} {
		for _, cmd := range [][]string{{"nc", tunA}, {"perf", "-c", "10.0.0.1", tunA}} {
			args := append(append([]string(nil), cmd...), tc.args...)
			if cmd[0] == "nc" {
				args = append(args, "10.0.0.1", "80")
			}
			code, _, errOut := runCmd(args...)
			require.Equal(t, 2, code, "%v: %s", args, errOut)
			require.Contains(t, errOut, tc.msg, "%v", args)
		}
	}
}
