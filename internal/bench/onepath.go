package bench

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umptcp/umptcp/tun"
)

// sizedLimit bounds a sized transfer: far beyond any plausible duration
// (10 MB/s), so only a stall hits it.
func sizedLimit(size int64) time.Duration {
	return 30*time.Second + time.Duration(size/(10<<20))*time.Second
}

// legCost is what one sized in-process leg took.
type legCost struct {
	elapsed    time.Duration
	cpu        time.Duration // user + system CPU of the whole process
	mallocs    uint64        // heap allocations (count)
	allocBytes uint64        // heap bytes allocated
}

// inprocSized moves size bytes from client to server over one fresh
// unshaped in-process path, with umptcp's MPTCP (one subflow) or with plain
// gVisor TCP, and measures time, CPU and allocations of that transfer only
// (set-up and tear-down excluded).
func inprocSized(ctx context.Context, mptcp bool, size int64) (legCost, error) {
	n, err := newInproc([]tun.LinkParams{{}}, "")
	if err != nil {
		return legCost{}, err
	}
	var cli, srv net.Conn
	if mptcp {
		c, s, err := n.mptcp(ctx)
		if err != nil {
			n.close()
			return legCost{}, err
		}
		cli, srv = c, s
	} else if cli, srv, err = n.tcp(ctx); err != nil {
		n.close()
		return legCost{}, err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0 := cpuTime()
	el, err := sizedTransfer(ctx, cli, srv, size, sizedLimit(size))
	c1 := cpuTime()
	runtime.ReadMemStats(&m1)
	cerr := n.close()
	if err == nil {
		err = cerr
	}
	return legCost{elapsed: el, cpu: c1 - c0, mallocs: m1.Mallocs - m0.Mallocs, allocBytes: m1.TotalAlloc - m0.TotalAlloc}, err
}

// cpuTime is the process's user + system CPU time so far (getrusage
// RUSAGE_SELF): every goroutine, both stacks, the emulated link.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// legName names the two in-process legs.
func legName(mptcp bool) string {
	if mptcp {
		return "umptcp MPTCP, 1 subflow"
	}
	return "plain gVisor TCP"
}

func runOnepath(ctx context.Context, r *runner, sc *Scenario) error {
	p := r.p
	sc.Setup = fmt.Sprintf("Two stacks in this process joined by one unshaped emulated link (tun.NewPipe, MTU 1500). "+
		"The same bytes go client → server with umptcp's MPTCP (one subflow) and with plain gVisor TCP on the same stacks; "+
		"%d round(s) of %s per leg, the legs alternating so that drift hits both. Rate = all bytes / all time.", p.onepathRounds, sizeText(p.onepathSize))
	var total [2]time.Duration // [mptcp]
	for round := range p.onepathRounds {
		for _, mp := range []bool{false, true} {
			c, err := inprocSized(ctx, mp, p.onepathSize)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", legName(mp), round+1, err)
			}
			total[btoi(mp)] += c.elapsed
			r.vlogf("round %d %s: %s in %v = %s Mbit/s", round+1, legName(mp), sizeText(p.onepathSize), c.elapsed.Round(time.Millisecond),
				mbps(float64(p.onepathSize)*8/c.elapsed.Seconds()))
		}
	}
	bytes := float64(p.onepathSize) * float64(p.onepathRounds)
	tcp := bytes * 8 / total[0].Seconds()
	mp := bytes * 8 / total[1].Seconds()
	ra := mp / tcp
	sc.metric("tcp_mbps", tcp/1e6)
	sc.metric("mptcp_mbps", mp/1e6)
	sc.metric("ratio", ra)
	sc.Tables = append(sc.Tables, Table{
		Columns: []string{"leg", "bytes", "seconds", "Mbit/s", "vs gVisor TCP"},
		Rows: [][]string{
			{legName(false), sizeText(p.onepathSize * int64(p.onepathRounds)), fmt.Sprintf("%.2f", total[0].Seconds()), mbps(tcp), "1.00"},
			{legName(true), sizeText(p.onepathSize * int64(p.onepathRounds)), fmt.Sprintf("%.2f", total[1].Seconds()), mbps(mp), ratio(ra)},
		},
	})
	sc.Targets = append(sc.Targets, newTarget(sc.Name, "umptcp (1 subflow) ÷ gVisor TCP throughput", "≥ 0.97", true, "", ptr(ra), ptr(0.97), ""))
	return nil
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

func runCost(ctx context.Context, r *runner, sc *Scenario) error {
	size := r.p.costSize
	sc.Setup = fmt.Sprintf("%s client → server over one unshaped in-process link (tun.NewPipe), umptcp MPTCP (one subflow) and plain gVisor TCP. "+
		"Both ends, and the emulated link's goroutines, run in this process: the costs are sender + receiver together. "+
		"CPU = getrusage(RUSAGE_SELF) user + system during the transfer; allocations = runtime.MemStats Mallocs and TotalAlloc deltas.", sizeText(size))
	var legs [2]legCost
	for _, mp := range []bool{false, true} {
		c, err := inprocSized(ctx, mp, size)
		if err != nil {
			return fmt.Errorf("%s: %w", legName(mp), err)
		}
		legs[btoi(mp)] = c
		r.vlogf("%s: %v CPU, %d allocations, %d bytes allocated in %v", legName(mp), c.cpu, c.mallocs, c.allocBytes, c.elapsed.Round(time.Millisecond))
	}
	gib := float64(size) / (1 << 30)
	mib := float64(size) / (1 << 20)
	cpu := func(c legCost) float64 { return c.cpu.Seconds() / gib }
	allocs := func(c legCost) float64 { return float64(c.mallocs) / mib }
	abytes := func(c legCost) float64 { return float64(c.allocBytes) / mib }
	t, m := legs[0], legs[1]
	sc.metric("tcp_cpu_s_per_gib", cpu(t))
	sc.metric("mptcp_cpu_s_per_gib", cpu(m))
	sc.metric("cpu_ratio", cpu(m)/cpu(t))
	sc.metric("tcp_allocs_per_mib", allocs(t))
	sc.metric("mptcp_allocs_per_mib", allocs(m))
	sc.metric("allocs_ratio", allocs(m)/allocs(t))
	sc.metric("tcp_alloc_bytes_per_mib", abytes(t))
	sc.metric("mptcp_alloc_bytes_per_mib", abytes(m))
	sc.Tables = append(sc.Tables, Table{
		Columns: []string{"per byte moved", "plain gVisor TCP", "umptcp MPTCP", "umptcp ÷ TCP"},
		Rows: [][]string{
			{"CPU seconds per GiB", fmt.Sprintf("%.2f", cpu(t)), fmt.Sprintf("%.2f", cpu(m)), ratio(cpu(m) / cpu(t))},
			{"heap allocations per MiB", fmt.Sprintf("%.0f", allocs(t)), fmt.Sprintf("%.0f", allocs(m)), ratio(allocs(m) / allocs(t))},
			{"heap bytes allocated per MiB", fmt.Sprintf("%.0f", abytes(t)), fmt.Sprintf("%.0f", abytes(m)), ratio(abytes(m) / abytes(t))},
			{"Mbit/s (for reference)", mbps(float64(size) * 8 / t.elapsed.Seconds()), mbps(float64(size) * 8 / m.elapsed.Seconds()), ratio(t.elapsed.Seconds() / m.elapsed.Seconds())},
		},
	})
	return nil
}
