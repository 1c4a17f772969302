package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `umptcp: a userspace Multipath TCP (RFC 8684) stack on gVisor

Usage:
  umptcp demo [flags]      in-process MPTCP transfer over an emulated link (no root)
  umptcp nc [flags] HOST PORT
  umptcp nc -l [flags] PORT
                           netcat over the userspace stack on TUN devices (root)
  umptcp perf -s | -c HOST [flags]
                           iperf3-compatible throughput test over the userspace stack (root)
  umptcp bench [flags]     the benchmark suite: ratios against baselines measured in the
                           same run; writes RESULTS.md, results.json and plots
  umptcp emulate [flags] A B
                           emulated link (rate, delay, loss, ...) between two TUN devices (root)

Run "umptcp COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return demo(args[1:], stdout, stderr)
	case "nc":
		return nc(args[1:], stdin, stdout, stderr)
	case "perf":
		return perf(args[1:], stdout, stderr)
	case "bench":
		return bench(args[1:], stdout, stderr)
	case "emulate":
		return emulate(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "umptcp: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
