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
