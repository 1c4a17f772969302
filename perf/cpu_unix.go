//go:build unix

package perf

import (
	"syscall"
	"time"
)

// readCPU samples the process's CPU time (getrusage), as iperf3 does for
// its cpu_util figures.
func readCPU() cpuSample {
	var ru syscall.Rusage
	now := time.Now()
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return cpuSample{}
	}
	return cpuSample{wall: now, user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}
