package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/umptcp/umptcp/internal/kernelsock"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// Addresses of the umptcp stack's TUN device in onepath-tun: ours and the
// kernel side's (in the server namespace of the kernel rig).
var (
	tunStackAddr = netip.MustParsePrefix("10.90.0.2/24")
	tunHostAddr  = netip.MustParsePrefix("10.90.0.1/24")
)

// tunLeg is one of the onepath-tun comparisons: connect returns a
// connection's two ends, a (umptcp's stack, or the kernel client) and b
// (the kernel server), and a function that releases it.
type tunLeg struct {
	name    string
	connect func(ctx context.Context, port int) (a, b net.Conn, done func(), err error)
}

func runOnepathTUN(ctx context.Context, r *runner, sc *Scenario) (err error) {
	size := r.p.tunSize
	sc.Setup = fmt.Sprintf("One unshaped path to the Linux kernel. umptcp's stack runs on a TUN device whose kernel side is in a namespace; "+
		"a kernel socket there is the peer: umptcp MPTCP ↔ kernel MPTCP, and plain gVisor TCP (same stack) ↔ kernel TCP. "+
		"Kernel ↔ kernel: a client namespace and the server namespace joined by two TUN devices and tun.Forward (unshaped), "+
		"so that the kernel's packets pay the same userspace TUN hop. "+
		"%s per leg and direction; up = from umptcp's stack (or the kernel client) to the kernel server, down = the other way.", sizeText(size))
	k, err := newKPair(ctx, []tun.LinkParams{{}})
	if err != nil {
		return fmt.Errorf("kernel rig: %w", err)
	}
	defer func() { err = errors.Join(err, k.close()) }()
	dev, err := tun.OpenIn(k.s.Name(), tun.Config{Name: "bu0", StackAddr: tunStackAddr, HostAddr: tunHostAddr})
	if err != nil {
		return fmt.Errorf("umptcp's TUN device: %w", err)
	}
	st, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: dev.LinkEndpoint(), Addrs: []netip.Prefix{tunStackAddr}}}})
	if err != nil {
		dev.Close()
		return err
	}
	defer func() {
		// The stack first: it detaches from the device (see
		// tun.Device.LinkEndpoint).
		err = errors.Join(err, closeWithin(20*time.Second, "umptcp's stack", st.Close), dev.Close())
	}()

	kernelServer := func(mptcp bool, port int) (net.Listener, string, error) {
		addr := netip.AddrPortFrom(tunHostAddr.Addr(), uint16(port)).String()
		ln, err := kernelsock.Listen(k.s, "tcp", addr, mptcp)
		return ln, addr, err
	}
	legs := []tunLeg{
		{"umptcp MPTCP ↔ kernel MPTCP", func(ctx context.Context, port int) (net.Conn, net.Conn, func(), error) {
			ln, addr, err := kernelServer(true, port)
			if err != nil {
				return nil, nil, nil, err
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			a, err := st.DialContext(ctx, "tcp", addr)
			if err != nil {
				ln.Close()
				return nil, nil, nil, err
			}
			b, err := acceptWithin(ctx, ln)
			if err == nil && !a.MultipathTCP() {
				err = fmt.Errorf("umptcp fell back to TCP: %s", a.FallbackReason())
			}
			if err == nil {
				err = checkKernelMPTCP(b)
			}
			done := func() {
				a.Close()
				if b != nil {
					b.Close()
				}
				ln.Close()
			}
			if err != nil {
				done()
				return nil, nil, nil, err
			}
			return a, b, done, nil
		}},
		{"gVisor TCP ↔ kernel TCP", func(ctx context.Context, port int) (net.Conn, net.Conn, func(), error) {
			ln, _, err := kernelServer(false, port)
			if err != nil {
				return nil, nil, nil, err
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			a, err := gonet.DialContextTCP(ctx, st.Netstack(), tcpip.FullAddress{Addr: tcpip.AddrFrom4(tunHostAddr.Addr().As4()), Port: uint16(port)}, ipv4.ProtocolNumber)
			if err != nil {
				ln.Close()
				return nil, nil, nil, err
			}
			b, err := acceptWithin(ctx, ln)
			if err != nil {
				a.Close()
				ln.Close()
				return nil, nil, nil, err
			}
			return a, b, func() { a.Close(); b.Close(); ln.Close() }, nil
		}},
		{"kernel MPTCP ↔ kernel MPTCP (forwarder)", func(ctx context.Context, port int) (net.Conn, net.Conn, func(), error) {
			kc, err := k.connect(ctx, 0, true, port)
			if err != nil {
				return nil, nil, nil, err
			}
			return kc.cli, kc.srv, kc.close, nil
		}},
		{"kernel TCP ↔ kernel TCP (forwarder)", func(ctx context.Context, port int) (net.Conn, net.Conn, func(), error) {
			kc, err := k.connect(ctx, 0, false, port)
			if err != nil {
				return nil, nil, nil, err
			}
			return kc.cli, kc.srv, kc.close, nil
		}},
	}
	rates := make([][2]float64, len(legs)) // [leg][up=0, down=1]
	for dir, up := range []bool{true, false} {
		for i, leg := range legs {
			a, b, done, err := leg.connect(ctx, nextKernelPort())
			if err != nil {
				return fmt.Errorf("%s: connect: %w", leg.name, err)
			}
			src, dst := a, b
			if !up {
				src, dst = b, a
			}
			el, err := sizedTransfer(ctx, src, dst, size, sizedLimit(size))
			done()
			if err != nil {
				return fmt.Errorf("%s, %s: %w", leg.name, map[bool]string{true: "up", false: "down"}[up], err)
			}
			rates[i][dir] = float64(size) * 8 / el.Seconds()
			r.vlogf("%s %s: %s Mbit/s", leg.name, map[bool]string{true: "up", false: "down"}[up], mbps(rates[i][dir]))
		}
	}
	keys := []string{"umptcp_mptcp", "gvisor_tcp", "kernel_mptcp", "kernel_tcp"}
	tbl := Table{Columns: []string{"leg", "up Mbit/s", "down Mbit/s"}}
	for i, leg := range legs {
		tbl.Rows = append(tbl.Rows, []string{leg.name, mbps(rates[i][0]), mbps(rates[i][1])})
		sc.metric(keys[i]+"_up_mbps", rates[i][0]/1e6)
		sc.metric(keys[i]+"_down_mbps", rates[i][1]/1e6)
	}
	for _, c := range []struct {
		name, key string
		base      int
	}{{"ratio umptcp MPTCP ÷ gVisor TCP", "ratio_vs_gvisor_tcp", 1}, {"ratio umptcp MPTCP ÷ kernel–kernel MPTCP", "ratio_vs_kernel_mptcp", 2}} {
		up, down := rates[0][0]/rates[c.base][0], rates[0][1]/rates[c.base][1]
		tbl.Rows = append(tbl.Rows, []string{c.name, ratio(up), ratio(down)})
		sc.metric(c.key+"_up", up)
		sc.metric(c.key+"_down", down)
	}
	sc.Tables = append(sc.Tables, tbl)
	r.logf("   umptcp ↔ kernel MPTCP up %s / down %s Mbit/s; gVisor TCP %s / %s; kernel–kernel MPTCP %s / %s",
		mbps(rates[0][0]), mbps(rates[0][1]), mbps(rates[1][0]), mbps(rates[1][1]), mbps(rates[2][0]), mbps(rates[2][1]))
	return nil
}
