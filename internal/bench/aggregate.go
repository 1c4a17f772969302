package bench

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/tun"
)

// pathText describes a path's emulation: "50 Mbit/s, 20 ms RTT".
func pathText(p tun.LinkParams) string {
	return fmt.Sprintf("%g Mbit/s, %v RTT", float64(p.Rate)/1e6, 2*p.Delay)
}

// timedLeg is the outcome of one timed transfer.
type timedLeg struct {
	tr    *trace
	rate  float64   // goodput over the measurement window, bit/s
	paths []float64 // each path's delivered rate over the window, bit/s (headers included)
}

// timed runs a timed transfer of warm + measure and rates the window after
// the warm-up (slow start excluded: the steady state is what aggregation
// is about).
func (r *runner) timed(ctx context.Context, w, rd net.Conn, counters []func() uint64) (timedLeg, error) {
	from, to := r.p.warm.Seconds(), (r.p.warm + r.p.measure).Seconds()
	tr, err := timedTransfer(ctx, w, rd, timedOptions{duration: r.p.warm + r.p.measure, paths: counters})
	if err != nil {
		return timedLeg{}, err
	}
	l := timedLeg{tr: tr, rate: tr.goodput(from, to)}
	for i := range tr.Paths {
		l.paths = append(l.paths, tr.rateBetween(tr.Paths[i], from, to))
	}
	return l, nil
}

// pathCells formats per-path rates into n cells ("" where a path was not
// used).
func pathCells(n int, rates map[int]float64) []string {
	out := make([]string, n)
	for i := range out {
		if v, ok := rates[i]; ok {
			out[i] = mbps(v)
		}
	}
	return out
}

func runEqual(ctx context.Context, r *runner, sc *Scenario) error {
	p := tun.LinkParams{Rate: 50e6, Delay: 10 * time.Millisecond}
	return runAggregate(ctx, r, sc, []tun.LinkParams{p, p}, false)
}

func runHetero(ctx context.Context, r *runner, sc *Scenario) error {
	return runAggregate(ctx, r, sc, []tun.LinkParams{
		{Rate: 10e6, Delay: 5 * time.Millisecond},
		{Rate: 40e6, Delay: 40 * time.Millisecond},
	}, true)
}

// kernelPorts hands out a fresh port to every kernel connection of a run,
// so that no leg meets the TIME-WAIT sockets of the one before.
var kernelPorts atomic.Int32

func nextKernelPort() int {
	return 6000 + int(kernelPorts.Add(1)%20000)
}

// runAggregate measures aggregation over params: plain gVisor TCP on each
// path alone, umptcp over all of them with every scheduler, and (root) the
// kernel's TCP on each path alone and its MPTCP over all of them, through
// forwarders with the same emulation.
func runAggregate(ctx context.Context, r *runner, sc *Scenario, params []tun.LinkParams, plot bool) error {
	warm, measure := r.p.warm, r.p.measure
	var names []string
	for i, p := range params {
		names = append(names, fmt.Sprintf("path %d (%s)", i, pathText(p)))
	}
	sc.Setup = fmt.Sprintf("Two emulated paths, the same shaping both ways: %s and %s (drop-tail queue of about one BDP + 50 ms). "+
		"Baseline: plain gVisor TCP over each path alone, summed. umptcp: one MPTCP connection over both paths (initial subflow on path 0, MP_JOIN on path 1), with each scheduler. "+
		"Linux kernel (root): two namespaces joined by one TUN-device pair and tun.Forward per path with the same emulation; kernel TCP on each path alone, summed, "+
		"and kernel MPTCP (client endpoint `subflow` on path 1, default kernel scheduler). "+
		"Data flows client → server for %v; goodput is the receiver's, over the last %v (after %v of warm-up). "+
		"The per-path columns are what each link delivered in that window (IP headers included). "+
		"The targets are held by the default scheduler (what Dial uses); the other schedulers are for comparison.",
		names[0], names[1], warm+measure, measure, warm)
	cols := []string{"leg", "goodput Mbit/s"}
	for i := range params {
		cols = append(cols, fmt.Sprintf("path %d Mbit/s", i))
	}
	cols = append(cols, "ratio to the sum")
	tbl := Table{Columns: cols}
	row := func(name string, rate float64, paths map[int]float64, ra string) {
		tbl.Rows = append(tbl.Rows, append(append([]string{name, mbps(rate)}, pathCells(len(params), paths)...), ra))
	}

	// Plain gVisor TCP on each path alone.
	sum := 0.0
	for i, p := range params {
		n, err := newInproc([]tun.LinkParams{p}, "")
		if err != nil {
			return err
		}
		cli, srv, err := n.tcp(ctx)
		if err != nil {
			n.close()
			return fmt.Errorf("gVisor TCP on path %d: %w", i, err)
		}
		l, err := r.timed(ctx, cli, srv, n.counters())
		cerr := n.close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("gVisor TCP on path %d: %w", i, err)
		}
		sum += l.rate
		sc.metric(fmt.Sprintf("tcp_path%d_mbps", i), l.rate/1e6)
		row(fmt.Sprintf("plain gVisor TCP, path %d alone", i), l.rate, map[int]float64{i: l.paths[0]}, "")
		r.logf("   gVisor TCP path %d alone: %s Mbit/s", i, mbps(l.rate))
	}
	sc.metric("tcp_sum_mbps", sum/1e6)
	row("sum of the single-path TCP rates", sum, nil, "1.00")

	// umptcp over both paths, every scheduler.
	defaultRatio := math.NaN()
	for _, sched := range scheduler.Names() {
		n, err := newInproc(params, sched)
		if err != nil {
			return err
		}
		cli, srv, err := n.mptcp(ctx)
		if err != nil {
			n.close()
			return fmt.Errorf("umptcp %s: %w", sched, err)
		}
		l, err := r.timed(ctx, cli, srv, n.counters())
		st := cli.Stats()
		cerr := n.close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("umptcp %s: %w", sched, err)
		}
		ra := l.rate / sum
		sc.metric("umptcp_"+sched+"_mbps", l.rate/1e6)
		sc.metric("umptcp_"+sched+"_ratio", ra)
		paths := map[int]float64{}
		for i, v := range l.paths {
			paths[i] = v
			sc.metric(fmt.Sprintf("umptcp_%s_path%d_mbps", sched, i), v/1e6)
		}
		row("umptcp MPTCP, "+sched, l.rate, paths, ratio(ra))
		r.logf("   umptcp %s: %s Mbit/s, %s of the sum", sched, mbps(l.rate), ratio(ra))
		for _, s := range st.Subflows {
			r.vlogf("subflow %d %s→%s sent %d rtt %v %s", s.ID, s.Local, s.Remote, s.BytesSent, s.RTT, s.State)
		}
		if st.Reinjected > 0 {
			r.vlogf("reinjected %d bytes", st.Reinjected)
		}
		if sched == "default" {
			defaultRatio = ra
			if plot {
				sc.Charts = append(sc.Charts, Chart{File: sc.Name + ".svg",
					Title:  "umptcp (default scheduler) over " + names[0] + " + " + names[1],
					XLabel: "seconds", YLabel: "Mbit/s (100 ms windows)", Series: chartSeries(l.tr, names)})
			}
		}
	}

	// The Linux kernel, kernel to kernel through forwarders.
	kernelRatio := math.NaN()
	why := ""
	if !r.opts.Root {
		why = needRootReason()
		sc.skipPart("Linux kernel TCP and MPTCP on the same emulated paths", why)
	} else {
		k, err := newKPair(ctx, params)
		if err != nil {
			return fmt.Errorf("kernel rig: %w", err)
		}
		kr, err := runKernelAggregate(ctx, r, sc, k, names, row, plot)
		cerr := k.close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		kernelRatio = kr
	}

	sc.Tables = append(sc.Tables, tbl)
	sc.Targets = append(sc.Targets,
		newTarget(sc.Name, "umptcp default ÷ sum of single-path gVisor TCP", "≥ 0.95", true, "", ptr(defaultRatio), ptr(0.95), ""),
		newTarget(sc.Name, "umptcp default ratio vs the kernel's (kernel MPTCP ÷ sum of kernel TCP)", "≥ the kernel's ratio", true, "", ptr(defaultRatio), ptr(kernelRatio), "kernel leg skipped: "+why))
	return nil
}

// runKernelAggregate is the kernel half of runAggregate; it returns the
// kernel's MPTCP ratio to the sum of its single-path TCP rates.
func runKernelAggregate(ctx context.Context, r *runner, sc *Scenario, k *kpair, names []string,
	row func(string, float64, map[int]float64, string), plot bool) (float64, error) {
	sum := 0.0
	for i := range k.params {
		kc, err := k.connect(ctx, i, false, nextKernelPort())
		if err != nil {
			return 0, fmt.Errorf("kernel TCP on path %d: %w", i, err)
		}
		l, err := r.timed(ctx, kc.cli, kc.srv, k.counters())
		kc.close()
		if err != nil {
			return 0, fmt.Errorf("kernel TCP on path %d: %w", i, err)
		}
		sum += l.rate
		sc.metric(fmt.Sprintf("kernel_tcp_path%d_mbps", i), l.rate/1e6)
		row(fmt.Sprintf("Linux kernel TCP, path %d alone", i), l.rate, map[int]float64{i: l.paths[i]}, "")
		r.logf("   kernel TCP path %d alone: %s Mbit/s", i, mbps(l.rate))
	}
	sc.metric("kernel_tcp_sum_mbps", sum/1e6)
	row("sum of the kernel's single-path TCP rates", sum, nil, "1.00")

	kc, err := k.connect(ctx, 0, true, nextKernelPort())
	if err != nil {
		return 0, fmt.Errorf("kernel MPTCP: %w", err)
	}
	l, err := r.timed(ctx, kc.cli, kc.srv, k.counters())
	kc.close()
	if err != nil {
		return 0, fmt.Errorf("kernel MPTCP: %w", err)
	}
	ra := l.rate / sum
	sc.metric("kernel_mptcp_mbps", l.rate/1e6)
	sc.metric("kernel_mptcp_ratio", ra)
	paths := map[int]float64{}
	for i, v := range l.paths {
		paths[i] = v
		sc.metric(fmt.Sprintf("kernel_mptcp_path%d_mbps", i), v/1e6)
	}
	row("Linux kernel MPTCP (ratio to the kernel's sum)", l.rate, paths, ratio(ra))
	r.logf("   kernel MPTCP: %s Mbit/s, %s of the kernel's sum", mbps(l.rate), ratio(ra))
	if plot {
		sc.Charts = append(sc.Charts, Chart{File: sc.Name + "-kernel.svg",
			Title:  "Linux kernel MPTCP over " + names[0] + " + " + names[1],
			XLabel: "seconds", YLabel: "Mbit/s (100 ms windows)", Series: chartSeries(l.tr, names)})
	}
	return ra, nil
}
