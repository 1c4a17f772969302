package conformance

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/netns"
)

// DefaultTimeout bounds a Rig's context when RigOptions.Timeout is zero.
const DefaultTimeout = 120 * time.Second

// RigOptions configures a Rig's namespace.
type RigOptions struct {
	Name         string            // namespace name part; "rig" if empty
	Checksum     bool              // net.mptcp.checksum_enabled=1
	DisableMPTCP bool              // net.mptcp.enabled=0
	Sysctls      map[string]string // more sysctls, set after the two above
	Timeout      time.Duration     // bounds Ctx; DefaultTimeout if zero
}

// Rig is one fresh network namespace for a test, configured from
// RigOptions, with a context bounding the test's work. Everything is undone
// when the test ends.
type Rig struct {
	T   *testing.T
	NS  *netns.NS
	Ctx context.Context // ends after RigOptions.Timeout or with the test
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel conformance tests need root; run as root (CI does)")
	}
}

// NewRig creates the namespace and sets its sysctls. It skips the test
// unless running as root, and fails it (never skips) if setup fails.
func NewRig(t *testing.T, opts RigOptions) *Rig {
	t.Helper()
	RequireRoot(t)
	name := opts.Name
	if name == "" {
		name = "rig"
	}
	ns, err := netns.New(name)
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("rig: %v", err)
		}
	})
	for _, kv := range opts.sysctls() {
		if err := ns.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return &Rig{T: t, NS: ns, Ctx: ctx}
}

// sysctls lists the key/value pairs to set, in order.
func (o RigOptions) sysctls() [][2]string {
	var kv [][2]string
	if o.Checksum {
		kv = append(kv, [2]string{"net.mptcp.checksum_enabled", "1"})
	}
	if o.DisableMPTCP {
		kv = append(kv, [2]string{"net.mptcp.enabled", "0"})
	}
	for k, v := range o.Sysctls {
		kv = append(kv, [2]string{k, v})
	}
	return kv
}

// Nstat returns the namespace's counters, failing the test on error.
func (r *Rig) Nstat() Counters {
	r.T.Helper()
	c, err := Nstat(r.NS)
	if err != nil {
		r.T.Fatalf("rig: %v", err)
	}
	return c
}

// SSMptcp returns the namespace's MPTCP sockets, failing the test on error.
func (r *Rig) SSMptcp() []SSEntry {
	r.T.Helper()
	e, err := SSMptcp(r.NS)
	if err != nil {
		r.T.Fatalf("rig: %v", err)
	}
	return e
}

// Track closes c when the test ends (closing twice is harmless) and
// returns it.
func Track[C interface{ Close() error }](t testing.TB, c C) C {
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// WaitQuiet waits, polling until ctx ends, for the namespace to have no TCP
// or MPTCP socket other than listeners and TIME-WAIT ones, so that the
// counters of a finished close handshake are final.
func WaitQuiet(ctx context.Context, ns *netns.NS) error {
	var last string
	for {
		out, err := ns.Exec(ctx, "ss", "-H", "-a", "-n", "-t", "-M")
		if err != nil {
			return err
		}
		busy := busySockets(string(out))
		if len(busy) == 0 {
			return nil
		}
		last = strings.Join(busy, "\n")
		select {
		case <-ctx.Done():
			return fmt.Errorf("conformance: %s still has sockets: %s: %w", ns, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// busySockets returns the socket lines of `ss -H -t -M` output ("tcp
// ESTAB …", "mptcp LISTEN …") whose state is neither LISTEN nor TIME-WAIT.
func busySockets(out string) []string {
	var busy []string
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 1 && f[1] != "LISTEN" && f[1] != "TIME-WAIT" {
			busy = append(busy, line)
		}
	}
	return busy
}
