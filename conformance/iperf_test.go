package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The `umptcp perf` tests: our iperf3-compatible tool against a stock
// iperf3 made to use the kernel's MPTCP (mptcpize), in both roles and
// both directions, over one TUN path and over two. The kernel side runs
// in the same fresh namespace as our binary, which creates the TUN
// devices there itself.

// iperfPaths are the TUN paths: path 0 carries the initial subflows.
var iperfPaths = [2]struct{ stack, host string }{{"10.83.0.2", "10.83.0.1"}, {"10.84.0.2", "10.84.0.1"}}

// iperfDuration is each test's -t: short, but long enough for the joins.
const iperfDuration = "2"

// requireIperf3 fails (as root) unless iperf3 and mptcpize are installed,
// and returns iperf3's version line.
func requireIperf3(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"iperf3", "mptcpize"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed for the umptcp perf interop tests: install the Debian packages iperf3 and mptcpize (scripts/test does as root)", bin)
		}
	}
	out, err := exec.Command("iperf3", "--version").CombinedOutput()
	require.NoError(t, err, "iperf3 --version: %s", out)
	return strings.SplitN(string(out), "\n", 2)[0]
}

// requirePerfCommand fails unless the built binary has the perf command
// (cmd/umptcp/main.go dispatches it).
func requirePerfCommand(t *testing.T, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "perf", "-h").CombinedOutput()
	require.NoError(t, err, "umptcp perf -h (is \"perf\" dispatched in cmd/umptcp/main.go?): %s", out)
	require.Contains(t, string(out), "iperf3", "umptcp perf -h")
}

// iperfOutput collects a process's output while tests poll it.
type iperfOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *iperfOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *iperfOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// iperfProc is a command running inside the rig's namespace.
type iperfProc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr iperfOutput
	done           chan struct{}
	err            error
}

// startIperfProc starts name args... in the namespace (`ip netns exec`, which
// execs the command: killing the process kills it). It is killed when
// ctx ends or the test does.
func startIperfProc(t *testing.T, ctx context.Context, rig *Rig, name string, args ...string) *iperfProc {
	t.Helper()
	p := &iperfProc{name: name + " " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", rig.NS.Name(), name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, p.cmd.Start(), p.name)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit, at most timeout, and requires exit
// status 0.
func (p *iperfProc) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %v\nstdout: %s\nstderr: %s", p.name, timeout, p.stdout.String(), p.stderr.String())
	}
	require.NoError(t, p.err, "%s\nstdout: %s\nstderr: %s", p.name, p.stdout.String(), p.stderr.String())
}

// iperfWaitFor polls until cond is true, failing the test after timeout.
func iperfWaitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(ctx, timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// iperfDoc is what the tests read of an iperf3 -J document (ours has the
// same shape, plus mptcp and subflows).
type iperfDoc struct {
	Start struct {
		TestStart struct {
			NumStreams int `json:"num_streams"`
			Reverse    int `json:"reverse"`
		} `json:"test_start"`
	} `json:"start"`
	Intervals []struct {
		Subflows []struct {
			ID int `json:"id"`
		} `json:"subflows"`
	} `json:"intervals"`
	End struct {
		SumSent struct {
			Bytes int64 `json:"bytes"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes int64 `json:"bytes"`
		} `json:"sum_received"`
		Streams []struct {
			Subflows []struct {
				ID            int    `json:"id"`
				Join          bool   `json:"join"`
				LocalHost     string `json:"local_host"`
				BytesSent     uint64 `json:"bytes_sent"`
				BytesReceived uint64 `json:"bytes_received"`
			} `json:"subflows"`
		} `json:"streams"`
		MPTCP *bool `json:"mptcp"`
	} `json:"end"`
	Error string `json:"error"`
}

func parseIperfDoc(t *testing.T, who, out string) iperfDoc {
	t.Helper()
	var d iperfDoc
	require.NoError(t, json.Unmarshal([]byte(out), &d), "%s's JSON: %s", who, out)
	require.Empty(t, d.Error, "%s reports an error", who)
	return d
}

// iperfTunArgs returns our binary's --tun flags for the first n paths.
func iperfTunArgs(t *testing.T, n int) (args, names []string) {
	for i := range n {
		name := tunName(t)
		names = append(names, name)
		args = append(args, "--tun", fmt.Sprintf("%s,%s/24,%s", name, iperfPaths[i].stack, iperfPaths[i].host))
	}
	return args, names
}

// iperfRequireClose checks that a byte count measured on the receiving side
// is at most what was sent and not far below: the sender counts what it
// handed to its socket, some of which was still in buffers at the end.
func iperfRequireClose(t *testing.T, sent, received int64, what string) {
	t.Helper()
	require.Greater(t, received, int64(1<<20), "%s: received", what)
	require.LessOrEqual(t, received, sent, "%s", what)
	require.GreaterOrEqual(t, float64(received), 0.5*float64(sent), "%s: received %d of %d bytes sent", what, received, sent)
}

// TestPerfClientAgainstKernelIperf3 runs `umptcp perf -c` against
// `mptcpize run iperf3 -s -1` in both directions, over one and two TUN
// paths: our client must finish cleanly, both sides' JSON must agree on
// the bytes, and the kernel must have seen MPTCP (and the joins).
func TestPerfClientAgainstKernelIperf3(t *testing.T) {
	RequireRoot(t)
	version := requireIperf3(t)
	bin := buildUmptcp(t)
	requirePerfCommand(t, bin)
	t.Logf("peer: %s", version)
	for _, paths := range []int{1, 2} {
		for _, reverse := range []bool{false, true} {
			t.Run(fmt.Sprintf("paths=%d/reverse=%v", paths, reverse), func(t *testing.T) {
				rig := NewRig(t, RigOptions{Name: "iperfc", Timeout: 90 * time.Second})
				_, err := rig.NS.Exec(rig.Ctx, "ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")
				require.NoError(t, err)
				before := rig.Nstat()

				kernel := startIperfProc(t, rig.Ctx, rig, "mptcpize", "run", "iperf3", "-s", "-1", "-J")
				iperfWaitFor(t, rig.Ctx, 10*time.Second, "iperf3 -s to listen", func() bool {
					out, err := rig.NS.Exec(rig.Ctx, "ss", "-H", "-l", "-t", "-n", "sport = :5201")
					return err == nil && strings.TrimSpace(string(out)) != ""
				})

				args, _ := iperfTunArgs(t, paths)
				args = append([]string{"perf", "-c", iperfPaths[0].host, "-t", iperfDuration, "-i", "0.5", "--json"}, args...)
				if reverse {
					args = append(args, "-R")
				}
				ours := startIperfProc(t, rig.Ctx, rig, bin, args...)
				ours.wait(t, 60*time.Second)
				kernel.wait(t, 30*time.Second)

				o := parseIperfDoc(t, "umptcp perf -c", ours.stdout.String())
				k := parseIperfDoc(t, "iperf3 -s", kernel.stdout.String())
				require.NotNil(t, o.End.MPTCP)
				require.True(t, *o.End.MPTCP, "our client used MPTCP")
				require.Equal(t, 1, o.Start.TestStart.NumStreams)
				if reverse {
					// The kernel sent; we learned its count at the end.
					require.Equal(t, k.End.SumSent.Bytes, o.End.SumSent.Bytes, "what iperf3 says it sent")
					iperfRequireClose(t, o.End.SumSent.Bytes, o.End.SumReceived.Bytes, "umptcp received")
				} else {
					require.Equal(t, k.End.SumReceived.Bytes, o.End.SumReceived.Bytes, "what iperf3 says it received")
					iperfRequireClose(t, o.End.SumSent.Bytes, k.End.SumReceived.Bytes, "iperf3 received")
				}
				require.Len(t, o.End.Streams, 1)
				require.Len(t, o.End.Streams[0].Subflows, paths, "one subflow per path")
				if paths == 2 {
					require.True(t, o.End.Streams[0].Subflows[1].Join)
					require.Equal(t, iperfPaths[1].stack, o.End.Streams[0].Subflows[1].LocalHost)
				}
				require.NotEmpty(t, o.Intervals)

				diff := rig.Nstat().Diff(before)
				RequireIncreased(t, diff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX")
				if paths == 2 {
					RequireIncreased(t, diff, "MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinAckRx")
				}
				RequireUnchanged(t, diff, "MPTcpExtMPCapableFallbackACK", "MPTcpExtDSSNotMatching",
					"MPTcpExtDataCsumErr", "MPTcpExtInfiniteMapRx", "MPTcpExtMPFailRx")
			})
		}
	}
}

// TestPerfServerAgainstKernelIperf3 runs `mptcpize run iperf3 -c -J`
// against `umptcp perf -s -1` in both directions, over one and two TUN
// paths (with two, the kernel client joins over the second, as an MPTCP
// "subflow" endpoint routed out of it).
func TestPerfServerAgainstKernelIperf3(t *testing.T) {
	RequireRoot(t)
	version := requireIperf3(t)
	bin := buildUmptcp(t)
	requirePerfCommand(t, bin)
	t.Logf("peer: %s", version)
	for _, paths := range []int{1, 2} {
		for _, reverse := range []bool{false, true} {
			t.Run(fmt.Sprintf("paths=%d/reverse=%v", paths, reverse), func(t *testing.T) {
				rig := NewRig(t, RigOptions{Name: "iperfs", Timeout: 90 * time.Second})
				ip := func(args ...string) {
					t.Helper()
					out, err := rig.NS.Exec(rig.Ctx, "ip", args...)
					require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
				}
				ip("mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")
				before := rig.Nstat()

				args, names := iperfTunArgs(t, paths)
				ours := startIperfProc(t, rig.Ctx, rig, bin, append([]string{"perf", "-s", "-1", "--json"}, args...)...)
				iperfWaitFor(t, rig.Ctx, 10*time.Second, "umptcp perf -s to listen", func() bool {
					return strings.Contains(ours.stderr.String(), "listening")
				})
				if paths == 2 {
					// The kernel joins from its address on path 1, routed
					// out of that path's device.
					h1 := iperfPaths[1].host
					ip("mptcp", "endpoint", "add", h1, "dev", names[1], "subflow")
					ip("rule", "add", "from", h1, "table", "100")
					ip("route", "add", "default", "dev", names[1], "table", "100")
				}

				kargs := []string{"run", "iperf3", "-c", iperfPaths[0].stack, "-t", iperfDuration, "-J"}
				if reverse {
					kargs = append(kargs, "-R")
				}
				kernel := startIperfProc(t, rig.Ctx, rig, "mptcpize", kargs...)
				kernel.wait(t, 60*time.Second)
				ours.wait(t, 30*time.Second)

				k := parseIperfDoc(t, "iperf3 -c", kernel.stdout.String())
				o := parseIperfDoc(t, "umptcp perf -s", ours.stdout.String())
				require.Equal(t, k.End.SumSent.Bytes, o.End.SumSent.Bytes, "both report the same bytes sent")
				require.Equal(t, k.End.SumReceived.Bytes, o.End.SumReceived.Bytes, "both report the same bytes received")
				iperfRequireClose(t, o.End.SumSent.Bytes, o.End.SumReceived.Bytes, "received")
				require.NotNil(t, o.End.MPTCP)
				require.True(t, *o.End.MPTCP, "our server's streams used MPTCP")
				if reverse {
					require.Equal(t, 1, o.Start.TestStart.Reverse)
				}
				require.Len(t, o.End.Streams, 1)
				if paths == 2 {
					require.Len(t, o.End.Streams[0].Subflows, 2, "the kernel joined over path 1")
					require.True(t, o.End.Streams[0].Subflows[1].Join)
				}

				diff := rig.Nstat().Diff(before)
				RequireIncreased(t, diff, "MPTcpExtMPCapableSYNACKRX")
				if paths == 2 {
					RequireIncreased(t, diff, "MPTcpExtMPJoinSynAckRx")
				}
				RequireUnchanged(t, diff, "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSNotMatching",
					"MPTcpExtDataCsumErr", "MPTcpExtInfiniteMapRx", "MPTcpExtMPFailRx")
			})
		}
	}
}
