package conformance

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestUmptcpKernelLossy runs the bulk exchange against the kernel with 1 %
// of the packets lost in each direction on our side of the TUN: subflow
// retransmissions (gVisor's and the kernel's, segmented differently from
// the originals) must keep valid mappings, SACK blocks must be trimmed to
// fit beside the DSS, and checksums must hold across retransmissions.
func TestUmptcpKernelLossy(t *testing.T) {
	const size = 16 << 20
	for _, fam := range tunFamilies {
		for _, kernelServer := range []bool{true, false} {
			for _, csum := range []bool{false, true} {
				name := fam.name + "/" + map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer] + map[bool]string{true: "/Checksum", false: "/NoChecksum"}[csum]
				t.Run(name, func(t *testing.T) {
					var imp *tun.Impaired
					sizes := &sizeWatch{}
					u := newUmptcpRigWrapped(t, fam, RigOptions{Checksum: csum}, stack.Config{}, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
						sizes.Endpoint.Init(ep, sizes)
						imp = tun.Impair(sizes, 0.01, 0.01, 7)
						return imp
					})
					before := u.Nstat()
					ours, kernel := u.connect(t, kernelServer)
					requireOursMPTCP(t, ours, kernel, csum)
					require.NoError(t, Exchange(u.Ctx, ours, kernel, ExchangeOptions{AtoB: size, BtoA: size}))
					out, in := imp.Dropped()
					require.Positive(t, out, "packets were lost going out")
					require.Positive(t, in, "packets were lost coming in")
					require.True(t, ours.MultipathTCP())
					diff := u.Nstat().Diff(before)
					RequireUnchanged(t, diff, MPCapableErrorCounters...)
					RequireUnchanged(t, diff, "MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset", "MPTcpExtMPFailTx", "MPTcpExtInfiniteMapTx")
					for _, k := range ours.SubflowCounters() {
						require.Zero(t, k.UnmappedSegments)
						require.Zero(t, k.ChecksumFailures)
						require.Zero(t, k.ImplausibleDSS)
					}
					require.LessOrEqual(t, sizes.max.Load(), int64(tun.DefaultMTU), "every packet fits the MTU")
				})
			}
		}
	}
}

// dropFirstPureACK loses the first pure ACK our stack sends: as client,
// that is the third ACK of the handshake, the one carrying both keys.
type dropFirstPureACK struct {
	nested.Endpoint
	dropped atomic.Bool
}

func (d *dropFirstPureACK) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	var keep gvstack.PacketBufferList
	all := pkts.AsSlice()
	for _, pkt := range all {
		tcp := header.TCP(pkt.TransportHeader().Slice())
		if len(tcp) >= header.TCPMinimumSize && tcp.Flags() == header.TCPFlagAck && pkt.Data().Size() == 0 && d.dropped.CompareAndSwap(false, true) {
			continue
		}
		keep.PushBack(pkt)
	}
	n, err := d.Endpoint.WritePackets(keep)
	return n + len(all) - keep.Len(), err
}

// TestUmptcpKernelThirdACKLost: RFC 8684 §3.1 (v1) — when the third ACK
// with both keys is lost, the client's first data segment carries
// MP_CAPABLE with the keys and the data-level length, and the kernel server
// still becomes a full MPTCP peer, with no fallback.
func TestUmptcpKernelThirdACKLost(t *testing.T) {
	for _, fam := range tunFamilies {
		t.Run(fam.name, func(t *testing.T) {
			var d *dropFirstPureACK
			u := newUmptcpRigWrapped(t, fam, RigOptions{}, stack.Config{}, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
				d = &dropFirstPureACK{}
				d.Endpoint.Init(ep, d)
				return d
			})
			before := u.Nstat()
			ours, kernel := u.connect(t, true)
			require.True(t, d.dropped.Load(), "the third ACK was dropped")
			require.NoError(t, Exchange(u.Ctx, ours, kernel, ExchangeOptions{AtoB: 4 << 20, BtoA: 4 << 20}))
			requireKernelMPTCP(t, kernel, false)
			requireOursMPTCP(t, ours, kernel, false)
			diff := u.Nstat().Diff(before)
			RequireIncreased(t, diff, "MPTcpExtMPCapableSYNRX")
			RequireUnchanged(t, diff, MPCapableErrorCounters...)
		})
	}
}

// TestUmptcpKernelTCPOptionVariants: a kernel peer without SACK (our MSS
// clamp keeps DSS-carrying segments within the MTU), without timestamps
// (the DSS shares the option space with SACK blocks instead), and without
// either, over a lossy path, in both roles.
func TestUmptcpKernelTCPOptionVariants(t *testing.T) {
	const size = 8 << 20
	for _, v := range []struct {
		name    string
		sysctls map[string]string
	}{
		{"NoSACK", map[string]string{"net.ipv4.tcp_sack": "0"}},
		{"NoTimestamps", map[string]string{"net.ipv4.tcp_timestamps": "0"}},
		{"NoSACKNoTimestamps", map[string]string{"net.ipv4.tcp_sack": "0", "net.ipv4.tcp_timestamps": "0"}},
	} {
		for _, kernelServer := range []bool{true, false} {
			t.Run(v.name+map[bool]string{true: "/UmptcpClient", false: "/UmptcpServer"}[kernelServer], func(t *testing.T) {
				var sizes *sizeWatch
				u := newUmptcpRigWrapped(t, tunFamilies[0], RigOptions{Sysctls: v.sysctls, Checksum: true}, stack.Config{}, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
					sizes = &sizeWatch{}
					sizes.Endpoint.Init(ep, sizes)
					return tun.Impair(sizes, 0.005, 0.005, 11)
				})
				before := u.Nstat()
				ours, kernel := u.connect(t, kernelServer)
				requireOursMPTCP(t, ours, kernel, true)
				require.NoError(t, Exchange(u.Ctx, ours, kernel, ExchangeOptions{AtoB: size, BtoA: size}))
				diff := u.Nstat().Diff(before)
				RequireUnchanged(t, diff, MPCapableErrorCounters...)
				for _, k := range ours.SubflowCounters() {
					require.Zero(t, k.UnmappedSegments)
					require.Zero(t, k.ChecksumFailures)
				}
				require.LessOrEqual(t, sizes.max.Load(), int64(tun.DefaultMTU), "every packet fits the MTU")
				require.Greater(t, sizes.max.Load(), int64(tun.DefaultMTU-100), "full-sized segments were sent")
			})
		}
	}
}

// sizeWatch records the largest packet our stack writes.
type sizeWatch struct {
	nested.Endpoint
	max atomic.Int64
}

func (w *sizeWatch) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		for n := int64(pkt.Size()); ; {
			cur := w.max.Load()
			if n <= cur || w.max.CompareAndSwap(cur, n) {
				break
			}
		}
	}
	return w.Endpoint.WritePackets(pkts)
}
