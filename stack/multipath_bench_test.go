package stack_test

import (
	"fmt"
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

// benchPaths are two unequal emulated paths (4:1 rate, 10 ms vs 40 ms).
var benchPaths = []tun.LinkParams{
	{Rate: 80e6, Delay: 10 * time.Millisecond},
	{Rate: 20e6, Delay: 40 * time.Millisecond},
}

// BenchmarkMultipathAggregate moves the same bytes, in one run, with plain
// gVisor TCP over each of two emulated paths alone and with MPTCP over both
// at once, once per scheduler, and reports each scheduler's throughput as a
// ratio of the sum of the two single-path TCP rates (1.0 = perfect
// aggregation). The baselines are measured here, not remembered.
//
//	go test ./stack -run '^$' -bench MultipathAggregate -benchtime 1x
func BenchmarkMultipathAggregate(b *testing.B) {
	const size = 24 << 20
	var sum float64
	for i, p := range benchPaths {
		var el time.Duration
		for n := 0; n < b.N; n++ {
			el += plainTransfer(b, p, size)
		}
		rate := float64(size) * 8 * float64(b.N) / el.Seconds() / 1e6
		b.ReportMetric(rate, fmt.Sprintf("tcp-path%d-Mbit/s", i))
		sum += rate
	}
	b.ReportMetric(sum, "tcp-sum-Mbit/s")
	for _, sched := range schedulers {
		var el time.Duration
		for n := 0; n < b.N; n++ {
			el += multipathTransfer(b, sched, size)
		}
		rate := float64(size) * 8 * float64(b.N) / el.Seconds() / 1e6
		b.ReportMetric(rate, sched+"-Mbit/s")
		b.ReportMetric(rate/sum, sched+"-ratio")
	}
}

// plainTransfer times size bytes of plain gVisor TCP over one path.
func plainTransfer(b *testing.B, p tun.LinkParams, size int64) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	x, y := tun.NewPipe(p, p)
	sa, _ := stack.New(stack.Config{Links: []stack.Link{{Endpoint: x, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	sb, _ := stack.New(stack.Config{Links: []stack.Link{{Endpoint: y, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	defer sa.Close()
	defer sb.Close()
	ln, err := gonet.ListenTCP(sb.Netstack(), tcpip.FullAddress{Port: 5001}, ipv4.ProtocolNumber)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	w, err := gonet.DialTCP(sa.Netstack(), tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), Port: 5001}, ipv4.ProtocolNumber)
	if err != nil {
		b.Fatal(err)
	}
	return timeOneWay(b, w, <-ch, size)
}

// multipathTransfer times size bytes of MPTCP over both benchPaths.
func multipathTransfer(b *testing.B, sched string, size int64) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	var cl, sl []stack.Link
	for i, p := range benchPaths {
		x, y := tun.NewPipe(p, p)
		cl = append(cl, stack.Link{Endpoint: x, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: y, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.2/24", i))}})
	}
	sa, _ := stack.New(stack.Config{Links: cl, Scheduler: sched})
	sb, _ := stack.New(stack.Config{Links: sl, Scheduler: sched})
	defer sa.Close()
	defer sb.Close()
	ln, err := sb.Listen("tcp", ":5001")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan *stack.Conn, 1)
	go func() { c, _ := ln.AcceptConn(); ch <- c }()
	w, err := sa.Dial("tcp", "10.9.0.2:5001")
	if err != nil {
		b.Fatal(err)
	}
	r := <-ch
	// Measure from the moment every path is in use.
	deadline := time.Now().Add(10 * time.Second)
	for len(w.Stats().Subflows) < len(benchPaths) || len(r.Stats().Subflows) < len(benchPaths) {
		if time.Now().After(deadline) {
			b.Fatalf("subflows did not come up: %+v", w.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return timeOneWay(b, w, r, size)
}

// timeOneWay times size bytes from w to r, until r read them all.
func timeOneWay(b *testing.B, w, r net.Conn, size int64) time.Duration {
	buf := make([]byte, 256<<10)
	start := time.Now()
	go func() {
		for left := size; left > 0; left -= int64(len(buf)) {
			if _, err := w.Write(buf[:min(int64(len(buf)), left)]); err != nil {
				return
			}
		}
		w.(interface{ CloseWrite() error }).CloseWrite()
	}()
	n, _ := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
	el := time.Since(start)
	if n != size {
		b.Fatalf("moved %d bytes, want %d", n, size)
	}
	w.Close()
	r.Close()
	return el
}
