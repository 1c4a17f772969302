package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The multipath tests: umptcp with two links, each a TUN device whose
// kernel side is in the same fresh namespace, against Linux MPTCP; the
// second subflow is an MP_JOIN over the second path (RFC 8684 §3.2).
//
// Set UMPTCP_MULTIPATH_PCAP to a directory to get a pcap of each path per
// test, as the TUN device carries it (what a blackhole drops coming in is
// in it, what it drops going out is not).

// multiPath is one path of the multipath rig: umptcp's address on it and
// the kernel's.
type multiPath struct {
	stack, host netip.Prefix
}

// multiFamily is the two paths of the rig in one address family.
type multiFamily struct {
	name  string
	paths [2]multiPath
}

// multiFamilies are the families the multipath tests run over: path 0
// carries the initial subflow, path 1 the join.
var multiFamilies = []multiFamily{
	{"IPv4", [2]multiPath{
		{netip.MustParsePrefix("10.77.0.2/24"), netip.MustParsePrefix("10.77.0.1/24")},
		{netip.MustParsePrefix("10.78.0.2/24"), netip.MustParsePrefix("10.78.0.1/24")},
	}},
	{"IPv6", [2]multiPath{
		{netip.MustParsePrefix("fd77::2/64"), netip.MustParsePrefix("fd77::1/64")},
		{netip.MustParsePrefix("fd78::2/64"), netip.MustParsePrefix("fd78::1/64")},
	}},
}

// multiRigTimeout bounds each multipath test's context (the rig's Ctx).
const multiRigTimeout = 5 * time.Minute

// multiRig is a namespace holding the kernel ends of two TUN devices, and
// an umptcp stack with one link over each.
type multiRig struct {
	*Rig
	fam    multiFamily
	stack  *stack.Stack
	tuns   [2]string    // the TUN devices' names (in the namespace)
	counts [2]*pktCount // packets through each of our links
	before Counters     // the namespace's counters once set up
}

// newMultiRig creates the namespace (kernel options; MPTCP limits raised
// so that joins are accepted and opened), the two TUN devices and an
// umptcp stack over them (ours; its Links are filled in, path 0 first).
// wraps[i], if not nil, is put between TUN device i and our stack.
// Everything is closed when the test ends, the stack first.
func newMultiRig(t *testing.T, fam multiFamily, kernel RigOptions, ours stack.Config, wraps [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint) *multiRig {
	t.Helper()
	if kernel.Name == "" {
		kernel.Name = "mpj"
	}
	if kernel.Timeout == 0 {
		kernel.Timeout = multiRigTimeout
	}
	r := NewRig(t, kernel)
	u := &multiRig{Rig: r, fam: fam}
	u.ip(t, "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")

	pcapDir := os.Getenv("UMPTCP_MULTIPATH_PCAP")
	stackClosed := true // false once stack.Close hung: dev.Close would hang too
	ours.Links = nil
	for i, p := range fam.paths {
		u.tuns[i] = tunName(t)
		dev, err := tun.OpenIn(r.NS.Name(), tun.Config{Name: u.tuns[i], StackAddr: p.stack, HostAddr: p.host})
		require.NoError(t, err, "tun.OpenIn path %d", i)
		t.Cleanup(func() {
			if stackClosed {
				closeWithin(t, fmt.Sprintf("tun.Device.Close (path %d)", i), dev.Close)
			}
		})
		ep := dev.LinkEndpoint()
		if pcapDir != "" {
			name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
			f, err := os.Create(filepath.Join(pcapDir, fmt.Sprintf("%s.path%d.pcap", name, i)))
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			cep, err := tun.Capture(ep, f)
			require.NoError(t, err)
			t.Cleanup(func() { cep.CloseCapture() })
			ep = cep
		}
		u.counts[i] = &pktCount{}
		u.counts[i].Endpoint.Init(ep, u.counts[i])
		ep = u.counts[i]
		if wraps[i] != nil {
			ep = wraps[i](ep)
		}
		ours.Links = append(ours.Links, stack.Link{Endpoint: ep, Addrs: []netip.Prefix{p.stack}})
	}
	s, err := stack.New(ours)
	require.NoError(t, err, "stack.New")
	t.Cleanup(func() { stackClosed = closeWithin(t, "stack.Close", s.Close) })
	u.stack = s
	u.before = r.Nstat()
	return u
}

// ip runs `ip args...` in the namespace, failing the test on error.
func (u *multiRig) ip(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(u.Ctx, 10*time.Second)
	defer cancel()
	out, err := u.NS.Exec(ctx, "ip", args...)
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// ipFam is ip with "-6" first on an IPv6 rig.
func (u *multiRig) ipFam(t *testing.T, args ...string) {
	t.Helper()
	if u.fam.paths[0].host.Addr().Is6() {
		args = append([]string{"-6"}, args...)
	}
	u.ip(t, args...)
}

// kernelAddr and stackAddr are the listening addresses of each side, both
// on path 0.
func (u *multiRig) kernelAddr() string {
	return netip.AddrPortFrom(u.fam.paths[0].host.Addr(), kernelPort).String()
}

func (u *multiRig) stackAddr() string {
	return netip.AddrPortFrom(u.fam.paths[0].stack.Addr(), stackPort).String()
}

// dialKernel connects umptcp to a kernel MPTCP listener on path 0. The
// listener stays open until the test ends: Linux accepts joins only while
// it listens.
func (u *multiRig) dialKernel(t *testing.T) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	return u.dialKernelOn(t, "tcp", u.kernelAddr())
}

// dialKernelOn is dialKernel with the kernel listening on listen.
func (u *multiRig) dialKernelOn(t *testing.T, network, listen string) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	ln, err := ListenMPTCP(u.NS, network, listen)
	require.NoError(t, err, "kernel listen")
	Track(t, ln)
	accepted := acceptAsync(ln)
	ours, err = u.stack.DialContext(u.Ctx, "tcp", u.kernelAddr())
	require.NoError(t, err, "umptcp dial")
	Track(t, ours)
	kernel, err = awaitAccept(u.Ctx, accepted)
	require.NoError(t, err, "kernel accept")
	return ours, Track(t, kernel)
}

// kernelClientPaths makes the kernel open a join from its path 1 address
// (an MPTCP "subflow" endpoint) and route it out through the path 1 TUN
// device even though our address of the initial subflow is on path 0.
func (u *multiRig) kernelClientPaths(t *testing.T) {
	t.Helper()
	h1 := u.fam.paths[1].host.Addr().String()
	u.ip(t, "mptcp", "endpoint", "add", h1, "dev", u.tuns[1], "subflow")
	u.ipFam(t, "rule", "add", "from", h1, "table", "100")
	u.ipFam(t, "route", "add", "default", "dev", u.tuns[1], "table", "100")
}

// acceptKernel connects a kernel MPTCP client to an umptcp listener on
// path 0, the kernel set up to join over path 1. Our listener stays open
// until the test ends (joins need it).
func (u *multiRig) acceptKernel(t *testing.T) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	u.kernelClientPaths(t)
	return u.acceptKernelOn(t, u.stackAddr())
}

// acceptKernelOn connects a kernel MPTCP client to our listener on listen
// (the kernel dials our path 0 address).
func (u *multiRig) acceptKernelOn(t *testing.T, listen string) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	ln, err := u.stack.Listen("tcp", listen)
	require.NoError(t, err, "umptcp listen")
	Track(t, ln)
	type result struct {
		c   *stack.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.AcceptConn()
		accepted <- result{c, err}
	}()
	kernel, err = DialMPTCP(u.Ctx, u.NS, "tcp", u.stackAddr())
	require.NoError(t, err, "kernel dial")
	Track(t, kernel)
	select {
	case r := <-accepted:
		require.NoError(t, r.err, "umptcp accept")
		ours = r.c
	case <-u.Ctx.Done():
		t.Fatalf("umptcp accept: %v", u.Ctx.Err())
	}
	return Track(t, ours), kernel
}

// connect makes a connection with umptcp as client of a kernel server
// (kernelServer) or as server of a kernel client, and checks both ends are
// MPTCP. If the test fails later, the diagnostics are logged.
func (u *multiRig) connect(t *testing.T, kernelServer bool) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	if kernelServer {
		ours, kernel = u.dialKernel(t)
	} else {
		ours, kernel = u.acceptKernel(t)
	}
	u.settle(t, ours, kernel)
	return ours, kernel
}

// settle checks both ends of a new connection use MPTCP and warms it up;
// if the test fails later, the diagnostics are logged.
func (u *multiRig) settle(t *testing.T, ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("diagnostics at the end of the failed test:\n%s", u.report(ours))
		}
	})
	requireKernelMPTCP(t, kernel, false)
	requireOursMPTCP(t, ours, kernel, false)
	u.warmUp(t, ours, kernel)
}

// warmUpMsg is what warmUp sends each way.
const warmUpMsg = "umptcp multipath warm-up"

// warmUp exchanges a few bytes each way. A Linux client opens its joins
// only once the connection is fully established, that is once a DSS from
// the server arrived (kernel to kernel too): our server sends none before
// it has data to send or acknowledge.
func (u *multiRig) warmUp(t *testing.T, ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	msg := []byte(warmUpMsg)
	deadline := time.Now().Add(10 * time.Second)
	require.NoError(t, ours.SetDeadline(deadline))
	require.NoError(t, kernel.SetDeadline(deadline))
	errs := make(chan error, 2)
	for _, c := range []net.Conn{ours, kernel} {
		go func() {
			_, err := c.Write(msg)
			errs <- err
		}()
	}
	for _, c := range []net.Conn{ours, kernel} {
		got := make([]byte, len(msg))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err, "warm-up read\n%s", u.report(ours))
		require.Equal(t, msg, got, "warm-up bytes")
	}
	for range 2 {
		require.NoError(t, <-errs, "warm-up write")
	}
	require.NoError(t, ours.SetDeadline(time.Time{}))
	require.NoError(t, kernel.SetDeadline(time.Time{}))
}

// report describes our connection's subflows and the kernel's view (ss,
// counters changed since the rig was set up) for failure messages.
func (u *multiRig) report(ours *stack.Conn) string {
	var b strings.Builder
	if ours != nil {
		b.WriteString(formatStats(ours.Stats()))
	}
	if u.stack != nil {
		fmt.Fprintf(&b, "our counters: %v\n", changedMIB(u.stack))
	}
	for i, c := range u.counts {
		if c != nil {
			fmt.Fprintf(&b, "our link %d (%s): %s\n", i, u.tuns[i], c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, args := range [][]string{{"ss", "-Mani"}, {"ss", "-tani"}, {"ip", "mptcp", "endpoint", "show"}} {
		out, err := u.NS.Exec(ctx, args[0], args[1:]...)
		fmt.Fprintf(&b, "kernel `%s` (err %v):\n%s\n", strings.Join(args, " "), err, out)
	}
	if c, err := Nstat(u.NS); err == nil {
		fmt.Fprintf(&b, "kernel counters changed: %v\n", NonZero(c.Diff(u.before)))
	} else {
		fmt.Fprintf(&b, "kernel counters: %v\n", err)
	}
	return b.String()
}

// formatStats prints a connection's Stats, one subflow a line.
func formatStats(st stack.ConnStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "umptcp conn: mptcp=%v fallback=%q csum=%v sent=%d received=%d reinjected=%d\n",
		st.MPTCP, st.FallbackReason, st.Checksum, st.BytesSent, st.BytesReceived, st.Reinjected)
	for _, s := range st.Subflows {
		fmt.Fprintf(&b, "  subflow %d: %s -> %s join=%v backup=%v state=%s sent=%d received=%d rtt=%v\n",
			s.ID, s.Local, s.Remote, s.Join, s.Backup, s.State, s.BytesSent, s.BytesReceived, s.RTT)
	}
	return b.String()
}

// pktCount counts the packets and bytes that pass one of our links.
type pktCount struct {
	nested.Endpoint
	outPkts, inPkts, outBytes, inBytes atomic.Int64
}

func (c *pktCount) String() string {
	return fmt.Sprintf("out %d packets (%d bytes), in %d packets (%d bytes)",
		c.outPkts.Load(), c.outBytes.Load(), c.inPkts.Load(), c.inBytes.Load())
}

func (c *pktCount) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		c.outPkts.Add(1)
		c.outBytes.Add(int64(pkt.Size()))
	}
	return c.Endpoint.WritePackets(pkts)
}

func (c *pktCount) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	c.inPkts.Add(1)
	c.inBytes.Add(int64(pkt.Size()))
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// activeSubflows counts the subflows of st in state "active".
func activeSubflows(st stack.ConnStats) int {
	n := 0
	for _, s := range st.Subflows {
		if s.State == "active" {
			n++
		}
	}
	return n
}

// poll calls cond every 10 ms until it is true (true) or timeout passes or
// ctx ends (false).
func poll(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// joinWait bounds the wait for the second subflow (umptcp's own join
// timeout is 10 s).
const joinWait = 15 * time.Second

// waitJoined waits until ours has two active subflows and the kernel's
// MPTCP_INFO counts one additional subflow; it returns our join subflow.
func (u *multiRig) waitJoined(t *testing.T, ours *stack.Conn, kernel net.Conn) stack.SubflowStats {
	t.Helper()
	start := time.Now()
	if !poll(u.Ctx, joinWait, func() bool { return activeSubflows(ours.Stats()) == 2 }) {
		t.Fatalf("umptcp has %d active subflows after %v, want 2 (the initial one and the join over path 1)\n%s",
			activeSubflows(ours.Stats()), joinWait, u.report(ours))
	}
	var info MPTCPInfo
	var ierr error
	if !poll(u.Ctx, joinWait, func() bool {
		info, ierr = KernelMPTCPInfo(kernel)
		return ierr == nil && info.Subflows == 1
	}) {
		t.Fatalf("kernel MPTCP_INFO: %+v (err %v), want subflows=1 (one additional subflow)\n%s", info, ierr, u.report(ours))
	}
	// ss -M in the kernel's namespace says the same.
	entries, err := SSMptcp(u.NS)
	require.NoError(t, err, "ss -M")
	e, ok := FindSS(entries, addrPort(kernel.LocalAddr()), addrPort(kernel.RemoteAddr()))
	require.True(t, ok, "ss -M lists the kernel's MPTCP socket %s <-> %s: %+v", kernel.LocalAddr(), kernel.RemoteAddr(), entries)
	require.Equal(t, 1, e.Subflows, "ss -M: subflows besides the initial one: %+v", e)
	t.Logf("second subflow up %v after the warm-up", time.Since(start).Round(time.Millisecond))
	st := ours.Stats()
	require.Len(t, st.Subflows, 2, "umptcp subflows\n%s", formatStats(st))
	require.False(t, st.Subflows[0].Join, "the first subflow is the initial one\n%s", formatStats(st))
	join := st.Subflows[1]
	require.True(t, join.Join, "the second subflow is an MP_JOIN one\n%s", formatStats(st))
	require.False(t, join.Backup, "the join is a regular subflow\n%s", formatStats(st))
	return join
}

// joinErrorCounters must not move when joins succeed, in either role.
var joinErrorCounters = []string{
	"MPTcpExtMPJoinNoTokenFound",
	"MPTcpExtMPJoinSynAckHMacFailure",
	"MPTcpExtMPJoinAckHMacFailure",
	"MPTcpExtMPJoinRejected",
	"MPTcpExtDSSNotMatching",
	"MPTcpExtMPRstTx",
	"MPTcpExtMPRstRx",
}

// dataErrorCounters must not move while data flows correctly. Linux
// counts NoDSSInWindow when it drops data beyond the right edge of the
// connection-level receive window it advertised (DATA_ACK plus window,
// shared by all subflows, RFC 8684 §3.3.4): a sender that fills each
// subflow's TCP window on its own overruns it once it has two subflows.
var dataErrorCounters = []string{
	"MPTcpExtDSSCorruptionFallback",
	"MPTcpExtDSSCorruptionReset",
	"MPTcpExtMPFailTx",
	"MPTcpExtInfiniteMapTx",
	"MPTcpExtNoDSSInWindow",
}

// TestUmptcpKernelJoinKernelServer: umptcp dials a kernel MPTCP server on
// path 0 and joins it from its path 1 address (MP_JOIN SYN to the
// kernel's path 0 address over path 1: Linux's weak host model accepts
// it). The kernel validates the join (MPJoinSynRx, MPJoinAckRx, no HMAC
// failure), both subflows carry data both ways, the data is intact, and
// the connection closes gracefully.
func TestUmptcpKernelJoinKernelServer(t *testing.T) {
	for _, fam := range multiFamilies {
		t.Run(fam.name, func(t *testing.T) {
			u := newMultiRig(t, fam, RigOptions{}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
			ours, kernel := u.connect(t, true)
			join := u.waitJoined(t, ours, kernel)
			require.Equal(t, fam.paths[1].stack.Addr(), join.Local.Addr(), "the join's local address is our path 1 address")
			require.Equal(t, addrPort(kernel.LocalAddr()), join.Remote, "the join goes to the kernel's address of the initial subflow")

			// The handshakes, as the kernel server counted them.
			diff := u.Nstat().Diff(u.before)
			RequireIncreased(t, diff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX",
				"MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinAckRx")
			require.EqualValues(t, 1, diff["MPTcpExtMPJoinAckRx"], "the kernel established exactly one join")
			RequireUnchanged(t, diff, "MPTcpExtMPJoinSynBackupRx", "MPTcpExtMPJoinSynTx")
			RequireUnchanged(t, diff, joinErrorCounters...)
			RequireUnchanged(t, diff, MPCapableErrorCounters...)

			testJoinedBulk(t, u, ours, kernel)
			testGracefulClose(t, u, ours, kernel)
		})
	}
}

// TestUmptcpKernelJoinKernelClient: a kernel MPTCP client connects to
// umptcp's listener on path 0, then joins from its path 1 address (a
// "subflow" endpoint, routed out through path 1) to our path 0 address:
// our stack must accept a join arriving on the other link (weak host
// model). The kernel validates our SYN-ACK's HMAC (MPJoinSynAckRx, no
// HMAC failure), both subflows carry data both ways, the data is intact,
// and the connection closes gracefully.
func TestUmptcpKernelJoinKernelClient(t *testing.T) {
	for _, fam := range multiFamilies {
		t.Run(fam.name, func(t *testing.T) {
			u := newMultiRig(t, fam, RigOptions{}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
			ours, kernel := u.connect(t, false)
			join := u.waitJoined(t, ours, kernel)
			require.Equal(t, netip.MustParseAddrPort(u.stackAddr()), join.Local, "the join's local address is our path 0 address (listener)")
			require.Equal(t, fam.paths[1].host.Addr(), join.Remote.Addr(), "the join comes from the kernel's path 1 address")

			// The handshakes, as the kernel client counted them.
			diff := u.Nstat().Diff(u.before)
			RequireIncreased(t, diff, "MPTcpExtMPCapableSYNTX", "MPTcpExtMPCapableSYNACKRX",
				"MPTcpExtMPJoinSynTx", "MPTcpExtMPJoinSynAckRx")
			require.EqualValues(t, 1, diff["MPTcpExtMPJoinSynAckRx"], "the kernel completed exactly one join")
			RequireUnchanged(t, diff, "MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinSynAckBackupRx",
				"MPTcpExtMPJoinSynTxCreatSkErr", "MPTcpExtMPJoinSynTxBindErr", "MPTcpExtMPJoinSynTxConnectErr")
			RequireUnchanged(t, diff, joinErrorCounters...)
			RequireUnchanged(t, diff, MPCapableErrorCounters...)

			testJoinedBulk(t, u, ours, kernel)
			testGracefulClose(t, u, ours, kernel)
		})
	}
}

// bulkTimeout bounds the exchange of testJoinedBulk: over one path it
// takes about a second.
const bulkTimeout = 120 * time.Second

// testJoinedBulk exchanges bulkSize bytes each way at once over a joined
// connection and checks that each subflow, and each path, carried more
// than 1 MiB in each direction.
func testJoinedBulk(t *testing.T, u *multiRig, ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	n := bulkSize()
	ctx, cancel := context.WithTimeout(u.Ctx, bulkTimeout)
	defer cancel()
	start := time.Now()
	err := Exchange(ctx, ours, kernel, ExchangeOptions{AtoB: n, BtoA: n})
	require.NoError(t, err, "exchange of %d MiB each way (%v after the start)\n%s",
		n>>20, time.Since(start).Round(time.Millisecond), u.report(ours))
	t.Logf("%d MiB each way in %v", n>>20, time.Since(start).Round(time.Millisecond))

	st := ours.Stats()
	t.Logf("after the exchange:\n%s", formatStats(st))
	require.True(t, ours.MultipathTCP(), "umptcp fell back: %s", ours.FallbackReason())
	mp, err := KernelMultipathTCP(kernel)
	require.NoError(t, err)
	require.True(t, mp, "the kernel fell back during the transfer")
	require.EqualValues(t, n+int64(len(warmUpMsg)), st.BytesSent, "Stats().BytesSent (warm-up included)")
	require.EqualValues(t, n+int64(len(warmUpMsg)), st.BytesReceived, "Stats().BytesReceived (warm-up included)")
	require.Len(t, st.Subflows, 2, "umptcp subflows")
	// Both subflows must carry data in both directions. How much each
	// carries is the schedulers' business: ours, like Linux's default,
	// fills the lowest-RTT subflow first and over two unshaped TUN paths
	// may give the other only a few hundred KiB of 8 MiB.
	const least = 64 << 10
	for _, s := range st.Subflows {
		// Both DATA_FINs are through: the subflows may be closing.
		require.NotEqual(t, "stale", s.State, "subflow %d after the exchange\n%s", s.ID, formatStats(st))
		require.Greater(t, s.BytesSent, uint64(least), "subflow %d (join=%v) sent more than 64 KiB\n%s", s.ID, s.Join, formatStats(st))
		require.Greater(t, s.BytesReceived, uint64(least), "subflow %d (join=%v) received more than 64 KiB\n%s", s.ID, s.Join, formatStats(st))
	}
	// Each subflow really used its own TUN device.
	for i, c := range u.counts {
		require.Greater(t, c.outBytes.Load(), int64(least), "path %d carried our data: %s", i, c)
		require.Greater(t, c.inBytes.Load(), int64(least), "path %d carried the kernel's data: %s", i, c)
	}
	diff := u.Nstat().Diff(u.before)
	RequireUnchanged(t, diff, joinErrorCounters...)
	RequireUnchanged(t, diff, MPCapableErrorCounters...)
	RequireUnchanged(t, diff, dataErrorCounters...)
	requireNothingRejected(t, u.stack)
}

// closeWait bounds a graceful close (umptcp lingers up to 15 s).
const closeWait = 60 * time.Second

// testGracefulClose closes both ends after a complete exchange and checks
// that every subflow ends without any reset.
func testGracefulClose(t *testing.T, u *multiRig, ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	start := time.Now()
	require.NoError(t, ours.Close())
	require.NoError(t, kernel.Close())
	ctx, cancel := context.WithTimeout(u.Ctx, closeWait)
	defer cancel()
	if err := waitDone(ctx, ours); err != nil {
		t.Fatalf("umptcp connection not done %v after Close: %v\n%s", closeWait, err, u.report(ours))
	}
	if err := WaitQuiet(ctx, u.NS); err != nil {
		t.Fatalf("kernel sockets did not close: %v\n%s", err, u.report(ours))
	}
	t.Logf("closed in %v", time.Since(start).Round(time.Millisecond))
	st := ours.Stats()
	for _, s := range st.Subflows {
		require.Equal(t, "closed", s.State, "subflow %d after Done\n%s", s.ID, formatStats(st))
	}
	diff := u.Nstat().Diff(u.before)
	RequireUnchanged(t, diff, ResetCounters...)
}

// cutDirections are the transfers of TestUmptcpKernelCutPath.
var cutDirections = []struct {
	name               string
	toKernel, toUmptcp bool
}{
	{"UmptcpSends", true, false},
	{"KernelSends", false, true},
	{"BothSend", true, true},
}

// cutTimeout bounds the transfer of TestUmptcpKernelCutPath, cut included.
const cutTimeout = 120 * time.Second

// TestUmptcpKernelCutPath: with two subflows up (in both roles), a bulk
// transfer (umptcp to kernel, kernel to umptcp, both at once) loses one
// path for good once a third of the data has arrived: path 1 (the join's)
// or path 0 (the initial subflow's). Every byte must still arrive intact
// over the other subflow within cutTimeout (reinjection of what the dead
// subflow held, RFC 8684 §3.3.6), our side must mark the dead subflow
// stale (or closed) when it was sending on it, and the connection must
// still close within a bounded time with every subflow closed.
func TestUmptcpKernelCutPath(t *testing.T) {
	for _, fam := range multiFamilies {
		for _, kernelServer := range []bool{true, false} {
			for _, cut := range []int{1, 0} {
				for _, dir := range cutDirections {
					if fam.name == "IPv6" && dir.name != "BothSend" {
						continue // IPv6 differs only in addresses: one case per role and path
					}
					name := fmt.Sprintf("%s/%s/CutPath%d/%s", fam.name,
						map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer], cut, dir.name)
					t.Run(name, func(t *testing.T) {
						testCutPath(t, fam, kernelServer, cut, dir.toKernel, dir.toUmptcp)
					})
				}
			}
		}
	}
}

// testCutPath is one case of TestUmptcpKernelCutPath.
func testCutPath(t *testing.T, fam multiFamily, kernelServer bool, cut int, toKernel, toUmptcp bool) {
	var imps [2]*tun.Impaired
	var wraps [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint
	for i := range wraps {
		wraps[i] = func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
			imps[i] = tun.Impair(ep, 0, 0, uint64(i+1))
			return imps[i]
		}
	}
	u := newMultiRig(t, fam, RigOptions{}, stack.Config{}, wraps)
	ours, kernel := u.connect(t, kernelServer)
	u.waitJoined(t, ours, kernel)

	n := bulkSize()
	var aToB, bToA int64
	if toKernel {
		aToB = n
	}
	if toUmptcp {
		bToA = n
	}
	ctx, cancel := context.WithTimeout(u.Ctx, cutTimeout)
	defer cancel()
	start := time.Now()
	var cutAt time.Time
	res, err := transferCut(ctx, ours, kernel, aToB, bToA, func() {
		cutAt = time.Now()
		imps[cut].SetBlackhole(true)
	})
	require.NoError(t, err, "transfer with path %d cut (%v after the start)\n%s", cut, time.Since(start).Round(time.Millisecond), u.report(ours))
	require.False(t, cutAt.IsZero(), "the path was never cut")
	t.Logf("cut path %d at %v (received %d to kernel, %d to umptcp, of %d); transfer done %v after the cut",
		cut, cutAt.Sub(start).Round(time.Millisecond), res.cutAtAtoB, res.cutAtBtoA, n, time.Since(cutAt).Round(time.Millisecond))
	// The cut came while most of the data was still to come, in each
	// direction that carries data.
	if toKernel {
		require.Less(t, res.cutAtAtoB, n*2/3, "the kernel had received most of the data before the cut\n%s", u.report(ours))
	}
	if toUmptcp {
		require.Less(t, res.cutAtBtoA, n*2/3, "umptcp had received most of the data before the cut\n%s", u.report(ours))
	}
	out, in := imps[cut].Dropped()
	require.Positive(t, out+in, "the blackhole dropped packets")
	require.True(t, ours.MultipathTCP(), "umptcp fell back: %s", ours.FallbackReason())
	mp, err := KernelMultipathTCP(kernel)
	require.NoError(t, err)
	require.True(t, mp, "the kernel fell back")

	st := ours.Stats()
	t.Logf("after the transfer:\n%s", formatStats(st))
	require.Len(t, st.Subflows, 2, "umptcp subflows")
	cutSf, other := st.Subflows[cut], st.Subflows[1-cut]
	require.Equal(t, cut == 1, cutSf.Join, "path %d's subflow\n%s", cut, formatStats(st))
	// Both DATA_FINs are through: the working subflow may be closing, but
	// it must not have been taken for a dead one.
	require.NotEqual(t, "stale", other.State, "the subflow of the working path\n%s", formatStats(st))
	if toKernel {
		// We had data in flight on the dead subflow: repeated RTOs
		// without progress must have taken it out of use.
		if !poll(ctx, 10*time.Second, func() bool {
			s := ours.Stats().Subflows[cut].State
			return s == "stale" || s == "closed"
		}) {
			t.Fatalf("the subflow of the cut path %d is not stale or closed after the transfer\n%s", cut, u.report(ours))
		}
	}

	// Close: the cut subflow cannot finish its FIN exchange, but the
	// connection must still end within a bounded time.
	closeStart := time.Now()
	require.NoError(t, ours.Close())
	require.NoError(t, kernel.Close())
	cctx, ccancel := context.WithTimeout(u.Ctx, closeWait)
	defer ccancel()
	if err := waitDone(cctx, ours); err != nil {
		t.Fatalf("umptcp connection not done %v after Close: %v\n%s", closeWait, err, u.report(ours))
	}
	t.Logf("closed in %v", time.Since(closeStart).Round(time.Millisecond))
	st = ours.Stats()
	for _, s := range st.Subflows {
		require.Equal(t, "closed", s.State, "subflow %d after Done\n%s", s.ID, formatStats(st))
	}

	diff := u.Nstat().Diff(u.before)
	t.Logf("kernel counters changed: %v", NonZero(diff))
	RequireUnchanged(t, diff, "MPTcpExtMPJoinNoTokenFound", "MPTcpExtMPJoinSynAckHMacFailure",
		"MPTcpExtMPJoinAckHMacFailure", "MPTcpExtMPJoinRejected")
	RequireUnchanged(t, diff, MPCapableErrorCounters...)
	RequireUnchanged(t, diff, dataErrorCounters...)
}

// cutResult is what transferCut saw when it cut the path: how much each
// receiver had got.
type cutResult struct {
	cutAtAtoB, cutAtBtoA int64
}

// transferCut is Exchange (a sends aToB bytes, b sends bToA, each then
// half-closes; each reads to EOF; SHA-256 compared) that calls cut once
// a direction carrying data has delivered a third of it.
func transferCut(ctx context.Context, a, b net.Conn, aToB, bToA int64, cut func()) (cutResult, error) {
	defer abortOnDone(ctx, a, b)()
	var gotA, gotB atomic.Int64 // bytes received by a and by b
	var wg sync.WaitGroup
	var sentAB, sentBA, recvAB, recvBA Result
	var errs [4]error
	send := func(c net.Conn, seed uint64, n int64, res *Result, err *error) {
		defer wg.Done()
		hc, e := asHalfCloser(c)
		if e != nil {
			*err = e
			return
		}
		if *res, *err = Send(hc, seed, n); *err == nil {
			*err = hc.CloseWrite()
		}
	}
	recv := func(c net.Conn, cnt *atomic.Int64, res *Result, err *error) {
		defer wg.Done()
		*res, *err = Receive(&countingReader{r: c, n: cnt})
	}
	wg.Add(4)
	go send(a, 21, aToB, &sentAB, &errs[0])
	go send(b, 22, bToA, &sentBA, &errs[1])
	go recv(b, &gotB, &recvAB, &errs[2])
	go recv(a, &gotA, &recvBA, &errs[3])
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var res cutResult
	cutDone := false
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cutDone {
		select {
		case <-done:
			cutDone = true // finished before the cut: res says so
			continue
		case <-tick.C:
		}
		// The first direction to deliver a third triggers the cut (the
		// other one, if any, is then still under way too, unless it is
		// much slower or faster: the caller checks).
		ab, ba := gotB.Load(), gotA.Load()
		if aToB > 0 && ab >= aToB/3 || bToA > 0 && ba >= bToA/3 {
			res.cutAtAtoB, res.cutAtBtoA = ab, ba
			cut()
			cutDone = true
		}
	}
	<-done

	if err := errors.Join(ctx.Err(), errors.Join(errs[:]...)); err != nil {
		return res, fmt.Errorf("conformance: transfer: %w (a->b sent %d got %d, b->a sent %d got %d)",
			err, sentAB.N, recvAB.N, sentBA.N, recvBA.N)
	}
	return res, errors.Join(compare("a->b", sentAB, recvAB, aToB), compare("b->a", sentBA, recvBA, bToA))
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
