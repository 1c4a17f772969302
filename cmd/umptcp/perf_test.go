package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

func runPerf(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := perf(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPerfUsageErrors(t *testing.T) {
	const spec = "--tun=pf0,10.96.0.2/24,10.96.0.1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "either -s"},
		{[]string{"-s", "-c", "10.0.0.1", spec}, "either -s"},
		{[]string{"-c", "10.0.0.1"}, "--tun"},
		{[]string{"stray", "-c", "10.0.0.1", spec}, "unexpected argument"},
		{[]string{"-c", "10.0.0.1", spec, "-t", "1", "-n", "1M"}, "either -t or -n"},
		{[]string{"-s", spec, "-R"}, "-R is a client option"},
		{[]string{"-s", spec, "-n", "5M"}, "-n is a client option"},
		{[]string{"-c", "10.0.0.1", spec, "-1"}, "-1 is a server option"},
		{[]string{"-c", "10.0.0.1", spec, "-P", "129"}, "-P must be"},
		{[]string{"-c", "10.0.0.1", spec, "-l", "2M"}, "-l must be"},
		{[]string{"-c", "10.0.0.1", spec, "-n", "12Q"}, "bad number"},
		{[]string{"-c", "10.0.0.1", spec, "-t", "-3"}, "seconds"},
		{[]string{"-c", "10.0.0.1", spec, "-i", "0.01"}, "-i must be"},
		{[]string{"-c", "10.0.0.1", spec, "-p", "70000"}, "bad port"},
		{[]string{"-c", "10.0.0.1", spec, "--scheduler", "nope"}, "valid: default"},
		{[]string{"-c", "10.0.0.1", spec, "--backup", "pf1"}, "no --tun device"},
	} {
		code, _, errOut := runPerf(tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
	code, out, _ := runPerf("-h")
	require.Equal(t, 0, code)
	_ = out
}

func TestPerfBadTunSpec(t *testing.T) {
	// A malformed spec fails before any device is made: one line, exit 1.
	code, _, errOut := runPerf("-c", "10.0.0.1", "--tun", "pf0,10.96.0.2/24,fd00::1")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "one line: %q", errOut)
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// perfStacks are two in-process stacks joined by two emulated paths
// (10.97.i.1 client, 10.97.i.2 server): the CLI's client and server
// code without TUN devices.
func perfStacks(t *testing.T) (client, server *stack.Stack) {
	var cl, sl []stack.Link
	for i := range 2 {
		p := tun.LinkParams{Rate: 100e6, Delay: 2 * time.Millisecond, Seed: int64(i + 1)}
		a, b := tun.NewPipe(p, p)
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.97.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.97.%d.2/24", i))}})
	}
	c, err := stack.New(stack.Config{Links: cl})
	require.NoError(t, err)
	s, err := stack.New(stack.Config{Links: sl})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// perfPair runs the CLI's server (-1) and then its client with the given
// client flags, both from the same flag parser as the command.
func perfPair(t *testing.T, serverArgs, clientArgs []string) (cOut, sOut string) {
	t.Helper()
	const spec = "--tun=pf0,10.97.0.2/24,10.97.0.1" // parsed, never opened here
	so, code := parsePerf(append([]string{"-s", "-1", spec}, serverArgs...), &bytes.Buffer{})
	require.Equal(t, -1, code)
	co, code := parsePerf(append([]string{"-c", "10.97.0.2", spec}, clientArgs...), &bytes.Buffer{})
	require.Equal(t, -1, code)
	cs, ss := perfStacks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sout, serr syncBuffer
	served := make(chan error, 1)
	go func() { served <- perfServer(ctx, so, ss, &sout, &serr) }()
	require.Eventually(t, func() bool { return strings.Contains(sout.String()+serr.String(), "istening") }, 10*time.Second, 5*time.Millisecond)
	var cout bytes.Buffer
	require.NoError(t, perfClient(ctx, co, cs, &cout), cout.String())
	require.NoError(t, <-served, "server: %s %s", sout.String(), serr.String())
	t.Logf("client:\n%s\nserver:\n%s", cout.String(), sout.String())
	return cout.String(), sout.String()
}

// TestPerfTextInProcess checks the text report of both ends: iperf3's
// interval and summary lines, one line per subflow, MPTCP.
func TestPerfTextInProcess(t *testing.T) {
	cout, sout := perfPair(t, []string{"-i", "0.5"}, []string{"-t", "1.2", "-i", "0.5", "-P", "2"})
	// (Timers may fire late under the race detector: 0.50 may be 0.52.)
	require.Regexp(t, `\[  3\]   0\.00-0\.5\d   sec`, cout)
	require.Regexp(t, `\[SUM\]   0\.00-0\.5\d   sec`, cout)
	for _, want := range []string{"Connecting to host 10.97.0.2, port 5201", "[  1] local 10.97.0.1 port", "(MPTCP)",
		"[ ID] Interval           Transfer     Bitrate",
		"subflow 0  10.97.0.1:", "subflow 1  10.97.1.1:", "join", "sender", "receiver", "Mbits/sec",
		"MPTCP on all 2 stream(s): 4 subflow(s), 2 of them joined", "umptcp perf done."} {
		require.Contains(t, cout, want, cout)
	}
	for _, want := range []string{"Server listening on 5201 (test #1)", "Accepted connection from 10.97.0.1, port",
		"[  1] local 10.97.0.2 port 5201 connected to 10.97.0.1", "subflow 1  10.97.0.2:5201 -> 10.97.1.1:", "receiver"} {
		require.Contains(t, sout, want, sout)
	}
	require.Regexp(t, `\[SUM\]   0\.00-1\.\d\d\s+sec .* sender\n\[SUM\]   0\.00-\d\.\d\d\s+sec .* receiver\n`, cout)
}

// iperf3JSON is the part of iperf3 -J's document that scripts read.
type iperf3JSON struct {
	Start struct {
		Connected []struct {
			Socket     int    `json:"socket"`
			LocalHost  string `json:"local_host"`
			RemotePort int    `json:"remote_port"`
		} `json:"connected"`
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
			Bytes      int64  `json:"bytes"`
			Reverse    int    `json:"reverse"`
		} `json:"test_start"`
		Cookie string `json:"cookie"`
	} `json:"start"`
	Intervals []struct {
		Streams []struct {
			Socket  int     `json:"socket"`
			Bytes   int64   `json:"bytes"`
			Seconds float64 `json:"seconds"`
			Sender  bool    `json:"sender"`
		} `json:"streams"`
		Sum struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum"`
		Subflows []struct {
			Socket        int     `json:"socket"`
			ID            int     `json:"id"`
			LocalHost     string  `json:"local_host"`
			BytesReceived uint64  `json:"bytes_received"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Join          bool    `json:"join"`
		} `json:"subflows"`
	} `json:"intervals"`
	End struct {
		Streams []struct {
			Sender struct {
				Bytes int64 `json:"bytes"`
			} `json:"sender"`
			Receiver struct {
				Bytes int64 `json:"bytes"`
			} `json:"receiver"`
			Subflows []struct {
				ID int `json:"id"`
			} `json:"subflows"`
		} `json:"streams"`
		SumSent struct {
			Bytes int64 `json:"bytes"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		MPTCP bool `json:"mptcp"`
	} `json:"end"`
	Error string `json:"error"`
}

// TestPerfJSONInProcess checks that both ends' --json documents parse as
// iperf3 -J documents, agree, and carry the subflows.
func TestPerfJSONInProcess(t *testing.T) {
	cout, sout := perfPair(t, []string{"--json"}, []string{"--json", "-R", "-n", "4M", "-i", "0.2"})
	var c, s iperf3JSON
	require.NoError(t, json.Unmarshal([]byte(cout), &c), cout)
	require.NoError(t, json.Unmarshal([]byte(sout), &s), sout)
	require.Empty(t, c.Error)
	require.Equal(t, "TCP", c.Start.TestStart.Protocol)
	require.Equal(t, 1, c.Start.TestStart.Reverse)
	require.Equal(t, int64(4<<20), c.Start.TestStart.Bytes)
	require.Equal(t, c.Start.Cookie, s.Start.Cookie)
	require.Len(t, c.Start.Connected, 1)
	require.Equal(t, "10.97.0.1", c.Start.Connected[0].LocalHost)
	require.NotEmpty(t, c.Intervals)
	var got int64
	var joined bool
	for _, iv := range c.Intervals {
		require.Len(t, iv.Streams, 1)
		require.False(t, iv.Streams[0].Sender, "reverse: the client receives")
		got += iv.Sum.Bytes
		for _, sf := range iv.Subflows {
			require.Equal(t, 1, sf.Socket)
			joined = joined || (sf.Join && sf.LocalHost == "10.97.1.1")
		}
	}
	require.True(t, joined, "the join over the second path is reported")
	require.Equal(t, int64(4<<20), got)
	require.Equal(t, int64(4<<20), c.End.SumSent.Bytes)
	require.Equal(t, int64(4<<20), c.End.SumReceived.Bytes)
	require.Equal(t, c.End.SumSent.Bytes, s.End.SumSent.Bytes)
	require.Equal(t, c.End.SumReceived.Bytes, s.End.SumReceived.Bytes)
	require.Positive(t, c.End.SumReceived.BitsPerSecond)
	require.True(t, c.End.MPTCP)
	require.True(t, s.End.MPTCP)
	require.Len(t, c.End.Streams, 1)
	require.Len(t, c.End.Streams[0].Subflows, 2)
	var sent int64
	for _, iv := range s.Intervals { // 1 s by default: one partial interval
		sent += iv.Sum.Bytes
	}
	require.Equal(t, int64(4<<20), sent)
}
