package conformance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

// Path management against the Linux kernel: ADD_ADDR (HMAC, echo, ports,
// retransmission), joins to announced addresses, REMOVE_ADDR both ways,
// MP_PRIO from a changed endpoint, and re-creating a subflow whose path
// died. The kernel's in-kernel path manager is the peer; its counters and
// ours (Stack.MIB, the same names) must tell the same story.

// noEndpoints makes our stack open no subflow of its own: every join comes
// from an address the peer announced.
var noEndpoints = []pm.Endpoint{}

// changedMIB returns our counters that changed, for failure messages.
func changedMIB(s *stack.Stack) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range s.MIB() {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// waitActive waits until ours has n active subflows.
func (u *multiRig) waitActive(t *testing.T, ours *stack.Conn, n int) {
	t.Helper()
	if !poll(u.Ctx, joinWait, func() bool { return activeSubflows(ours.Stats()) == n }) {
		t.Fatalf("umptcp has %d active subflows after %v, want %d\n%s", activeSubflows(ours.Stats()), joinWait, n, u.report(ours))
	}
}

// waitKernelSubflows waits until the kernel's MPTCP_INFO counts n
// additional subflows.
func (u *multiRig) waitKernelSubflows(t *testing.T, ours *stack.Conn, kernel net.Conn, n int) {
	t.Helper()
	var info MPTCPInfo
	var err error
	if !poll(u.Ctx, joinWait, func() bool {
		info, err = KernelMPTCPInfo(kernel)
		return err == nil && int(info.Subflows) == n
	}) {
		t.Fatalf("kernel MPTCP_INFO %+v (err %v), want %d additional subflows\n%s", info, err, n, u.report(ours))
	}
}

// connectAny connects our client to a kernel MPTCP server listening on
// every address (joins to an address it announces without a port need
// that, as in the kernel's own selftests).
func (u *multiRig) connectAny(t *testing.T) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	network, any := "tcp4", fmt.Sprintf("0.0.0.0:%d", kernelPort)
	if u.fam.paths[0].host.Addr().Is6() {
		network, any = "tcp6", fmt.Sprintf("[::]:%d", kernelPort)
	}
	ours, kernel = u.dialKernelOn(t, network, any)
	u.settle(t, ours, kernel)
	return ours, kernel
}

// acceptKernelPlain connects a kernel MPTCP client without endpoints of
// its own (it joins only what we announce) to our listener on every
// address (":stackPort": joins to an address announced without a port need
// a listener there, as on Linux).
func (u *multiRig) acceptKernelPlain(t *testing.T) (ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	ours, kernel = u.acceptKernelOn(t, fmt.Sprintf(":%d", stackPort))
	u.settle(t, ours, kernel)
	return ours, kernel
}

// exchange moves size bytes each way and checks them.
func (u *multiRig) exchange(t *testing.T, ours *stack.Conn, kernel net.Conn, size int64, midway func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(u.Ctx, 90*time.Second)
	defer cancel()
	require.NoError(t, Exchange(ctx, ours, kernel, ExchangeOptions{AtoB: size, BtoA: size, Midway: midway}), "%s", u.report(ours))
}

// secondHost is another kernel address on path 1, for a second signal
// endpoint.
func secondHost(fam multiFamily) netip.Prefix {
	p := fam.paths[1].host
	a := p.Addr().As16()
	a[15] += 2
	addr := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, p.Bits())
}

// TestPMKernelAnnouncesLate: the kernel server gets its signal endpoint
// while the connection is already up, idle or in the middle of a transfer
// (`ip mptcp endpoint add` announces it on existing connections). Our
// client echoes the ADD_ADDR and joins; the kernel accepts the join (no
// MPJoinRejected) and the new subflow carries data.
func TestPMKernelAnnouncesLate(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(map[bool]string{false: "Idle", true: "MidTransfer"}[busy], func(t *testing.T) {
			fam := multiFamilies[0]
			u := newMultiRig(t, fam, RigOptions{Name: "pml"}, stack.Config{Endpoints: noEndpoints}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
			h1 := fam.paths[1].host.Addr()
			before := u.Nstat()
			ours, kernel := u.connectAny(t)
			// Runs on Exchange's goroutine when busy: errors, not t.Fatal.
			announce := func() error {
				ctx, cancel := context.WithTimeout(u.Ctx, 10*time.Second)
				defer cancel()
				if out, err := u.NS.Exec(ctx, "ip", "mptcp", "endpoint", "add", h1.String(), "signal"); err != nil {
					return fmt.Errorf("ip mptcp endpoint add: %w: %s", err, out)
				}
				if !poll(u.Ctx, joinWait, func() bool { return activeSubflows(ours.Stats()) == 2 }) {
					return fmt.Errorf("no join within %v after the late announcement", joinWait)
				}
				return nil
			}
			if busy {
				u.exchange(t, ours, kernel, 32<<20, announce)
			} else {
				require.NoError(t, announce(), "%s", u.report(ours))
				u.exchange(t, ours, kernel, 16<<20, nil)
			}
			join := ours.Stats().Subflows[1]
			require.Equal(t, netip.AddrPortFrom(h1, kernelPort), join.Remote)
			require.Greater(t, join.BytesSent+join.BytesReceived, uint64(64<<10), "the join carried data\n%s", u.report(ours))
			m := u.stack.MIB()
			require.Equal(t, uint64(1), m["MPTcpExtAddAddr"], "%v", changedMIB(u.stack))
			require.Equal(t, uint64(1), m["MPTcpExtEchoAddTx"])
			require.Equal(t, uint64(1), m["MPTcpExtMPJoinSynAckRx"])
			d := u.Nstat().Diff(before)
			require.Equal(t, int64(1), d["MPTcpExtEchoAdd"], "%v", NonZero(d))
			require.Equal(t, int64(1), d["MPTcpExtMPJoinAckRx"], "%v", NonZero(d))
			RequireUnchanged(t, d, joinErrorCounters...)
		})
	}
}

// TestPMKernelAnnounces: a kernel server with two signal endpoints, one
// plain and one with a port (IPv6: both plain, see below). Our client (no endpoints of its own) receives
// both ADD_ADDRs, checks their HMACs, echoes them (the kernel counts
// EchoAdd) and joins both, within its limits; data crosses intact over all
// three subflows.
func TestPMKernelAnnounces(t *testing.T) {
	for _, fam := range multiFamilies {
		t.Run(fam.name, func(t *testing.T) {
			u := newMultiRig(t, fam, RigOptions{Name: "pma"}, stack.Config{Endpoints: noEndpoints}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
			h1, h2 := fam.paths[1].host.Addr(), secondHost(fam)
			args := []string{"addr", "add", h2.String(), "dev", u.tuns[1]}
			if h2.Addr().Is6() {
				args = append(args, "nodad")
			}
			u.ipFam(t, args...)
			u.ip(t, "mptcp", "endpoint", "add", h1.String(), "signal")
			// An IPv6 ADD_ADDR with a port and its HMAC takes 30 bytes:
			// Linux cannot send it next to TCP timestamps (it counts
			// AddAddrTxDrop), so over IPv6 the second one has no port.
			port := uint16(10100)
			if h2.Addr().Is6() {
				port = kernelPort
				u.ip(t, "mptcp", "endpoint", "add", h2.Addr().String(), "signal")
			} else {
				u.ip(t, "mptcp", "endpoint", "add", h2.Addr().String(), "port", "10100", "signal")
			}
			before := u.Nstat()
			ours, kernel := u.connectAny(t)
			u.waitActive(t, ours, 3)
			u.waitKernelSubflows(t, ours, kernel, 2)
			var remotes []netip.AddrPort
			for _, s := range ours.Stats().Subflows {
				remotes = append(remotes, s.Remote)
			}
			require.ElementsMatch(t, []netip.AddrPort{
				netip.AddrPortFrom(fam.paths[0].host.Addr(), kernelPort),
				netip.AddrPortFrom(h1, kernelPort),
				netip.AddrPortFrom(h2.Addr(), port),
			}, remotes)

			u.exchange(t, ours, kernel, 16<<20, nil)
			for _, s := range ours.Stats().Subflows {
				require.Greater(t, s.BytesSent+s.BytesReceived, uint64(64<<10), "subflow %s -> %s carried data\n%s", s.Local, s.Remote, u.report(ours))
			}
			m := u.stack.MIB()
			require.Equal(t, uint64(2), m["MPTcpExtAddAddr"], "%v", changedMIB(u.stack))
			if port != kernelPort {
				require.Equal(t, uint64(1), m["MPTcpExtPortAdd"])
			}
			require.Equal(t, uint64(2), m["MPTcpExtEchoAddTx"])
			require.Equal(t, uint64(2), m["MPTcpExtMPJoinSynTx"])
			require.Equal(t, uint64(2), m["MPTcpExtMPJoinSynAckRx"])
			require.Zero(t, m["MPTcpExtAddAddrHMacFailure"])
			d := u.Nstat().Diff(before)
			require.GreaterOrEqual(t, d["MPTcpExtAddAddrTx"], int64(2), "%v", NonZero(d))
			require.Equal(t, int64(2), d["MPTcpExtEchoAdd"], "the kernel got both echoes: %v", NonZero(d))
			require.Equal(t, int64(2), d["MPTcpExtMPJoinSynRx"], "%v", NonZero(d))
			require.Equal(t, int64(2), d["MPTcpExtMPJoinAckRx"], "%v", NonZero(d))
			if port != kernelPort {
				require.Equal(t, int64(1), d["MPTcpExtMPJoinPortSynRx"], "%v", NonZero(d))
			}
			RequireUnchanged(t, d, joinErrorCounters...)
		})
	}
}

// TestPMKernelAnnounceBadHMAC: the first ADD_ADDR reaches us with its HMAC
// changed on the way: we drop it without an echo and count it; the kernel
// sends it again (add_addr_timeout) and we join then.
func TestPMKernelAnnounceBadHMAC(t *testing.T) {
	fam := multiFamilies[0]
	spoil := &hmacSpoiler{}
	spoil.left.Store(1)
	u := newMultiRig(t, fam, RigOptions{Name: "pmh", Sysctls: map[string]string{"net.mptcp.add_addr_timeout": "1"}},
		stack.Config{Endpoints: noEndpoints}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{
			func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint { spoil.Endpoint.Init(ep, spoil); return spoil },
		})
	u.ip(t, "mptcp", "endpoint", "add", fam.paths[1].host.Addr().String(), "signal")
	before := u.Nstat()
	ours, kernel := u.connectAny(t)
	u.waitActive(t, ours, 2)
	require.Equal(t, int32(0), spoil.left.Load(), "an ADD_ADDR was spoiled")
	m := u.stack.MIB()
	require.Equal(t, uint64(1), m["MPTcpExtAddAddrHMacFailure"], "%v", changedMIB(u.stack))
	require.Equal(t, uint64(1), m["MPTcpExtAddAddr"])
	require.Equal(t, uint64(1), m["MPTcpExtEchoAddTx"], "no echo for the spoiled one")
	d := u.Nstat().Diff(before)
	require.GreaterOrEqual(t, d["MPTcpExtAddAddrTx"], int64(2), "the kernel sent it again: %v", NonZero(d))
	require.Equal(t, int64(1), d["MPTcpExtEchoAdd"], "%v", NonZero(d))
	u.exchange(t, ours, kernel, 4<<20, nil)
}

// TestPMOursAnnounces: our server announces its path 1 address (plain, and
// with a port it then accepts joins on); a kernel client with
// add_addr_accepted raised joins it; data crosses intact.
func TestPMOursAnnounces(t *testing.T) {
	for _, fam := range multiFamilies {
		for _, port := range []uint16{0, 10200} {
			t.Run(fmt.Sprintf("%s/port%d", fam.name, port), func(t *testing.T) {
				e := pm.Endpoint{Addr: fam.paths[1].stack.Addr(), Port: port, Flags: pm.Signal}
				u := newMultiRig(t, fam, RigOptions{Name: "pmo"}, stack.Config{Endpoints: []pm.Endpoint{e}}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
				before := u.Nstat()
				ours, kernel := u.acceptKernelPlain(t)
				u.waitActive(t, ours, 2)
				u.waitKernelSubflows(t, ours, kernel, 1)
				want := port
				if want == 0 {
					want = stackPort
				}
				require.Equal(t, netip.AddrPortFrom(e.Addr, want), ours.Stats().Subflows[1].Local)
				u.exchange(t, ours, kernel, 8<<20, nil)
				m := u.stack.MIB()
				require.GreaterOrEqual(t, m["MPTcpExtAddAddrTx"], uint64(1), "%v", changedMIB(u.stack))
				require.Equal(t, uint64(1), m["MPTcpExtEchoAdd"], "%v", changedMIB(u.stack))
				require.Equal(t, uint64(1), m["MPTcpExtMPJoinSynRx"])
				require.Equal(t, uint64(1), m["MPTcpExtMPJoinAckRx"])
				d := u.Nstat().Diff(before)
				require.Equal(t, int64(1), d["MPTcpExtAddAddr"], "the kernel took our ADD_ADDR (HMAC valid): %v", NonZero(d))
				require.Equal(t, int64(1), d["MPTcpExtEchoAddTx"], "%v", NonZero(d))
				require.Equal(t, int64(1), d["MPTcpExtMPJoinSynTx"], "%v", NonZero(d))
				require.Equal(t, int64(1), d["MPTcpExtMPJoinSynAckRx"], "%v", NonZero(d))
				if port != 0 {
					require.Equal(t, int64(1), d["MPTcpExtPortAdd"], "%v", NonZero(d))
					require.Equal(t, int64(1), d["MPTcpExtMPJoinPortSynAckRx"], "%v", NonZero(d))
				}
				RequireUnchanged(t, d, joinErrorCounters...)
			})
		}
	}
}

// TestPMRemoveAddr: REMOVE_ADDR both ways in the middle of a transfer. The
// kernel deletes its signal endpoint: our subflow to it closes. We remove
// our endpoint: the kernel closes its subflow. The transfer completes over
// the initial subflow, intact.
func TestPMRemoveAddr(t *testing.T) {
	fam := multiFamilies[0]
	t.Run("KernelRemoves", func(t *testing.T) {
		u := newMultiRig(t, fam, RigOptions{Name: "pmr"}, stack.Config{Endpoints: noEndpoints}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
		h1 := fam.paths[1].host.Addr()
		u.ip(t, "mptcp", "endpoint", "add", h1.String(), "id", "5", "signal")
		before := u.Nstat()
		ours, kernel := u.connectAny(t)
		u.waitActive(t, ours, 2)
		u.exchange(t, ours, kernel, 16<<20, func() error {
			u.ip(t, "mptcp", "endpoint", "del", "id", "5")
			if !poll(u.Ctx, 10*time.Second, func() bool { return activeSubflows(ours.Stats()) == 1 }) {
				return fmt.Errorf("our subflow to %s is still open after the kernel removed it", h1)
			}
			return nil
		})
		require.Equal(t, uint64(1), u.stack.MIB()["MPTcpExtRmAddr"], "%v", changedMIB(u.stack))
		d := u.Nstat().Diff(before)
		RequireIncreased(t, d, "MPTcpExtRmAddrTx")
	})
	t.Run("OursRemoves", func(t *testing.T) {
		// The default endpoints: both link addresses, IDs 1 and 2; the
		// client joins from path 1 (ID 2).
		u := newMultiRig(t, fam, RigOptions{Name: "pmr"}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
		before := u.Nstat()
		ours, kernel := u.connect(t, true)
		join := u.waitJoined(t, ours, kernel)
		require.Equal(t, fam.paths[1].stack.Addr(), join.Local.Addr())
		u.exchange(t, ours, kernel, 16<<20, func() error {
			if err := u.stack.PathManager().RemoveEndpoint(2); err != nil {
				return err
			}
			if !poll(u.Ctx, 10*time.Second, func() bool {
				info, err := KernelMPTCPInfo(kernel)
				return err == nil && info.Subflows == 0
			}) {
				return fmt.Errorf("the kernel kept its subflow after our REMOVE_ADDR")
			}
			return nil
		})
		require.Equal(t, "closed", ours.Stats().Subflows[1].State)
		require.Equal(t, uint64(1), u.stack.MIB()["MPTcpExtRmAddrTx"])
		require.Equal(t, uint64(1), u.stack.MIB()["MPTcpExtRmSubflow"])
		d := u.Nstat().Diff(before)
		require.Equal(t, int64(1), d["MPTcpExtRmAddr"], "%v", NonZero(d))
	})
}

// TestPMEndpointBackup: changing our endpoint's backup flag at run time
// sends MP_PRIO on its subflow; the kernel counts it and stops sending on
// that subflow.
func TestPMEndpointBackup(t *testing.T) {
	fam := multiFamilies[0]
	u := newMultiRig(t, fam, RigOptions{Name: "pmb"}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
	ours, kernel := u.connect(t, true)
	u.waitJoined(t, ours, kernel)
	before := u.Nstat()
	require.NoError(t, u.stack.PathManager().SetBackup(2, true))
	if !poll(u.Ctx, 10*time.Second, func() bool { return u.Nstat().Diff(before)["MPTcpExtMPPrioRx"] >= 1 }) {
		t.Fatalf("the kernel never counted our MP_PRIO: %v", NonZero(u.Nstat().Diff(before)))
	}
	require.Equal(t, uint64(1), u.stack.MIB()["MPTcpExtMPPrioTx"])
	require.True(t, ours.Stats().Subflows[1].Backup)
	got := ours.Stats().Subflows[1].BytesReceived
	ctx, cancel := context.WithTimeout(u.Ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, Exchange(ctx, kernel, ours, ExchangeOptions{AtoB: 8 << 20}))
	got = ours.Stats().Subflows[1].BytesReceived - got
	require.Less(t, got, uint64(256<<10), "the kernel kept sending on the subflow our endpoint made a backup")
}

// TestPMRecreate: our join's path dies in the middle of a transfer; the
// subflow is reset after SubflowTimeout, the transfer goes on over the
// initial one, and once the path is back the path manager opens the
// subflow again (the kernel accepts a new join) and traffic returns to it.
func TestPMRecreate(t *testing.T) {
	fam := multiFamilies[0]
	var shaped *tun.Shaped
	u := newMultiRig(t, fam, RigOptions{Name: "pmc"}, stack.Config{SubflowTimeout: 2 * time.Second, Scheduler: "roundrobin"},
		[2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{nil, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
			shaped = tun.Shape(ep, tun.LinkParams{}, tun.LinkParams{})
			return shaped
		}})
	u.stack.PathManager().SetRecreateBackoff(500 * time.Millisecond)
	ours, kernel := u.connect(t, true)
	u.waitJoined(t, ours, kernel)
	before := u.Nstat()
	local := fam.paths[1].stack.Addr()
	var atReturn uint64
	ctx, cancel := context.WithTimeout(u.Ctx, 3*time.Minute)
	defer cancel()
	err := Exchange(ctx, ours, kernel, ExchangeOptions{AtoB: 64 << 20, Midway: func() error {
		dead := tun.LinkParams{Blackhole: true}
		shaped.SetParams(dead, dead)
		if !poll(u.Ctx, 30*time.Second, func() bool { return activeSubflows(ours.Stats()) == 1 }) {
			return fmt.Errorf("the subflow over the dead path was not reset\n%s", formatStats(ours.Stats()))
		}
		time.Sleep(time.Second) // a join attempt fails while the path is down
		shaped.SetParams(tun.LinkParams{}, tun.LinkParams{})
		if !poll(u.Ctx, 30*time.Second, func() bool { return activeSubflows(ours.Stats()) == 2 }) {
			return fmt.Errorf("the subflow was not re-created after the path came back\n%s", formatStats(ours.Stats()))
		}
		for _, s := range ours.Stats().Subflows {
			if s.State == "active" && s.Local.Addr() == local {
				atReturn = s.BytesSent
			}
		}
		return nil
	}})
	require.NoError(t, err, "%s", u.report(ours))
	require.Equal(t, uint64(1), u.stack.MIB()["MPTcpExtSubflowRecreate"], "%v", changedMIB(u.stack))
	// The initial subflow, the join that died, the one opened again.
	st := ours.Stats()
	require.Len(t, st.Subflows, 3, "%s", formatStats(st))
	again := st.Subflows[2]
	require.Equal(t, local, again.Local.Addr(), "%s", formatStats(st))
	require.Greater(t, again.BytesSent-atReturn, uint64(256<<10), "traffic returned to the re-created subflow\n%s", formatStats(st))
	d := u.Nstat().Diff(before)
	require.GreaterOrEqual(t, d["MPTcpExtMPJoinAckRx"], int64(1), "the kernel accepted the new join: %v", NonZero(d))
}

// hmacSpoiler changes the HMAC of the next left ADD_ADDRs that arrive (and
// fixes the TCP checksum, so that only MPTCP can tell).
type hmacSpoiler struct {
	nested.Endpoint
	left atomic.Int32
}

func (h *hmacSpoiler) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if h.left.Load() > 0 {
		raw := append([]byte(nil), pkt.ToView().AsSlice()...)
		if spoilAddAddr(proto, raw) {
			h.left.Add(-1)
			np := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
			h.Endpoint.DeliverNetworkPacket(proto, np)
			np.DecRef()
			return
		}
	}
	h.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// spoilAddAddr flips the last HMAC byte of an ADD_ADDR (not an echo) in
// the IP packet raw, if it carries one.
func spoilAddAddr(proto tcpip.NetworkProtocolNumber, raw []byte) bool {
	var ipLen int
	var src, dst tcpip.Address
	switch proto {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(raw)
		if len(raw) < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) {
			return false
		}
		ipLen, src, dst = int(ip.HeaderLength()), ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		ip := header.IPv6(raw)
		if len(raw) < header.IPv6MinimumSize || ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return false
		}
		ipLen, src, dst = header.IPv6MinimumSize, ip.SourceAddress(), ip.DestinationAddress()
	default:
		return false
	}
	if len(raw) < ipLen+header.TCPMinimumSize {
		return false
	}
	tcp := header.TCP(raw[ipLen:])
	off := int(tcp.DataOffset())
	if off < header.TCPMinimumSize || ipLen+off > len(raw) {
		return false
	}
	opts := tcp[header.TCPMinimumSize:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		o := opts[i : i+int(opts[i+1])]
		if o[0] == 30 && len(o) >= 3 && o[2]>>4 == 3 && o[2]&1 == 0 {
			o[len(o)-1] ^= 0xff
			tcp.SetChecksum(0)
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(raw)-ipLen))
			tcp.SetChecksum(^checksum.Checksum(raw[ipLen:], xsum))
			return true
		}
		i += len(o)
	}
	return false
}
