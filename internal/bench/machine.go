package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where the numbers were measured: ratios travel between
// machines, absolute rates do not.
type Machine struct {
	Kernel    string  `json:"kernel"` // uname -r
	CPU       string  `json:"cpu"`    // model name from /proc/cpuinfo
	NProc     int     `json:"nproc"`  // CPUs this process may use
	MemoryGiB float64 `json:"memory_gib,omitempty"`
	Go        string  `json:"go"`
	Commit    string  `json:"commit"` // umptcp's git commit, "+modified" if the tree differed; "unknown" if not found
	Root      bool    `json:"root"`
}

// machineInfo gathers Machine; what cannot be found reads "unknown".
func machineInfo(root bool) Machine {
	m := Machine{Kernel: "unknown", CPU: "unknown", NProc: runtime.NumCPU(), Go: runtime.Version(), Commit: "unknown", Root: root}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		var kb float64
		if _, err := fmt.Sscan(strings.TrimSuffix(v, " kB"), &kb); err == nil {
			m.MemoryGiB = float64(int(kb/(1<<20)*10+0.5)) / 10
		}
	}
	m.Commit = commit()
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file whose key is key.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// commit returns the commit the binary was built from (Go stamps it into
// `go build` binaries), or else asks git about the working directory (`go
// run` and test binaries carry no stamp).
func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			if modified == "true" {
				rev += "+modified"
			}
			return rev
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "+modified"
	}
	return rev
}
