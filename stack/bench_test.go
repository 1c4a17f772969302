package stack_test

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// BenchmarkOneSubflowVsTCP moves the same bytes over the same unshaped
// in-process link with one MPTCP subflow and with plain gVisor TCP, in one
// run, and reports both rates and their ratio (the baseline is measured
// here, not remembered).
//
//	go test ./stack -run '^$' -bench OneSubflowVsTCP -benchtime 4x
func BenchmarkOneSubflowVsTCP(b *testing.B) {
	const size = 64 << 20
	var mpTime, tcpTime time.Duration
	for i := 0; i < b.N; i++ {
		tcpTime += timeTransfer(b, false, size)
		mpTime += timeTransfer(b, true, size)
	}
	mp := float64(size) * 8 * float64(b.N) / mpTime.Seconds() / 1e6
	plain := float64(size) * 8 * float64(b.N) / tcpTime.Seconds() / 1e6
	b.ReportMetric(mp, "mptcp-Mbit/s")
	b.ReportMetric(plain, "gvisor-tcp-Mbit/s")
	b.ReportMetric(mp/plain, "ratio")
}

func timeTransfer(b *testing.B, mptcp bool, size int64) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	x, y := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	sa, _ := stack.New(stack.Config{Links: []stack.Link{{Endpoint: x, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	sb, _ := stack.New(stack.Config{Links: []stack.Link{{Endpoint: y, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	defer sa.Close()
	defer sb.Close()
	var w net.Conn
	var r io.Reader
	if mptcp {
		ln, err := sb.Listen("tcp", ":5001")
		if err != nil {
			b.Fatal(err)
		}
		ch := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); ch <- c }()
		if w, err = sa.Dial("tcp", "10.9.0.2:5001"); err != nil {
			b.Fatal(err)
		}
		r = <-ch
	} else {
		ln, err := gonet.ListenTCP(sb.Netstack(), tcpip.FullAddress{Port: 5001}, ipv4.ProtocolNumber)
		if err != nil {
			b.Fatal(err)
		}
		ch := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); ch <- c }()
		if w, err = gonet.DialTCP(sa.Netstack(), tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), Port: 5001}, ipv4.ProtocolNumber); err != nil {
			b.Fatal(err)
		}
		r = <-ch
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	go func() {
		for left := size; left > 0; left -= int64(len(buf)) {
			w.Write(buf)
		}
		w.(interface{ CloseWrite() error }).CloseWrite()
	}()
	n, _ := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
	el := time.Since(start)
	if n != size {
		b.Fatalf("moved %d bytes, want %d", n, size)
	}
	return el
}
