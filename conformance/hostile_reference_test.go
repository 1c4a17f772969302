package conformance

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/internal/hostile"
)

// TestUmptcpKernelHostileInWindowLinux: the in-window spoofs of
// TestUmptcpKernelHostileInWindow turned around: forged as if our stack
// had sent them and aimed at the Linux kernel (hostile.FromStack,
// hostile.InWindow), one connection each, both roles, IPv4, one subflow,
// no checksums.
//
// Linux is the reference here, so nothing is required of its behaviour:
// the test records it. For each (role, spoof) it logs the outcome, in
// the terms TestUmptcpKernelHostileInWindow uses ("intact": both ends
// finished with every byte and no error; "both error"; "disagree: how",
// e.g. a stall or a silent truncation), and which of the kernel's MPTCP
// (and reset) counters moved between the injection and the end of the
// transfer; at the end, a markdown table of the outcomes. It fails only
// if the harness misbehaves: a connection that cannot be set up, an
// injection that cannot be built or sent, or a connection carrying no
// spoof at all (the control, run first in each role) that does not end
// intact.
func TestUmptcpKernelHostileInWindowLinux(t *testing.T) {
	RequireRoot(t)
	start := time.Now()
	roles := []bool{true, false} // kernelServer: umptcp as client, as server
	// outcomes[name][role]: the table's cells, filled as subtests end.
	outcomes := map[string]*[2]string{}
	names := []string{controlName}
	outcomes[controlName] = &[2]string{}
	for _, s := range hostileSpoofs {
		names = append(names, s.name)
		outcomes[s.name] = &[2]string{}
	}
	for role, kernelServer := range roles {
		c := hostileCase{fam: 0, kernelServer: kernelServer, subflows: 1}
		shots := append([]*spoof{nil}, spoofPtrs()...) // nil: the control
		for _, s := range shots {
			name := controlName
			if s != nil {
				name = s.name
			}
			t.Run(c.name()+"/"+name, func(t *testing.T) {
				cell := "harness failure (see the subtest's log)"
				defer func() { outcomes[name][role] = cell }()
				h := newHostileConn(t, c)
				time.Sleep(50 * time.Millisecond) // data in flight both ways
				before, err := h.ns()
				require.NoError(t, err, "nstat before")
				if s != nil {
					_, err := h.tap.Inject(h.local, h.remote, hostile.FromStack, s.spec(hostile.FromStack, hostile.InWindow))
					require.NoError(t, err, "inject %s toward the kernel", s.name)
				}
				time.Sleep(settleSpoof)
				msg := h.xfer.agree(finishTimeout)
				after, err := h.ns()
				require.NoError(t, err, "nstat after")
				verdict := inWindowVerdict(h.xfer, msg)
				moved := kernelMovedCounters(after.Diff(before))
				cell = tableCell(verdict, moved)
				t.Logf("OUTCOME linux-receiver %s %s: %s | kernel counters: %s | %s",
					roleName(kernelServer), name, verdict, strings.Join(moved, " "), h.xfer.outcome())
				if s == nil && verdict != verdictIntact {
					t.Errorf("the control connection (no spoof) did not end intact: %s\n%s\n%s", verdict, msg, h.report())
				}
			})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Linux as the receiver of in-window spoofs (IPv4, 1 subflow, no checksums), %v:\n\n", time.Since(start).Round(time.Second))
	b.WriteString("| spoof | umptcp as client | umptcp as server |\n|---|---|---|\n")
	for _, n := range names {
		o := outcomes[n]
		fmt.Fprintf(&b, "| %s | %s | %s |\n", n, o[0], o[1])
	}
	t.Log("\n" + b.String())
}

// controlName is the row of the connection that carries no spoof.
const controlName = "(no spoof)"

// spoofPtrs returns pointers to hostileSpoofs' entries, in order.
func spoofPtrs() []*spoof {
	out := make([]*spoof, len(hostileSpoofs))
	for i := range hostileSpoofs {
		out[i] = &hostileSpoofs[i]
	}
	return out
}

// The verdicts of inWindowVerdict that are not disagreements.
const (
	verdictIntact    = "intact"
	verdictBothError = "both error"
)

// inWindowVerdict names how the paced transfer p ended, once its agree
// returned msg: verdictIntact, verdictBothError, or "disagree: " and how
// (a stall and which calls were still blocked, a clean EOF after too few
// or wrong bytes, one end failing alone).
func inWindowVerdict(p *pacedTransfer, msg string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	oursErr := p.errs[0] != nil || p.errs[3] != nil
	kernelErr := p.errs[1] != nil || p.errs[2] != nil
	if msg == "" {
		if oursErr || kernelErr {
			return verdictBothError
		}
		return verdictIntact
	}
	if strings.HasPrefix(msg, "stalled") {
		// The calls still blocked when agree gave up got the deadline
		// error of its abort.
		// The other calls had ended by themselves, with an error or not.
		calls := [4]string{"umptcp write", "kernel write", "kernel read", "umptcp read"}
		var stuck, failed []string
		for i, err := range p.errs {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				stuck = append(stuck, calls[i])
			case err != nil:
				failed = append(failed, calls[i])
			}
		}
		v := "disagree: stall, blocked: " + strings.Join(stuck, ", ")
		if len(failed) > 0 {
			v += "; failed: " + strings.Join(failed, ", ")
		}
		return v
	}
	var how []string
	short := func(who string, sent, got Result) {
		if got.N != sent.N {
			how = append(how, fmt.Sprintf("%s read a clean EOF after %d of %d bytes", who, got.N, sent.N))
		} else if got.Sum != sent.Sum {
			how = append(how, fmt.Sprintf("%s read %d corrupted bytes and a clean EOF", who, got.N))
		}
	}
	if p.errs[3] == nil {
		short("umptcp", p.sent[1], p.got[1])
	}
	if p.errs[2] == nil && !kernelErr {
		short("the kernel", p.sent[0], p.got[0])
	}
	switch {
	case oursErr && !kernelErr:
		how = append(how, "only umptcp failed")
	case kernelErr && !oursErr:
		how = append(how, "only the kernel failed")
	}
	return "disagree: " + strings.Join(how, "; ")
}

// kernelMovedCounters returns the "name=delta" of the kernel's MPTCP
// counters and reset counters (ResetCounters, challenge ACKs) that moved
// in diff, sorted; MPTcpExtMPCurrEstab, which counts connections open
// rather than events, is left out.
func kernelMovedCounters(diff map[string]int64) []string {
	keep := map[string]int64{}
	for name, v := range diff {
		if name == "MPTcpExtMPCurrEstab" {
			continue // a gauge, not an event: -1 when the connection ends
		}
		if strings.HasPrefix(name, "MPTcpExt") || name == "TcpExtTCPChallengeACK" {
			keep[name] = v
		}
	}
	for _, name := range ResetCounters {
		if v, ok := diff[name]; ok {
			keep[name] = v
		}
	}
	return NonZero(keep)
}

// oursMovedCounters returns the "name=delta" of our stack's counters
// that moved from before to after, sorted.
func oursMovedCounters(before, after map[string]uint64) []string {
	var out []string
	for name, v := range after {
		if v != before[name] {
			out = append(out, fmt.Sprintf("%s=%d", name, int64(v-before[name])))
		}
	}
	sort.Strings(out)
	return out
}

// tableCell is a verdict and the counters that moved, for a table cell.
func tableCell(verdict string, moved []string) string {
	if len(moved) == 0 {
		return verdict
	}
	return verdict + " (" + strings.Join(moved, " ") + ")"
}
