package conformance

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/stack"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestUmptcpKernelMPPrio: MP_PRIO both ways with the Linux kernel. We turn
// our join into a backup path (Conn.SetBackup): the kernel counts
// MPPrioRx and stops putting data on it. The kernel turns its endpoint into
// a backup (`ip mptcp endpoint change ... backup`): we see the subflow as
// backup and stop putting data on it.
func TestUmptcpKernelMPPrio(t *testing.T) {
	fam := multiFamilies[0]
	const size = 8 << 20
	// moved sends size bytes from a to b and returns what our join
	// subflow carried meanwhile, in the direction that matters.
	moved := func(t *testing.T, u *multiRig, ours *stack.Conn, a, b net.Conn, joinBytes func(stack.SubflowStats) uint64) uint64 {
		before := joinBytes(ours.Stats().Subflows[1])
		ctx, cancel := context.WithTimeout(u.Ctx, 60*time.Second)
		defer cancel()
		require.NoError(t, Exchange(ctx, a, b, ExchangeOptions{AtoB: size}), "%s", u.report(ours))
		return joinBytes(ours.Stats().Subflows[1]) - before
	}
	received := func(s stack.SubflowStats) uint64 { return s.BytesReceived }
	sent := func(s stack.SubflowStats) uint64 { return s.BytesSent }

	t.Run("OursToKernel", func(t *testing.T) {
		u := newMultiRig(t, fam, RigOptions{}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
		ours, kernel := u.connect(t, true)
		join := u.waitJoined(t, ours, kernel)
		before := u.Nstat()
		require.NoError(t, ours.SetBackup(join.ID, true))
		if !poll(u.Ctx, 10*time.Second, func() bool { return u.Nstat().Diff(before)["MPTcpExtMPPrioRx"] >= 1 }) {
			t.Fatalf("the kernel never counted our MP_PRIO: %v", NonZero(u.Nstat().Diff(before)))
		}
		got := moved(t, u, ours, kernel, ours, received)
		t.Logf("the kernel sent %d of %d bytes on the backup subflow", got, size)
		require.Less(t, got, uint64(256<<10), "the kernel kept sending on the subflow we made a backup")
	})

	t.Run("KernelToOurs", func(t *testing.T) {
		// Round-robin would put half of the data on the join: what it
		// sends there after the kernel's MP_PRIO shows whether we honour it.
		u := newMultiRig(t, fam, RigOptions{}, stack.Config{Scheduler: "roundrobin"}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
		ours, kernel := u.connect(t, false)
		u.waitJoined(t, ours, kernel)
		before := u.Nstat()
		u.ip(t, "mptcp", "endpoint", "change", "id", "1", "backup")
		if !poll(u.Ctx, 10*time.Second, func() bool { return ours.Stats().Subflows[1].Backup }) {
			t.Fatalf("our join never became a backup after the kernel's MP_PRIO: kernel counters %v\n%s", NonZero(u.Nstat().Diff(before)), u.report(ours))
		}
		RequireIncreased(t, u.Nstat().Diff(before), "MPTcpExtMPPrioTx")
		got := moved(t, u, ours, ours, kernel, sent)
		t.Logf("we sent %d of %d bytes on the backup subflow", got, size)
		require.Less(t, got, uint64(256<<10), "we kept sending on the subflow the kernel made a backup")
	})
}
