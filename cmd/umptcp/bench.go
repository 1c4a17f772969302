package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	benchsuite "github.com/umptcp/umptcp/internal/bench"
)

const benchUsage = `Usage: umptcp bench [-o DIR] [--smoke] [--only NAME,...] [-v]

Runs the benchmark suite and writes DIR/RESULTS.md (tables, targets met or
missed; text after a line "<!-- reading -->" in an existing file is kept),
DIR/results.json (every number) and SVG plots. Every number is compared
with a baseline measured in the same run.

Scenarios: onepath, onepath-tun (root), equal, hetero, handover, cost,
micro, scale. Without root the kernel scenario and the kernel legs of the others
are skipped and listed as skipped; as root, a kernel set-up failure fails
the run. --smoke uses tiny sizes (the whole run takes under a minute).

Flags:
`

// bench runs `umptcp bench`. Exit status: 0 when every selected scenario
// ran (whether or not it met its targets: benchmarks report), 1 when one
// failed or the run was interrupted, 2 on bad arguments.
func bench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("umptcp bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	dir := fs.String("o", "bench", "output directory")
	smoke := fs.Bool("smoke", false, "tiny sizes and durations (CI): proves the harness, not the numbers")
	only := fs.String("only", "", "comma-separated scenarios to run (default all): "+strings.Join(benchsuite.Names(), ", "))
	verbose := fs.Bool("v", false, "print per-leg details")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "umptcp bench: unexpected argument %q\n\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	var names []string
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !slices.Contains(benchsuite.Names(), n) {
			fmt.Fprintf(stderr, "umptcp bench: unknown scenario %q (valid: %s)\n", n, strings.Join(benchsuite.Names(), ", "))
			return 2
		}
		names = append(names, n)
	}
	root := os.Geteuid() == 0
	if !root {
		fmt.Fprintf(stdout, "NOT ROOT (uid %d): skipping onepath-tun and the Linux-kernel legs of equal, hetero and handover "+
			"(they need TUN devices and network namespaces); they are listed as skipped in the results.\n", os.Geteuid())
	}

	// An interrupt ends the run cleanly: the running scenario removes its
	// namespaces and devices, the results so far are written. A second
	// interrupt kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	_, err := benchsuite.Run(ctx, benchsuite.Options{Dir: *dir, Smoke: *smoke, Only: names, Verbose: *verbose, Log: stdout, Root: root})
	if err != nil {
		fmt.Fprintf(stderr, "umptcp bench: %v\n", err)
		return 1
	}
	return 0
}
