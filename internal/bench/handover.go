package bench

import (
	"context"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/umptcp/umptcp/tun"
)

// minRTO is the minimum retransmission timeout of both gVisor's TCP and
// Linux's (TCP_RTO_MIN): after a path dies, nothing can be resent sooner
// than about minRTO + RTT unless the stack reinjects on its own.
const minRTO = 200 * time.Millisecond

// handoverLeg is what one handover run saw.
type handoverLeg struct {
	tr        *trace
	dead      int     // the path blackholed
	at        float64 // when, seconds since the transfer started
	before    float64 // goodput over the second before, bit/s
	recovered bool
	recovery  float64 // seconds from the blackhole to recovery
	after     float64 // goodput over the last second, bit/s
}

// busiest returns the path whose counter grew most over the last second
// of tr.
func busiest(tr *trace) int {
	last := len(tr.T) - 1
	from := tr.index(tr.T[last] - 1)
	best, bestN := 0, uint64(0)
	for i, c := range tr.Paths {
		if n := c[last] - c[from]; n > bestN {
			best, bestN = i, n
		}
	}
	return best
}

// handover runs a long transfer over w → rd, blackholes the busiest path
// (with kill) at r.p.handoverAt, and rates the recovery against half of
// the surviving path's configured rate.
func (r *runner) handover(ctx context.Context, w, rd net.Conn, counters []func() uint64, params []tun.LinkParams, kill func(int)) (handoverLeg, error) {
	var h handoverLeg
	ev := func(tr *trace) error {
		h.dead = busiest(tr)
		h.at = tr.T[len(tr.T)-1]
		kill(h.dead)
		return nil
	}
	tr, err := timedTransfer(ctx, w, rd, timedOptions{
		duration: r.p.handoverAt + r.p.handoverAfter, paths: counters, eventAt: r.p.handoverAt, event: ev})
	if err != nil {
		return h, err
	}
	h.tr = tr
	end := tr.T[len(tr.T)-1]
	h.before = tr.goodput(h.at-1, h.at)
	h.after = tr.goodput(end-1, end)
	survivor := params[1-h.dead].Rate
	h.recovery, h.recovered = tr.recovery(h.at, 0.5*float64(survivor))
	return h, nil
}

func runHandover(ctx context.Context, r *runner, sc *Scenario) error {
	p := tun.LinkParams{Rate: 50e6, Delay: 10 * time.Millisecond}
	params := []tun.LinkParams{p, p}
	rtt := 2 * p.Delay
	rto := minRTO + rtt
	names := []string{"path 0 (" + pathText(p) + ")", "path 1 (" + pathText(p) + ")"}
	sc.Setup = fmt.Sprintf("Two emulated paths of %s each; one MPTCP connection over both (umptcp: default scheduler; Linux kernel: kernel to kernel through forwarders, root only). "+
		"Data flows client → server; %v in, the path that delivered the most in the second before is blackholed both ways (packets in flight included) and stays dead for %v. "+
		"Recovery = time from the blackhole to the start of the first 100 ms window whose receiver goodput, and the next window's, is again ≥ 50 %% of the surviving path's rate (%g Mbit/s). "+
		"Assumed RTO: %v minimum RTO (gVisor's and Linux's) + %v RTT = %v.",
		pathText(p), r.p.handoverAt, r.p.handoverAfter, float64(p.Rate)/2e6, minRTO, rtt, rto)

	tbl := Table{Columns: []string{"", "path blackholed", "goodput before Mbit/s", "recovery ms", "goodput in the last second Mbit/s"}}
	addRow := func(name, prefix string, h handoverLeg) float64 {
		rec := "did not recover"
		v := r.p.handoverAfter.Seconds() * 1000 // a lower bound when it did not recover
		if h.recovered {
			v = h.recovery * 1000
			rec = fmt.Sprintf("%.0f", v)
		}
		tbl.Rows = append(tbl.Rows, []string{name, fmt.Sprintf("path %d at %.2f s", h.dead, h.at), mbps(h.before), rec, mbps(h.after)})
		sc.metric(prefix+"_recovery_ms", v)
		sc.metric(prefix+"_recovered", float64(btoi(h.recovered)))
		sc.metric(prefix+"_before_mbps", h.before/1e6)
		sc.metric(prefix+"_after_mbps", h.after/1e6)
		sc.metric(prefix+"_dead_path", float64(h.dead))
		r.logf("   %s: path %d blackholed at %.2f s, recovery %s ms", name, h.dead, h.at, rec)
		return v
	}
	chart := func(file, title string, h handoverLeg) Chart {
		return Chart{File: file, Title: title, XLabel: "seconds", YLabel: "Mbit/s (100 ms windows)",
			Series:  chartSeries(h.tr, names),
			Markers: []Marker{{X: h.at, Label: fmt.Sprintf("path %d blackholed", h.dead)}}}
	}

	// umptcp.
	n, err := newInproc(params, "default")
	if err != nil {
		return err
	}
	cli, srv, err := n.mptcp(ctx)
	if err != nil {
		n.close()
		return fmt.Errorf("umptcp: %w", err)
	}
	h, err := r.handover(ctx, cli, srv, n.counters(), params, n.blackhole)
	st := cli.Stats()
	cerr := n.close()
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("umptcp: %w", err)
	}
	for _, s := range st.Subflows {
		r.vlogf("subflow %d %s→%s sent %d rtt %v %s", s.ID, s.Local, s.Remote, s.BytesSent, s.RTT, s.State)
	}
	r.vlogf("reinjected %d bytes", st.Reinjected)
	ours := addRow("umptcp (default scheduler)", "umptcp", h)
	oursRecovered := h.recovered
	sc.Charts = append(sc.Charts, chart("handover.svg", "umptcp: the busier path dies", h))

	// The kernel.
	kernel := math.NaN()
	why := ""
	if !r.opts.Root {
		why = needRootReason()
		sc.skipPart("Linux kernel MPTCP on the same emulated paths", why)
	} else {
		k, err := newKPair(ctx, params)
		if err != nil {
			return fmt.Errorf("kernel rig: %w", err)
		}
		kh, err := func() (handoverLeg, error) {
			kc, err := k.connect(ctx, 0, true, nextKernelPort())
			if err != nil {
				return handoverLeg{}, err
			}
			defer kc.close()
			return r.handover(ctx, kc.cli, kc.srv, k.counters(), params, k.blackhole)
		}()
		cerr := k.close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("kernel MPTCP: %w", err)
		}
		kernel = addRow("Linux kernel MPTCP", "kernel", kh)
		sc.Charts = append(sc.Charts, chart("handover-kernel.svg", "Linux kernel MPTCP: the busier path dies", kh))
		if !kh.recovered {
			sc.note("the kernel did not recover within %v: its value is that lower bound", r.p.handoverAfter)
		}
	}
	sc.Tables = append(sc.Tables, tbl)
	t1 := newTarget(sc.Name, "umptcp recovery after the busier path dies", fmt.Sprintf("≤ one RTO (%v)", rto), false, "ms", ptr(ours), ptr(float64(rto.Milliseconds())), "")
	t2 := newTarget(sc.Name, "umptcp recovery vs the Linux kernel's", "≤ the kernel's", false, "ms", ptr(ours), ptr(kernel), "kernel leg skipped: "+why)
	if !oursRecovered {
		for _, t := range []*Target{&t1, &t2} {
			if t.Status == Missed {
				t.Detail = fmt.Sprintf("did not recover within %v", r.p.handoverAfter)
			}
		}
	}
	sc.Targets = append(sc.Targets, t1, t2)
	return nil
}
