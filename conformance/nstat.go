package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/netns"
)

// Counters holds a namespace's absolute SNMP/netstat counters as nstat names
// them: "TcpOutRsts", "TcpExtTCPAbortOnData", "MPTcpExtMPCapableSYNRX", …
// (every counter nstat knows, Ip*, Icmp*, Udp*, Ip6* included).
type Counters map[string]int64

// Nstat returns the absolute counters of ns, read with
// `nstat -saz --json` inside it (-s: leave nstat's history file alone,
// -a: absolute values, -z: zeros too).
func Nstat(ns *netns.NS) (Counters, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, "nstat", "-saz", "--json")
	if err != nil {
		return nil, err
	}
	return parseNstatJSON(out)
}

// parseNstatJSON parses nstat's JSON output, {"kernel":{"Name":value,…}}.
func parseNstatJSON(out []byte) (Counters, error) {
	var doc map[string]map[string]json.Number
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("conformance: nstat output: %w", err)
	}
	kernel, ok := doc["kernel"]
	if !ok || len(kernel) == 0 {
		return nil, fmt.Errorf("conformance: nstat output has no kernel counters")
	}
	c := make(Counters, len(kernel))
	for name, v := range kernel {
		n, err := strconv.ParseUint(v.String(), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("conformance: nstat counter %s=%s: %w", name, v, err)
		}
		c[name] = int64(min(n, math.MaxInt64))
	}
	return c, nil
}

// Diff returns, for every counter of c, how much it changed since before
// (a counter missing from before counts from zero).
func (c Counters) Diff(before Counters) map[string]int64 {
	d := make(map[string]int64, len(c))
	for name, v := range c {
		d[name] = v - before[name]
	}
	return d
}

// RequireIncreased fails the test unless every named counter exists in diff
// and went up.
func RequireIncreased(t testing.TB, diff map[string]int64, names ...string) {
	t.Helper()
	for _, name := range names {
		v, ok := diff[name]
		if !ok {
			t.Fatalf("counter %s is not exported by this kernel", name)
		}
		if v <= 0 {
			t.Fatalf("counter %s changed by %d, want an increase; non-zero changes: %v", name, v, NonZero(diff))
		}
	}
}

// RequireUnchanged fails the test unless every named counter exists in diff
// and did not change.
func RequireUnchanged(t testing.TB, diff map[string]int64, names ...string) {
	t.Helper()
	for _, name := range names {
		v, ok := diff[name]
		if !ok {
			t.Fatalf("counter %s is not exported by this kernel", name)
		}
		if v != 0 {
			t.Fatalf("counter %s changed by %d, want no change; non-zero changes: %v", name, v, NonZero(diff))
		}
	}
}

// NonZero returns the "name=delta" entries of diff whose delta is not zero,
// sorted, for failure messages.
func NonZero(diff map[string]int64) []string {
	var s []string
	for name, v := range diff {
		if v != 0 {
			s = append(s, fmt.Sprintf("%s=%d", name, v))
		}
	}
	sort.Strings(s)
	return s
}

// Counter names the tests share.
var (
	// MPCapableErrorCounters must not move on a healthy MPTCP connection.
	MPCapableErrorCounters = []string{
		"MPTcpExtMPCapableFallbackACK",
		"MPTcpExtMPCapableFallbackSYNACK",
		"MPTcpExtDSSNotMatching",
		"MPTcpExtDataCsumErr",
		"MPTcpExtInfiniteMapRx",
		"MPTcpExtMPFailRx",
	}
	// ResetCounters count RSTs sent (Tcp OutRsts, the TCPAbortOn*
	// family), connections reset (TcpEstabResets), and MP_RST and
	// MP_FASTCLOSE sent or received. Linux has no counter for plain RSTs
	// received, nor for DATA_FIN.
	ResetCounters = []string{
		"TcpOutRsts",
		"TcpEstabResets",
		"TcpExtTCPAbortOnData",
		"TcpExtTCPAbortOnClose",
		"TcpExtTCPAbortOnMemory",
		"TcpExtTCPAbortOnTimeout",
		"TcpExtTCPAbortOnLinger",
		"TcpExtTCPAbortFailed",
		"MPTcpExtMPRstTx",
		"MPTcpExtMPRstRx",
		"MPTcpExtMPFastcloseTx",
		"MPTcpExtMPFastcloseRx",
	}
)
