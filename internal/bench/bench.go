package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// Options configure Run.
type Options struct {
	Dir     string    // where RESULTS.md, results.json and the plots go
	Smoke   bool      // tiny sizes and durations: proves the harness, not the numbers
	Only    []string  // scenario names to run (nil: all)
	Verbose bool      // per-leg details
	Log     io.Writer // progress and tables (nil: discarded)
	// Root says whether the kernel scenarios can run (TUN devices,
	// network namespaces). Run's caller sets it, normally from
	// os.Geteuid() == 0.
	Root bool
}

// profile holds the sizes and durations of a run.
type profile struct {
	onepathSize   int64 // bytes per round and leg, in-process unshaped
	onepathRounds int   // rounds; each round runs every leg once, in turn
	tunSize       int64 // bytes per leg over TUN
	warm, measure time.Duration
	handoverAt    time.Duration // when the busier path dies
	handoverAfter time.Duration // how long the transfer goes on after that
	costSize      int64
	scaleConns    int
	scaleBudget   time.Duration // bounds opening the connections and waiting for their subflows
}

// fullProfile keeps each leg at a few seconds on a 2-core machine: about 5
// s per onepath leg (3 rounds of 512 MiB at ~2-3 Gbit/s), 6 s of
// steady-state measurement on the emulated paths after 1 s of warm-up
// (slow start on the 80 ms path).
var fullProfile = profile{
	onepathSize: 512 << 20, onepathRounds: 3,
	tunSize: 512 << 20,
	warm:    1 * time.Second, measure: 6 * time.Second,
	handoverAt: 2 * time.Second, handoverAfter: 4 * time.Second,
	costSize:   1 << 30,
	scaleConns: 10000, scaleBudget: 3 * time.Minute,
}

// smokeProfile makes the whole run (kernel scenarios included) take well
// under a minute.
var smokeProfile = profile{
	onepathSize: 32 << 20, onepathRounds: 1,
	tunSize: 16 << 20,
	warm:    300 * time.Millisecond, measure: 500 * time.Millisecond,
	handoverAt: 800 * time.Millisecond, handoverAfter: 1200 * time.Millisecond,
	costSize:   32 << 20,
	scaleConns: 200, scaleBudget: 30 * time.Second,
}

// scenarioDef is one scenario of the suite.
type scenarioDef struct {
	name, title string
	rootOnly    bool // needs TUN devices and namespaces throughout
	run         func(ctx context.Context, r *runner, sc *Scenario) error
}

// scenarios lists the suite in the order it runs.
var scenarios = []scenarioDef{
	{name: "onepath", title: "one unshaped path in-process: umptcp (1 subflow) vs plain gVisor TCP", run: runOnepath},
	{name: "onepath-tun", title: "one path over TUN to the Linux kernel", rootOnly: true, run: runOnepathTUN},
	{name: "equal", title: "two equal paths (50 + 50 Mbit/s, 20 ms RTT): aggregation", run: runEqual},
	{name: "hetero", title: "two unequal paths (10 Mbit/s 10 ms RTT + 40 Mbit/s 80 ms RTT): aggregation", run: runHetero},
	{name: "handover", title: "the busier of two paths dies mid-transfer", run: runHandover},
	{name: "cost", title: "CPU and allocations per byte, in-process", run: runCost},
	{name: "micro", title: "per-segment cost of reassembly and scheduling", run: runMicro},
	{name: "scale", title: "memory per idle 2-subflow connection", run: runScale},
}

// Names returns the scenario names, in the order they run.
func Names() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

// runner carries a run's options to the scenarios.
type runner struct {
	opts Options
	p    profile
	log  io.Writer
}

// logf prints a progress line.
func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, format+"\n", args...)
}

// vlogf prints a detail line with -v.
func (r *runner) vlogf(format string, args ...any) {
	if r.opts.Verbose {
		fmt.Fprintf(r.log, "    "+format+"\n", args...)
	}
}

// needRootReason is why kernel legs are skipped without root.
func needRootReason() string {
	return fmt.Sprintf("needs root for TUN devices and network namespaces (running as uid %d)", os.Geteuid())
}

// Run runs the selected scenarios, prints progress and tables to o.Log,
// and writes the outputs into o.Dir. It returns the results (also when
// some scenario failed) and an error naming every failed scenario. An
// unknown scenario name fails before anything runs. When ctx ends, the
// running scenario is abandoned (its namespaces and devices removed) and
// the rest are marked as not run.
func Run(ctx context.Context, o Options) (*Results, error) {
	selected := map[string]bool{}
	for _, n := range o.Only {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		found := false
		for _, s := range scenarios {
			found = found || s.name == n
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q (valid: %s)", n, strings.Join(Names(), ", "))
		}
		selected[n] = true
	}
	r := &runner{opts: o, p: fullProfile, log: o.Log}
	if o.Smoke {
		r.p = smokeProfile
	}
	if r.log == nil {
		r.log = io.Discard
	}
	res := &Results{Date: time.Now(), Smoke: o.Smoke, Machine: machineInfo(o.Root)}
	start := time.Now()
	m := res.Machine
	r.logf("umptcp bench (%s): kernel %s, %s, %d CPUs, %s, commit %s, root %s",
		map[bool]string{true: "smoke", false: "full"}[o.Smoke], m.Kernel, m.CPU, m.NProc, m.Go, m.Commit, yesNo(m.Root))
	var failed []error
	for _, def := range scenarios {
		if len(selected) > 0 && !selected[def.name] {
			continue
		}
		sc := &Scenario{Name: def.name, Title: def.title}
		res.Scenarios = append(res.Scenarios, sc)
		switch {
		case ctx.Err() != nil:
			sc.Skipped = "not run: the run was interrupted"
			continue
		case def.rootOnly && !o.Root:
			sc.Skipped = needRootReason()
			r.logf("\n== %s: SKIPPED: %s", def.name, sc.Skipped)
			continue
		}
		r.logf("\n== %s: %s", def.name, def.title)
		t0 := time.Now()
		err := def.run(ctx, r, sc)
		sc.Seconds = time.Since(t0).Seconds()
		if err != nil {
			sc.Error = err.Error()
			failed = append(failed, fmt.Errorf("%s: %w", def.name, err))
			r.logf("   FAILED: %v", err)
		}
		for _, t := range sc.Tables {
			r.logf("%s", TextTable(t))
		}
		for _, p := range sc.SkippedParts {
			r.logf("   SKIPPED %s: %s", p.Part, p.Reason)
		}
		for _, t := range sc.Targets {
			line := fmt.Sprintf("   target %s (%s): %s", t.Name, t.Want, t.Status)
			if t.Value != nil {
				line += ", measured " + formatValue(*t.Value, t.Unit)
			}
			if t.Detail != "" {
				line += ", " + t.Detail
			}
			r.logf("%s", line)
		}
		r.logf("   (%.1f s)", sc.Seconds)
	}
	res.Seconds = time.Since(start).Seconds()
	if err := WriteOutputs(o.Dir, res); err != nil {
		failed = append(failed, fmt.Errorf("writing the results: %w", err))
	} else {
		r.logf("\nwrote %s/RESULTS.md, results.json and the plots (%.0f s in all)", o.Dir, res.Seconds)
	}
	if ctx.Err() != nil {
		failed = append(failed, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	return res, errors.Join(failed...)
}

// mbps formats a rate in bit/s as Mbit/s.
func mbps(bps float64) string {
	if bps != bps { // NaN
		return "–"
	}
	v := bps / 1e6
	// Decide on the rounded value, so that 9.999 prints as 10.0, not 10.00.
	switch {
	case math.Round(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Round(v*10)/10 >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// ratio formats a ratio.
func ratio(v float64) string {
	if v != v {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// sizeText formats a byte count.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
