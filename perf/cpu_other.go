//go:build !unix

package perf

// readCPU reports nothing where getrusage is missing: CPU figures are 0.
func readCPU() cpuSample { return cpuSample{} }
