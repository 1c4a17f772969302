package conformance

import (
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/netns"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// BenchmarkKernelOverTUN measures, in one run over the same TUN device,
// umptcp's MPTCP against a kernel MPTCP socket and plain gVisor TCP (same
// stack, no MPTCP) against a kernel TCP socket, in both directions, and
// reports each rate and the MPTCP/TCP ratios. Root only.
//
//	sudo go test ./conformance -run '^$' -bench KernelOverTUN -benchtime 3x
func BenchmarkKernelOverTUN(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (TUN device, network namespace)")
	}
	ns, err := netns.New("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	stackAddr, hostAddr := netip.MustParsePrefix("10.88.0.2/24"), netip.MustParsePrefix("10.88.0.1/24")
	dev, err := tun.OpenIn(ns.Name(), tun.Config{Name: "umtbench0", StackAddr: stackAddr, HostAddr: hostAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	s, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: dev.LinkEndpoint(), Addrs: []netip.Prefix{stackAddr}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	const size = 128 << 20
	var total [2][2]time.Duration // [mptcp][upload]
	for i := 0; i < b.N; i++ {
		for _, mptcp := range []bool{true, false} {
			for _, upload := range []bool{true, false} {
				total[btoi(mptcp)][btoi(upload)] += kernelTransfer(b, ns, s, hostAddr.Addr(), mptcp, upload, size)
			}
		}
	}
	rate := func(d time.Duration) float64 { return float64(size) * 8 * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(rate(total[1][1]), "mptcp-up-Mbit/s")
	b.ReportMetric(rate(total[0][1]), "tcp-up-Mbit/s")
	b.ReportMetric(rate(total[1][0]), "mptcp-down-Mbit/s")
	b.ReportMetric(rate(total[0][0]), "tcp-down-Mbit/s")
	b.ReportMetric(rate(total[1][1])/rate(total[0][1]), "up-ratio")
	b.ReportMetric(rate(total[1][0])/rate(total[0][0]), "down-ratio")
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// kernelTransfer moves size bytes between our stack and a kernel socket
// in the namespace (MPTCP on both ends, or plain TCP on both ends) and
// returns how long it took.
func kernelTransfer(b *testing.B, ns *netns.NS, s *stack.Stack, host netip.Addr, mptcp, upload bool, size int64) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	listen := ListenTCP
	if mptcp {
		listen = ListenMPTCP
	}
	ln, err := listen(ns, "tcp", netip.AddrPortFrom(host, 5900).String())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acc := acceptAsync(ln)
	var ours net.Conn
	if mptcp {
		ours, err = s.Dial("tcp", netip.AddrPortFrom(host, 5900).String())
	} else {
		ours, err = gonet.DialTCP(s.Netstack(), tcpip.FullAddress{Addr: tcpip.AddrFrom4(host.As4()), Port: 5900}, ipv4.ProtocolNumber)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer ours.Close()
	r := <-acc
	if r.err != nil {
		b.Fatal(r.err)
	}
	kernel := r.c
	defer kernel.Close()
	src, dst := kernel, ours
	if upload {
		src, dst = ours, kernel
	}
	start := time.Now()
	go func() {
		Send(src, 1, size)
		src.(HalfCloser).CloseWrite()
	}()
	n, err := io.CopyBuffer(io.Discard, dst, make([]byte, 256<<10))
	el := time.Since(start)
	if err != nil || n != size {
		b.Fatalf("moved %d of %d bytes: %v", n, size, err)
	}
	return el
}
