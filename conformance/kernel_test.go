package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The umptcp-vs-kernel tests: umptcp's stack on one side of a TUN device
// whose kernel side lives in a fresh namespace, Linux MPTCP on the other.

// Ports of the umptcp tests: the kernel listens on kernelPort, umptcp on
// stackPort.
const (
	kernelPort = 5001
	stackPort  = 5002
)

// tunFamily is one address family over the TUN: umptcp's address and the
// kernel's.
type tunFamily struct {
	name        string
	stack, host netip.Prefix
}

// tunFamilies are the families the umptcp tests run over.
var tunFamilies = []tunFamily{
	{"IPv4", netip.MustParsePrefix("10.77.0.2/24"), netip.MustParsePrefix("10.77.0.1/24")},
	{"IPv6", netip.MustParsePrefix("fd77::2/64"), netip.MustParsePrefix("fd77::1/64")},
}

// bulkSize is what each direction carries in the bulk tests (8 MiB with
// -short); fallbackSize is the same for the fallback tests.
func bulkSize() int64 {
	if testing.Short() {
		return 8 << 20
	}
	return 64 << 20
}

const fallbackSize = 8 << 20

// umptcpRig is a Rig whose namespace holds the kernel end of a TUN device
// and an umptcp stack on the other end.
type umptcpRig struct {
	*Rig
	fam   tunFamily
	stack *stack.Stack
}

// newUmptcpRig creates the namespace (kernel options), the TUN device in it
// and an umptcp stack over it (ours; its Links are filled in). Everything
// is closed when the test ends, the stack first.
func newUmptcpRig(t *testing.T, fam tunFamily, kernel RigOptions, ours stack.Config) *umptcpRig {
	t.Helper()
	return newUmptcpRigWrapped(t, fam, kernel, ours, nil)
}

// newUmptcpRigWrapped is newUmptcpRig with wrap (if not nil) put between
// the TUN device and our stack, e.g. to drop packets.
func newUmptcpRigWrapped(t *testing.T, fam tunFamily, kernel RigOptions, ours stack.Config, wrap func(gvstack.LinkEndpoint) gvstack.LinkEndpoint) *umptcpRig {
	t.Helper()
	if kernel.Name == "" {
		kernel.Name = "kern"
	}
	r := NewRig(t, kernel)
	dev, err := tun.OpenIn(r.NS.Name(), tun.Config{Name: tunName(t), StackAddr: fam.stack, HostAddr: fam.host})
	require.NoError(t, err, "tun.OpenIn")
	stackClosed := true // false once stack.Close hung: dev.Close would hang too
	t.Cleanup(func() {
		if stackClosed {
			closeWithin(t, "tun.Device.Close", dev.Close)
		}
	})
	ep := dev.LinkEndpoint()
	if wrap != nil {
		ep = wrap(ep)
	}
	ours.Links = []stack.Link{{Endpoint: ep, Addrs: []netip.Prefix{fam.stack}}}
	s, err := stack.New(ours)
	require.NoError(t, err, "stack.New")
	t.Cleanup(func() { stackClosed = closeWithin(t, "stack.Close", s.Close) })
	return &umptcpRig{Rig: r, fam: fam, stack: s}
}

// closeTimeout bounds each Close of the test's cleanup.
const closeTimeout = 20 * time.Second

// closeWithin runs closeFn, failing the test if it errs or takes longer
// than closeTimeout (then leaving it running, leaked, so that the other
// tests still run). It reports whether closeFn returned in time.
func closeWithin(t *testing.T, what string, closeFn func() error) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- closeFn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		return true
	case <-time.After(closeTimeout):
		t.Errorf("%s did not return within %v (deadlock?); leaking it; goroutines involved:\n%s",
			what, closeTimeout, goroutinesMatching("tcpip/link/fdbased", "umptcp/stack.(*Stack).Close"))
		return false
	}
}

// tunName returns a random TUN name "umt" + 8 hex digits (11 bytes).
func tunName(t *testing.T) string {
	var b [4]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "umt" + hex.EncodeToString(b[:])
}

// kernelAddr and stackAddr are the listening addresses of each side.
func (u *umptcpRig) kernelAddr() string {
	return netip.AddrPortFrom(u.fam.host.Addr(), kernelPort).String()
}

func (u *umptcpRig) stackAddr() string {
	return netip.AddrPortFrom(u.fam.stack.Addr(), stackPort).String()
}

// dialKernel connects umptcp to a kernel listener (MPTCP or not) on the
// kernel's address; it returns umptcp's end and the kernel's.
func (u *umptcpRig) dialKernel(t *testing.T, kernelMPTCP bool) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	listen := ListenTCP
	if kernelMPTCP {
		listen = ListenMPTCP
	}
	ln, err := listen(u.NS, "tcp", u.kernelAddr())
	require.NoError(t, err, "kernel listen")
	defer ln.Close()
	accepted := acceptAsync(ln)
	ours, err = u.stack.DialContext(u.Ctx, "tcp", u.kernelAddr())
	require.NoError(t, err, "umptcp dial")
	Track(t, ours)
	kernel, err = awaitAccept(u.Ctx, accepted)
	require.NoError(t, err, "kernel accept")
	return ours, Track(t, kernel)
}

// acceptKernel connects a kernel client (MPTCP or not) to an umptcp
// listener; it returns umptcp's end and the kernel's.
func (u *umptcpRig) acceptKernel(t *testing.T, kernelMPTCP bool) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	ln, err := u.stack.Listen("tcp", u.stackAddr())
	require.NoError(t, err, "umptcp listen")
	defer ln.Close()
	type result struct {
		c   *stack.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.AcceptConn()
		accepted <- result{c, err}
	}()
	dial := DialTCP
	if kernelMPTCP {
		dial = DialMPTCP
	}
	kernel, err = dial(u.Ctx, u.NS, "tcp", u.stackAddr())
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

// connect makes a connection in the given direction, both ends offering
// MPTCP.
func (u *umptcpRig) connect(t *testing.T, kernelServer bool) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	if kernelServer {
		return u.dialKernel(t, true)
	}
	return u.acceptKernel(t, true)
}

// requireOursMPTCP checks umptcp's end: MPTCP with the given checksum
// setting and one subflow between the expected addresses.
func requireOursMPTCP(t *testing.T, c *stack.Conn, kernel net.Conn, csum bool) {
	t.Helper()
	require.True(t, c.MultipathTCP(), "umptcp fell back: %s", c.FallbackReason())
	st := c.Stats()
	require.True(t, st.MPTCP, "Stats().MPTCP")
	require.Equal(t, csum, st.Checksum, "Stats().Checksum")
	require.NotEmpty(t, st.Subflows, "Stats().Subflows")
	require.Equal(t, addrPort(kernel.RemoteAddr()), st.Subflows[0].Local, "first subflow's local address")
	require.Equal(t, addrPort(kernel.LocalAddr()), st.Subflows[0].Remote, "first subflow's remote address")
}

// checksumCases are the DSS checksum settings the bulk tests run with:
// off, asked for by the kernel (sysctl), asked for by umptcp. Either side
// asking is enough (RFC 8684 section 3.3.1).
var checksumCases = []struct {
	name         string
	kernel, ours bool
	want         bool
}{
	{"NoChecksum", false, false, false},
	{"KernelChecksum", true, false, true},
	{"UmptcpChecksum", false, true, true},
}

// TestUmptcpKernelBulk covers a), b) and c): umptcp as client of a kernel
// MPTCP server and as server of a kernel MPTCP client, bulkSize bytes each
// way at once, with and without DSS checksums, checking the data (SHA-256),
// both ends' view of MPTCP, ss during the transfer and the kernel's
// counters.
func TestUmptcpKernelBulk(t *testing.T) {
	for _, fam := range tunFamilies {
		for _, kernelServer := range []bool{true, false} {
			for _, cs := range checksumCases {
				name := fam.name + "/" + map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer] + "/" + cs.name
				t.Run(name, func(t *testing.T) {
					testBulk(t, fam, kernelServer, cs.kernel, cs.ours, cs.want)
				})
			}
		}
	}
}

// testBulk is one case of TestUmptcpKernelBulk.
func testBulk(t *testing.T, fam tunFamily, kernelServer, kernelCsum, oursCsum, wantCsum bool) {
	u := newUmptcpRig(t, fam, RigOptions{Checksum: kernelCsum}, stack.Config{Checksum: oursCsum})
	before := u.Nstat()

	ours, kernel := u.connect(t, kernelServer)
	requireKernelMPTCP(t, kernel, wantCsum)
	requireOursMPTCP(t, ours, kernel, wantCsum)

	n := bulkSize()
	err := Exchange(u.Ctx, ours, kernel, ExchangeOptions{
		AtoB: n, BtoA: n,
		Midway: ssShows(t, u.NS, kernel.LocalAddr(), kernel.RemoteAddr()),
	})
	require.NoError(t, err)

	st := ours.Stats()
	require.EqualValues(t, n, st.BytesSent, "Stats().BytesSent")
	require.EqualValues(t, n, st.BytesReceived, "Stats().BytesReceived")
	require.True(t, ours.MultipathTCP(), "umptcp fell back during the transfer: %s", ours.FallbackReason())
	mp, err := KernelMultipathTCP(kernel)
	require.NoError(t, err)
	require.True(t, mp, "the kernel fell back during the transfer")

	diff := u.Nstat().Diff(before)
	if kernelServer {
		RequireIncreased(t, diff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX")
	} else {
		RequireIncreased(t, diff, "MPTcpExtMPCapableSYNTX", "MPTcpExtMPCapableSYNACKRX")
	}
	RequireUnchanged(t, diff, MPCapableErrorCounters...)
	RequireUnchanged(t, diff, "MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset",
		"MPTcpExtMPFailTx", "MPTcpExtInfiniteMapTx", "MPTcpExtMPRstTx", "MPTcpExtMPRstRx")
	requireNothingRejected(t, u.stack)
}

// requireNothingRejected checks that our option layer found every segment
// of an honest kernel peer acceptable to TCP: a false rejection would
// silently ignore a DATA_ACK or a mapping. Old duplicates (a retransmission
// racing our ACK) are legitimately out of window, so that count is logged.
func requireNothingRejected(t *testing.T, s *stack.Stack) {
	t.Helper()
	mib := s.MIB()
	for _, name := range []string{"TcpInCsumErrors", "TcpExtTCPInvalidAckSequence",
		"TcpExtTCPAckUnsentData", "TcpExtTCPTooOldAck"} {
		require.Zero(t, mib[name], "%s: the option layer rejected an honest segment", name)
	}
	t.Logf("segments out of window (old duplicates): %d, RSTs not at RCV.NXT: %d",
		mib["TcpExtTCPInvalidSequence"], mib["TcpExtTCPInvalidRst"])
}

// TestUmptcpKernelFallback covers d): umptcp against kernel plain TCP, as
// client and as server, and against a kernel MPTCP listener in a namespace
// with MPTCP disabled; data intact and both ends plain TCP.
func TestUmptcpKernelFallback(t *testing.T) {
	for _, fam := range tunFamilies {
		for _, tc := range []struct {
			name         string
			kernel       RigOptions
			kernelServer bool // umptcp dials the kernel (else the reverse)
			kernelMPTCP  bool // the kernel socket asks for MPTCP
		}{
			{"PlainTCPServer", RigOptions{}, true, false},
			{"PlainTCPClient", RigOptions{}, false, false},
			{"MPTCPDisabledServer", RigOptions{DisableMPTCP: true}, true, true},
			{"MPTCPDisabledClient", RigOptions{DisableMPTCP: true}, false, true},
		} {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				u := newUmptcpRig(t, fam, tc.kernel, stack.Config{})
				before := u.Nstat()
				var ours *stack.Conn
				var kernel net.Conn
				if tc.kernelServer {
					ours, kernel = u.dialKernel(t, tc.kernelMPTCP)
				} else {
					ours, kernel = u.acceptKernel(t, tc.kernelMPTCP)
				}
				require.False(t, ours.MultipathTCP(), "umptcp should have fallen back to TCP")
				require.False(t, ours.Stats().MPTCP, "Stats().MPTCP")
				mp, err := KernelMultipathTCP(kernel)
				require.NoError(t, err)
				require.False(t, mp, "the kernel end should be plain TCP")

				require.NoError(t, Exchange(u.Ctx, ours, kernel,
					ExchangeOptions{AtoB: fallbackSize, BtoA: fallbackSize}))
				require.False(t, ours.MultipathTCP())

				diff := u.Nstat().Diff(before)
				RequireUnchanged(t, diff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX",
					"MPTcpExtMPCapableSYNACKRX", "MPTcpExtMPCapableSYNTX")
			})
		}
	}
}

// TestUmptcpKernelHalfClose covers e): whoever half-closes first (umptcp
// or the kernel), the other end reads EOF after every byte, can still send
// and is read to EOF in turn; both close; the kernel then counts no RST,
// MP_RST or MP_FASTCLOSE (Linux counts no DATA_FIN, so nothing to check
// there). Runs with umptcp as client and as server.
func TestUmptcpKernelHalfClose(t *testing.T) {
	for _, fam := range tunFamilies {
		for _, kernelServer := range []bool{true, false} {
			for _, oursFirst := range []bool{true, false} {
				name := fam.name + "/" + map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer] +
					"/umptcpClosesFirst=" + strconv.FormatBool(oursFirst)
				t.Run(name, func(t *testing.T) {
					u := newUmptcpRig(t, fam, RigOptions{}, stack.Config{})
					before := u.Nstat()
					ours, kernel := u.connect(t, kernelServer)
					requireOursMPTCP(t, ours, kernel, false)

					var first, second net.Conn = ours, kernel
					if !oursFirst {
						first, second = kernel, ours
					}
					require.NoError(t, HalfClose(u.Ctx, first, second, 1<<20, 3<<20))
					require.NoError(t, waitDone(u.Ctx, ours), "umptcp connection did not finish closing")
					require.NoError(t, WaitQuiet(u.Ctx, u.NS))

					diff := u.Nstat().Diff(before)
					RequireUnchanged(t, diff, ResetCounters...)
					RequireUnchanged(t, diff, MPCapableErrorCounters...)
				})
			}
		}
	}
}

// waitDone waits until c has ended completely (both DATA_FIN and FIN
// exchanges) or ctx ends.
func waitDone(ctx context.Context, c *stack.Conn) error {
	select {
	case <-c.Done():
		return nil
	case <-ctx.Done():
		return errors.Join(errors.New("conformance: connection not done"), ctx.Err())
	}
}

// goroutinesMatching returns the stacks of the goroutines whose trace
// contains one of subs, for diagnosing a hang.
func goroutinesMatching(subs ...string) string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, sub := range subs {
			if strings.Contains(g, sub) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}
