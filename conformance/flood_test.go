package conformance

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/internal/hostile"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// floodSource is the spoofed source of the flood: an address on path 0's
// subnet that nobody has, so our SYN-ACKs to it go nowhere (the kernel
// does not forward) and nothing answers them, as in a real SYN flood.
var floodSource = netip.MustParseAddr("10.77.0.99")

// synPacket builds an IPv4 SYN from src to dst carrying the TCP options
// opts (MSS first), with valid checksums.
func synPacket(src, dst netip.AddrPort, iss uint32, opts []byte) []byte {
	var mss [header.TCPOptionMSSLength]byte
	header.EncodeMSSOption(1400, mss[:])
	opts = append(mss[:], opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, header.IPv4MinimumSize+tcpLen)
	s, d := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d})
	ip.SetChecksum(^ip.CalculateChecksum())
	th := header.TCP(b[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: iss,
		DataOffset: uint8(tcpLen), Flags: header.TCPFlagSyn, WindowSize: 65535})
	copy(th[header.TCPMinimumSize:], opts)
	th.SetChecksum(^checksum.Checksum(th, header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, uint16(tcpLen))))
	return b
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestUmptcpKernelSynFlood floods our server, while it accepts, with SYNs
// that never complete: MP_CAPABLE SYNs from thousands of ports, then
// MP_JOIN SYNs carrying the real token of a live connection with a Linux
// kernel client (the token is on the wire). Meanwhile the kernel's
// connection must go on intact, the kernel's join of it (an endpoint added
// during the flood) must become a subflow, and a new kernel connection must
// connect and carry data (as plain TCP while our handshake table is full),
// and a kernel connection made once the flood has stopped must be MPTCP.
// The state the flood leaves is bounded: the Go heap's growth is logged
// and must stay under floodHeapBound.
func TestUmptcpKernelSynFlood(t *testing.T) {
	RequireRoot(t)
	var tap *hostile.Tap
	wrap := func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint { tap = hostile.NewTap(ep); return tap }
	u := newMultiRig(t, multiFamilies[0], RigOptions{}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{wrap, nil})

	ln, err := u.stack.Listen("tcp", u.stackAddr())
	require.NoError(t, err)
	Track(t, ln)
	accepted := make(chan *stack.Conn, 4)
	go func() {
		for i := 0; i < cap(accepted); i++ {
			c, err := ln.AcceptConn()
			if err != nil {
				return
			}
			accepted <- Track(t, c)
		}
	}()
	accept := func() *stack.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no connection accepted within 10 s")
		}
		return nil
	}

	// The live connection: MPTCP, one subflow so far.
	kernel, err := DialMPTCP(u.Ctx, u.NS, "tcp", u.stackAddr())
	require.NoError(t, err, "kernel dial")
	Track(t, kernel)
	ours := accept()
	require.True(t, ours.MultipathTCP(), ours.FallbackReason())
	// Linux opens subflows for a new endpoint only on connections fully
	// established (it has seen our DSS): some data both ways first.
	u.warmUp(t, ours, kernel)
	var token uint32
	require.Eventually(t, func() bool {
		for _, f := range tap.Flows() {
			if s := f.Side[hostile.FromStack]; s.HasKey && f.Peer == netip.MustParseAddrPort(kernel.LocalAddr().String()) {
				token = option.Token(s.Key)
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "our key on the wire")
	listenAP := netip.MustParseAddrPort(u.stackAddr())
	mib := func(c subflow.Counter) uint64 { return u.stack.MIB()[c.Name()] }

	heapBefore := heapInUse()
	const synFlood, joinFlood = 5000, 5000
	start := time.Now()
	syn := option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, Form: option.MPCSyn}
	for i := 0; i < synFlood; i++ {
		src := netip.AddrPortFrom(floodSource, uint16(10000+i))
		require.NoError(t, tap.ToStack(synPacket(src, listenAP, uint32(i)*7919, syn.Append(nil))))
	}
	for i := 0; i < joinFlood; i++ {
		src := netip.AddrPortFrom(floodSource, uint16(20000+i))
		j := option.MPJoin{Form: option.JoinSyn, AddrID: 9, Token: token, Nonce: uint32(i)}
		require.NoError(t, tap.ToStack(synPacket(src, listenAP, uint32(i)*104729, j.Append(nil))))
	}
	floodTime := time.Since(start)
	heapAfter := heapInUse()
	grew := int64(heapAfter) - int64(heapBefore)
	t.Logf("%d MP_CAPABLE and %d MP_JOIN SYNs in %v: heap %d -> %d KiB (%+d KiB); SynFloodFallback %d, JoinHalfOpenEvicted %d",
		synFlood, joinFlood, floodTime.Round(time.Millisecond), heapBefore>>10, heapAfter>>10, grew>>10,
		mib(subflow.SynFloodFallback), mib(subflow.JoinHalfOpenEvicted))
	require.EqualValues(t, synFlood-subflow.MaxPendingHandshakes, mib(subflow.SynFloodFallback))
	require.EqualValues(t, joinFlood-subflow.MaxHalfOpenJoins, mib(subflow.JoinHalfOpenEvicted))
	require.Less(t, grew, int64(floodHeapBound), "heap growth under the flood")

	// The kernel joins the flooded connection: an endpoint added now.
	u.kernelClientPaths(t)
	require.Eventually(t, func() bool { return activeSubflows(ours.Stats()) == 2 }, 10*time.Second, 20*time.Millisecond,
		"the kernel's join during the flood: %s", formatStats(ours.Stats()))

	// A new kernel connection while our handshake table is full.
	kernel2, err := DialMPTCP(u.Ctx, u.NS, "tcp", u.stackAddr())
	require.NoError(t, err, "kernel dial during the flood")
	Track(t, kernel2)
	ours2 := accept()
	require.False(t, ours2.MultipathTCP(), "a connection made while the handshake table is full goes without MPTCP")

	ctx, cancel := context.WithTimeout(u.Ctx, 60*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for _, pair := range [][2]net.Conn{{ours, kernel}, {ours2, kernel2}} {
		go func() { errs <- Exchange(ctx, pair[0], pair[1], ExchangeOptions{AtoB: 4 << 20, BtoA: 4 << 20}) }()
	}
	for range 2 {
		require.NoError(t, <-errs)
	}
	require.True(t, ours.MultipathTCP(), "the flooded connection fell back: %s", ours.FallbackReason())

	// Once the flood has stopped for StaleHandshake, a new kernel
	// connection gets MPTCP again.
	time.Sleep(subflow.StaleHandshake + 200*time.Millisecond)
	kernel3, err := DialMPTCP(u.Ctx, u.NS, "tcp", u.stackAddr())
	require.NoError(t, err, "kernel dial after the flood")
	Track(t, kernel3)
	ours3 := accept()
	require.True(t, ours3.MultipathTCP(), "a connection after the flood: %s", ours3.FallbackReason())
	mp, err := KernelMultipathTCP(kernel3)
	require.NoError(t, err)
	require.True(t, mp, "the kernel's view of the connection after the flood")
	require.NoError(t, Exchange(ctx, ours3, kernel3, ExchangeOptions{AtoB: 1 << 20, BtoA: 1 << 20}))
	requireNothingRejected(t, u.stack)
}

// floodHeapBound bounds the heap our stack may grow by under the flood: the
// bounded handshake state (1 024 connections' and 64 joins' contexts) plus
// gVisor's own, which turns to SYN cookies past its threshold.
const floodHeapBound = 64 << 20
