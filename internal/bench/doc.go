// Package bench is `umptcp bench`: a benchmark suite whose every number is
// compared with a baseline measured in the same run, on the same machine,
// over the same emulated paths, so that results from different machines
// and different days can be compared by their ratios.
//
// Scenarios (see Names): one unshaped path in-process (MPTCP with one
// subflow vs plain gVisor TCP), one path over TUN to the Linux kernel,
// aggregation over two equal and two unequal emulated paths (umptcp with
// each scheduler vs the sum of single-path TCP goodput, and the kernel's
// MPTCP vs the kernel's TCP on the same paths), handover when the busier
// path dies, CPU and allocation cost per byte, and memory per idle
// connection.
//
// The baselines for the Linux kernel run kernel to kernel: a client
// namespace and a server namespace, each with one TUN device per path, the
// devices joined by tun.Forward with the same emulation the in-process
// paths use (tun.NewPipe). Those scenarios need root; without root they
// are reported as skipped, with the reason; as root a set-up failure is an
// error, never a silent skip.
//
// Run writes RESULTS.md (tables, the targets met or missed, and whatever a
// human wrote after the line "<!-- reading -->" in the previous file),
// results.json (every number) and SVG plots of throughput over time.
package bench
