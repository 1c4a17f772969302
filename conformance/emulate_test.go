package conformance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/tun"
)

// The emulation tests: Linux MPTCP on both ends, client and server in
// namespaces of their own, joined by two paths, each a tun.Forward between
// a TUN device in either namespace. This is how the kernel is measured over
// the very emulation our stack's tests use (the kernel has no netem here).

// emuPath is one path: the client's and the server's address on it.
type emuPath struct {
	client, server netip.Prefix
}

// emuFamily is the two paths in one address family: path 0 carries the
// initial subflow, path 1 the join.
type emuFamily struct {
	name  string
	paths [2]emuPath
}

var emuFamilies = []emuFamily{
	{"IPv4", [2]emuPath{
		{netip.MustParsePrefix("10.91.0.1/24"), netip.MustParsePrefix("10.91.0.2/24")},
		{netip.MustParsePrefix("10.92.0.1/24"), netip.MustParsePrefix("10.92.0.2/24")},
	}},
	{"IPv6", [2]emuPath{
		{netip.MustParsePrefix("fd91::1/64"), netip.MustParsePrefix("fd91::2/64")},
		{netip.MustParsePrefix("fd92::1/64"), netip.MustParsePrefix("fd92::2/64")},
	}},
}

// emuRigTimeout bounds each emulation test's context.
const emuRigTimeout = 4 * time.Minute

// emuRig is a client and a server namespace joined by two forwarded paths.
type emuRig struct {
	fam            emuFamily
	client, server *Rig
	ctun, stun     [2]string         // TUN names in the client's and the server's namespace
	fwd            [2]*tun.Forwarder // per path; ab is client to server
	beforeC        Counters
	beforeS        Counters
}

// newEmuRig creates both namespaces, both paths (path i shaped by p[i]
// both ways) and the kernels' MPTCP configuration: limits raised on both,
// and a "subflow" endpoint on the client's path 1 address, routed out
// through path 1 (policy routing: the join goes to the server's path 0
// address, which the main table routes through path 0).
func newEmuRig(t *testing.T, fam emuFamily, p [2]tun.LinkParams) *emuRig {
	t.Helper()
	r := &emuRig{
		fam:    fam,
		client: NewRig(t, RigOptions{Name: "emuc", Timeout: emuRigTimeout}),
		server: NewRig(t, RigOptions{Name: "emus", Timeout: emuRigTimeout}),
	}
	for _, rig := range []*Rig{r.client, r.server} {
		r.ip(t, rig, "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
	}
	for i, path := range fam.paths {
		r.ctun[i], r.stun[i] = tunName(t), tunName(t)
		cdev, err := tun.OpenIn(r.client.NS.Name(), tun.Config{Name: r.ctun[i], HostAddr: path.client})
		require.NoError(t, err, "tun.OpenIn client path %d", i)
		t.Cleanup(func() { closeWithin(t, fmt.Sprintf("client TUN path %d", i), cdev.Close) })
		sdev, err := tun.OpenIn(r.server.NS.Name(), tun.Config{Name: r.stun[i], HostAddr: path.server})
		require.NoError(t, err, "tun.OpenIn server path %d", i)
		t.Cleanup(func() { closeWithin(t, fmt.Sprintf("server TUN path %d", i), sdev.Close) })
		ba := p[i]
		ba.Seed++
		r.fwd[i] = tun.Forward(cdev.LinkEndpoint(), sdev.LinkEndpoint(), p[i], ba)
		t.Cleanup(r.fwd[i].Close) // before the devices close
	}
	c1 := fam.paths[1].client.Addr().String()
	r.ip(t, r.client, "mptcp", "endpoint", "add", c1, "dev", r.ctun[1], "subflow")
	r.ipFam(t, r.client, "rule", "add", "from", c1, "table", "100")
	r.ipFam(t, r.client, "route", "add", "default", "dev", r.ctun[1], "table", "100")
	r.beforeC, r.beforeS = r.client.Nstat(), r.server.Nstat()
	return r
}

// ip runs `ip args...` in rig's namespace, failing the test on error.
func (r *emuRig) ip(t *testing.T, rig *Rig, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(rig.Ctx, 10*time.Second)
	defer cancel()
	out, err := rig.NS.Exec(ctx, "ip", args...)
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// ipFam is ip with "-6" first on IPv6.
func (r *emuRig) ipFam(t *testing.T, rig *Rig, args ...string) {
	t.Helper()
	if r.fam.paths[0].client.Addr().Is6() {
		args = append([]string{"-6"}, args...)
	}
	r.ip(t, rig, args...)
}

// serverAddr is the server's address on path 0 with port.
func (r *emuRig) serverAddr(port int) string {
	return netip.AddrPortFrom(r.fam.paths[0].server.Addr(), uint16(port)).String()
}

// connect makes a kernel MPTCP connection from the client to the server
// on path 0, exchanges a few bytes (a Linux client joins only once a DSS
// from the server arrived) and waits until both ends count the join over
// path 1. The listener stays open until the test ends: Linux accepts joins
// only while it listens.
func (r *emuRig) connect(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := ListenMPTCP(r.server.NS, "tcp", r.serverAddr(kernelPort))
	require.NoError(t, err, "server listen")
	Track(t, ln)
	accepted := acceptAsync(ln)
	client, err = DialMPTCP(r.client.Ctx, r.client.NS, "tcp", r.serverAddr(kernelPort))
	require.NoError(t, err, "client dial")
	Track(t, client)
	server, err = awaitAccept(r.client.Ctx, accepted)
	require.NoError(t, err, "server accept")
	Track(t, server)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("diagnostics at the end of the failed test:\n%s", r.report())
		}
	})
	requireKernelMPTCP(t, client, false)
	requireKernelMPTCP(t, server, false)

	msg := []byte("umptcp emulate warm-up")
	for _, c := range []net.Conn{client, server} {
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	}
	go func() { _, _ = client.Write(msg) }()
	go func() { _, _ = server.Write(msg) }()
	for _, c := range []net.Conn{client, server} {
		got := make([]byte, len(msg))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err, "warm-up read")
		require.Equal(t, msg, got)
		require.NoError(t, c.SetDeadline(time.Time{}))
	}

	start := time.Now()
	for _, end := range []struct {
		name string
		c    net.Conn
	}{{"client", client}, {"server", server}} {
		var info MPTCPInfo
		var ierr error
		if !poll(r.client.Ctx, joinWait, func() bool {
			info, ierr = KernelMPTCPInfo(end.c)
			return ierr == nil && info.Subflows == 1
		}) {
			t.Fatalf("%s MPTCP_INFO %+v (err %v) after %v, want subflows=1 (the join over path 1)\n%s",
				end.name, info, ierr, joinWait, r.report())
		}
	}
	t.Logf("join up %v after the warm-up", time.Since(start).Round(time.Millisecond))
	return client, server
}

// echoRTT returns the smallest of n round trips of one byte over a plain
// TCP connection from the client to an echo server on the server's path 0
// address.
func (r *emuRig) echoRTT(t *testing.T, n int) time.Duration {
	t.Helper()
	ln, err := ListenTCP(r.server.NS, "tcp", r.serverAddr(kernelPort+2))
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.Copy(c, c)
	}()
	c, err := DialTCP(r.client.Ctx, r.client.NS, "tcp", r.serverAddr(kernelPort+2))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	best := time.Duration(1<<63 - 1)
	buf := []byte{'x'}
	for range n {
		start := time.Now()
		_, err := c.Write(buf)
		require.NoError(t, err)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		best = min(best, time.Since(start))
	}
	return best
}

// stats returns the forwarders' counters, [path][0 = client to server,
// 1 = server to client].
func (r *emuRig) stats() (s [2][2]tun.LinkStats) {
	for i, f := range r.fwd {
		s[i][0], s[i][1] = f.Stats()
	}
	return s
}

// report describes both kernels' view and the paths for failure messages.
func (r *emuRig) report() string {
	var b strings.Builder
	for i, st := range r.stats() {
		fmt.Fprintf(&b, "path %d client->server %+v\npath %d server->client %+v\n", i, st[0], i, st[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, side := range []struct {
		name   string
		rig    *Rig
		before Counters
	}{{"client", r.client, r.beforeC}, {"server", r.server, r.beforeS}} {
		for _, args := range [][]string{{"ss", "-Mani"}, {"ss", "-tani"}, {"ip", "mptcp", "endpoint", "show"}} {
			out, err := side.rig.NS.Exec(ctx, args[0], args[1:]...)
			fmt.Fprintf(&b, "%s `%s` (err %v):\n%s\n", side.name, strings.Join(args, " "), err, out)
		}
		if c, err := Nstat(side.rig.NS); err == nil {
			fmt.Fprintf(&b, "%s counters changed: %v\n", side.name, NonZero(c.Diff(side.before)))
		}
	}
	return b.String()
}

// requireJoinCounted checks the handshakes as both kernels counted them.
func (r *emuRig) requireJoinCounted(t *testing.T) {
	t.Helper()
	ds := r.server.Nstat().Diff(r.beforeS)
	dc := r.client.Nstat().Diff(r.beforeC)
	RequireIncreased(t, ds, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinAckRx")
	require.EqualValues(t, 1, ds["MPTcpExtMPJoinAckRx"], "the server established exactly one join")
	RequireIncreased(t, dc, "MPTcpExtMPCapableSYNACKRX", "MPTcpExtMPJoinSynTx", "MPTcpExtMPJoinSynAckRx")
	RequireUnchanged(t, ds, joinErrorCounters...)
	RequireUnchanged(t, dc, joinErrorCounters...)
	RequireUnchanged(t, ds, MPCapableErrorCounters...)
	RequireUnchanged(t, dc, MPCapableErrorCounters...)
}

// TestEmulateKernelMPTCP: two Linux MPTCP endpoints over two emulated
// 10 Mbit/s paths with 10 ms of delay each way. The client joins over path
// 1; 6 MiB cross each way intact, both paths carry a share of it in each
// direction, and the shaping is real: a round trip takes at least twice
// the delay, the exchange at least 0.8 times its ideal time at the two
// paths' 20 Mbit/s, and no path delivers faster than its rate.
func TestEmulateKernelMPTCP(t *testing.T) {
	for _, fam := range emuFamilies {
		t.Run(fam.name, func(t *testing.T) {
			const rate = 10_000_000
			const delay = 10 * time.Millisecond
			p := tun.LinkParams{Rate: rate, Delay: delay}
			r := newEmuRig(t, fam, [2]tun.LinkParams{p, p})

			rtt := r.echoRTT(t, 5)
			t.Logf("round trip over path 0: %v", rtt.Round(100*time.Microsecond))
			require.GreaterOrEqual(t, rtt, 2*delay, "round trip over a path with %v each way", delay)
			require.Less(t, rtt, 2*delay+time.Second)

			client, server := r.connect(t)
			const n = 6 << 20
			before := r.stats()
			ctx, cancel := context.WithTimeout(r.client.Ctx, 2*time.Minute)
			defer cancel()
			start := time.Now()
			err := Exchange(ctx, client, server, ExchangeOptions{AtoB: n, BtoA: n})
			el := time.Since(start)
			require.NoError(t, err, "exchange of %d MiB each way\n%s", n>>20, r.report())
			after := r.stats()
			ideal := time.Duration(float64(n*8) / (2 * rate) * float64(time.Second))
			t.Logf("%d MiB each way in %v (ideal at 2x%g Mbit/s: %v)", n>>20, el.Round(time.Millisecond), rate/1e6, ideal.Round(time.Millisecond))
			require.GreaterOrEqual(t, el, ideal*8/10, "faster than two 10 Mbit/s paths allow")

			for i := range after {
				for d, dir := range []string{"client->server", "server->client"} {
					got := after[i][d].DeliveredBytes - before[i][d].DeliveredBytes
					t.Logf("path %d %s: %d bytes (%.1f Mbit/s), dropped %d", i, dir, got,
						float64(got)*8/el.Seconds()/1e6, after[i][d].Dropped()-before[i][d].Dropped())
					require.Greater(t, got, uint64(1<<20), "path %d %s carried a share of the data", i, dir)
					// Everything this path delivered during the exchange
					// went through its rate limiter.
					limit := uint64(float64(rate)/8*el.Seconds()*1.05) + 64<<10
					require.LessOrEqual(t, got, limit, "path %d %s above its rate", i, dir)
				}
			}
			r.requireJoinCounted(t)
		})
	}
}

// TestEmulateKernelBlackhole: while both kernels send 8 MiB to each other
// over two emulated paths, path 0 (the initial subflow's) becomes a
// blackhole both ways once a third has arrived. Every byte still arrives
// intact, over the join's path 1.
func TestEmulateKernelBlackhole(t *testing.T) {
	const rate = 20_000_000
	p := tun.LinkParams{Rate: rate, Delay: 5 * time.Millisecond}
	r := newEmuRig(t, emuFamilies[0], [2]tun.LinkParams{p, p})
	client, server := r.connect(t)

	const n = 8 << 20
	ctx, cancel := context.WithTimeout(r.client.Ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	var cutAt time.Time
	var atCut [2][2]tun.LinkStats
	res, err := transferCut(ctx, client, server, n, n, func() {
		cutAt = time.Now()
		atCut = r.stats()
		cut := p
		cut.Blackhole = true
		r.fwd[0].SetParams(cut, cut)
	})
	require.NoError(t, err, "transfer with path 0 cut (%v after the start)\n%s", time.Since(start).Round(time.Millisecond), r.report())
	require.False(t, cutAt.IsZero(), "the path was never cut")
	t.Logf("cut path 0 at %v (received %d by the server, %d by the client, of %d); transfer done %v after the cut",
		cutAt.Sub(start).Round(time.Millisecond), res.cutAtAtoB, res.cutAtBtoA, n, time.Since(cutAt).Round(time.Millisecond))
	require.Less(t, res.cutAtAtoB, int64(n*2/3), "the server had most of the data before the cut")
	require.Less(t, res.cutAtBtoA, int64(n*2/3), "the client had most of the data before the cut")

	after := r.stats()
	for d, dir := range []string{"client->server", "server->client"} {
		require.Positive(t, after[0][d].DroppedBlackhole, "path 0 %s: the blackhole dropped packets", dir)
		require.Equal(t, atCut[0][d].DeliveredPackets, after[0][d].DeliveredPackets, "path 0 %s delivered after the cut", dir)
		moved := after[1][d].DeliveredBytes - atCut[1][d].DeliveredBytes
		require.Greater(t, moved, uint64(n/3), "path 1 %s carried the rest", dir)
	}
	for _, c := range []net.Conn{client, server} {
		mp, err := KernelMultipathTCP(c)
		require.NoError(t, err)
		require.True(t, mp, "fell back to TCP")
	}
	r.requireJoinCounted(t)
}

// TestEmulateCommand runs the built `umptcp emulate` between two fresh
// namespaces (devices created by the command, in them), moves data both
// ways with kernel TCP through it, and stops it with SIGINT.
func TestEmulateCommand(t *testing.T) {
	RequireRoot(t)
	bin := buildUmptcp(t)
	a := NewRig(t, RigOptions{Name: "emua"})
	b := NewRig(t, RigOptions{Name: "emub"})
	devA, devB := tunName(t), tunName(t)
	const rate = 20_000_000
	const delay = 10 * time.Millisecond
	cmd := exec.CommandContext(a.Ctx, bin, "emulate", "--rate", "20mbit", "--delay", delay.String(), "-v",
		a.NS.Name()+":"+devA+",10.97.0.1/24", b.NS.Name()+":"+devB+",10.97.0.2/24")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
			}
		}
	})
	var out strings.Builder
	readUntil := func(what string, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("umptcp emulate ended before %q; stdout:\n%s\nstderr:\n%s", what, out.String(), stderr.String())
				}
				out.WriteString(l + "\n")
				if strings.Contains(l, what) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q from umptcp emulate within %v; stdout:\n%s\nstderr:\n%s", what, timeout, out.String(), stderr.String())
			}
		}
	}
	readUntil("forwarding", 30*time.Second)

	ln, err := ListenTCP(b.NS, "tcp", "10.97.0.2:"+strconv.Itoa(kernelPort))
	require.NoError(t, err)
	Track(t, ln)
	accepted := acceptAsync(ln)
	c, err := DialTCP(a.Ctx, a.NS, "tcp", "10.97.0.2:"+strconv.Itoa(kernelPort))
	require.NoError(t, err, "dial through umptcp emulate")
	Track(t, c)
	s, err := awaitAccept(a.Ctx, accepted)
	require.NoError(t, err)
	Track(t, s)
	const n = 4 << 20
	start := time.Now()
	ctx, cancel := context.WithTimeout(a.Ctx, time.Minute)
	defer cancel()
	require.NoError(t, Exchange(ctx, c, s, ExchangeOptions{AtoB: n, BtoA: n}))
	el := time.Since(start)
	ideal := time.Duration(float64(n*8) / rate * float64(time.Second))
	t.Logf("%d MiB each way through umptcp emulate in %v (ideal %v)", n>>20, el.Round(time.Millisecond), ideal.Round(time.Millisecond))
	require.GreaterOrEqual(t, el, ideal*8/10, "faster than 20 Mbit/s")

	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	readUntil("B->A: dropped", 30*time.Second)
	select {
	case err := <-exited:
		stopped = true
		require.NoError(t, err, "umptcp emulate exit; stderr:\n%s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("umptcp emulate did not exit after SIGINT")
	}
	t.Logf("umptcp emulate output:\n%s", out.String())
	require.Empty(t, stderr.String())
	require.Contains(t, out.String(), "20mbit, delay 10ms")
	require.Regexp(t, `emulate:\s+\d+\.\ds\s+A->B\s+\d+\.\d+ Mbit/s`, out.String(), "-v lines")
	for _, dir := range []string{"A->B", "B->A"} {
		m := regexp.MustCompile(dir + ` \(.*\): sent \d+ packets \(\d+ bytes\), delivered (\d+) packets \((\d+) bytes`).FindStringSubmatch(out.String())
		require.NotNil(t, m, "%s statistics line", dir)
		delivered, err := strconv.ParseInt(m[2], 10, 64)
		require.NoError(t, err)
		require.Greater(t, delivered, int64(n), "%s delivered at least the data", dir)
	}
}
