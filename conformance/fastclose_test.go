package conformance

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MP_FASTCLOSE (RFC 8684 §3.5) and MP_TCPRST (§3.6) against the Linux
// kernel: umptcp aborts and the kernel's read fails with ECONNRESET; the
// kernel aborts and ours fails with the fastclose error; subflow resets
// carry reasons both ways. Counters are compared exactly: one subflow,
// one RST each way at most.

// fcWait bounds each wait of these tests for a read to fail or a counter
// to move.
const fcWait = 15 * time.Second

// oursMIB is one of our stack's counters.
func oursMIB(u *umptcpRig, c subflow.Counter) int64 { return int64(u.stack.MIB()[c.Name()]) }

// warmFastclose exchanges a few bytes each way and reads them all, so that
// the connection is fully established and nothing is in flight.
func warmFastclose(t *testing.T, ours *stack.Conn, kernel net.Conn) {
	t.Helper()
	ping, pong := []byte("ping from umptcp"), []byte("pong from the kernel")
	_, err := ours.Write(ping)
	require.NoError(t, err)
	kernel.SetReadDeadline(time.Now().Add(fcWait))
	_, err = io.ReadFull(kernel, make([]byte, len(ping)))
	require.NoError(t, err, "kernel read")
	_, err = kernel.Write(pong)
	require.NoError(t, err)
	ours.SetReadDeadline(time.Now().Add(fcWait))
	_, err = io.ReadFull(ours, make([]byte, len(pong)))
	require.NoError(t, err, "umptcp read")
	ours.SetReadDeadline(time.Time{})
	kernel.SetReadDeadline(time.Time{})
}

// readFails reads from c until an error (at most fcWait) and returns it.
func readFails(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(fcWait))
	_, err := io.Copy(io.Discard, c)
	require.Error(t, err, "a reset is not a clean end of stream")
	var ne net.Error
	if errors.As(err, &ne) {
		require.False(t, ne.Timeout(), "the reset was never noticed: %v", err)
	}
	return err
}

// TestUmptcpKernelFastclose: umptcp's Conn.Abort against a kernel MPTCP
// socket, as client and as server. The kernel takes our RST with
// MP_FASTCLOSE (our key for it checks) and MP_TCPRST: its read fails with
// ECONNRESET, it counts exactly one MPFastcloseRx and one MPRstRx, we one
// MPFastcloseTx and one MPRstTx.
func TestUmptcpKernelFastclose(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		t.Run(map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer], func(t *testing.T) {
			u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
			ours, kernel := u.connect(t, kernelServer)
			requireKernelMPTCP(t, kernel, false)
			requireOursMPTCP(t, ours, kernel, false)
			warmFastclose(t, ours, kernel)
			before := u.Nstat()
			fcTx, rstTx := oursMIB(u, subflow.MPFastcloseTx), oursMIB(u, subflow.MPRstTx)

			require.NoError(t, ours.Abort())
			err := readFails(t, kernel)
			t.Logf("kernel read after our Abort: %v", err)
			require.ErrorIs(t, err, syscall.ECONNRESET, "the kernel's read")

			_, err = ours.Read(make([]byte, 1))
			require.ErrorIs(t, err, stack.ErrAborted)
			_, err = ours.Write([]byte("x"))
			require.ErrorIs(t, err, stack.ErrAborted)

			diff := u.Nstat().Diff(before)
			t.Logf("kernel counters: %v", NonZero(diff))
			require.EqualValues(t, 1, diff["MPTcpExtMPFastcloseRx"], "kernel MPFastcloseRx: %v", NonZero(diff))
			require.EqualValues(t, 1, diff["MPTcpExtMPRstRx"], "kernel MPRstRx: %v", NonZero(diff))
			require.EqualValues(t, 0, diff["MPTcpExtMPFastcloseTx"], "kernel MPFastcloseTx: %v", NonZero(diff))
			require.EqualValues(t, 1, oursMIB(u, subflow.MPFastcloseTx)-fcTx, "our MPFastcloseTx")
			require.EqualValues(t, 1, oursMIB(u, subflow.MPRstTx)-rstTx, "our MPRstTx")
			require.Equal(t, "unspecified", ours.Stats().Subflows[0].ResetReason)
			require.NoError(t, WaitQuiet(u.Ctx, u.NS), "the kernel's sockets are gone")
		})
	}
}

// TestUmptcpKernelFastcloseFromKernel: the kernel aborts, as client and as
// server, by the two ways Linux 6.18 sends MP_FASTCLOSE from close():
// SO_LINGER {on, 0}, and unread data in its receive queue
// (__mptcp_close); and by connect(AF_UNSPEC) (mptcp_disconnect). Our Read fails with the fastclose error (ECONNRESET)
// and our counters match the kernel's: MPFastcloseRx = its MPFastcloseTx
// (= 1), MPRstRx = its MPRstTx (= 1); the subflow reports the kernel's
// reset reason.
func TestUmptcpKernelFastcloseFromKernel(t *testing.T) {
	for _, how := range []string{"Linger0", "UnreadData", "ConnectUnspec"} {
		for _, kernelServer := range []bool{true, false} {
			t.Run(how+"/"+map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer], func(t *testing.T) {
				u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
				ours, kernel := u.connect(t, kernelServer)
				requireKernelMPTCP(t, kernel, false)
				warmFastclose(t, ours, kernel)
				switch how {
				case "Linger0":
					tc, ok := kernel.(*net.TCPConn)
					require.True(t, ok, "kernel socket is %T", kernel)
					require.NoError(t, tc.SetLinger(0))
				case "UnreadData":
					// RCV.NXT before the write: read after it, the data
					// may have arrived already, and it never moves again.
					info0, err := KernelMPTCPInfo(kernel)
					require.NoError(t, err)
					_, err = ours.Write([]byte("the kernel never reads this"))
					require.NoError(t, err)
					if !poll(u.Ctx, fcWait, func() bool {
						info, err := KernelMPTCPInfo(kernel)
						return err == nil && info.RcvNxt > info0.RcvNxt
					}) {
						t.Fatalf("the kernel never received our data")
					}
				}
				before := u.Nstat()
				fcRx, rstRx := oursMIB(u, subflow.MPFastcloseRx), oursMIB(u, subflow.MPRstRx)

				if how == "ConnectUnspec" {
					require.NoError(t, KernelDisconnect(kernel))
					defer kernel.Close()
				} else {
					require.NoError(t, kernel.Close())
				}
				err := readFails(t, ours)
				t.Logf("our read after the kernel's close: %v", err)
				require.ErrorIs(t, err, stack.ErrPeerFastclose)
				require.ErrorIs(t, err, syscall.ECONNRESET)
				_, err = ours.Write([]byte("x"))
				require.ErrorIs(t, err, stack.ErrPeerFastclose)
				select {
				case <-ours.Done():
				case <-time.After(fcWait):
					t.Fatal("our connection did not end after the kernel's fastclose")
				}

				diff := u.Nstat().Diff(before)
				t.Logf("kernel counters: %v", NonZero(diff))
				require.EqualValues(t, 1, diff["MPTcpExtMPFastcloseTx"], "kernel MPFastcloseTx: %v", NonZero(diff))
				require.EqualValues(t, diff["MPTcpExtMPFastcloseTx"], oursMIB(u, subflow.MPFastcloseRx)-fcRx, "our MPFastcloseRx vs the kernel's MPFastcloseTx")
				require.EqualValues(t, diff["MPTcpExtMPRstTx"], oursMIB(u, subflow.MPRstRx)-rstRx, "our MPRstRx vs the kernel's MPRstTx")
				require.Zero(t, u.stack.MIB()[subflow.MPFastcloseBadKey.Name()], "our MPFastcloseBadKey")
				st := ours.Stats().Subflows[0]
				require.Equal(t, "unspecified", st.PeerResetReason, "the kernel's MP_TCPRST reason on our subflow")
				require.Equal(t, "", st.ResetReason, "we do not answer a RST")
			})
		}
	}
}

// TestUmptcpKernelTCPRST: subflow resets without MP_FASTCLOSE carry
// MP_TCPRST both ways. The kernel kills its subflow socket (`ss -K`): we
// count its MP_TCPRST ("unspecified", as Linux 6.18 sends it there) and
// show its reason on the subflow. Our stack closes (every connection
// reset without fastclose: gVisor's RST, decorated): the kernel counts
// our MP_TCPRST.
func TestUmptcpKernelTCPRST(t *testing.T) {
	t.Run("KernelResets", func(t *testing.T) {
		u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
		ours, kernel := u.connect(t, true)
		warmFastclose(t, ours, kernel)
		before := u.Nstat()
		rstRx := oursMIB(u, subflow.MPRstRx)
		ctx, cancel := context.WithTimeout(u.Ctx, fcWait)
		defer cancel()
		out, err := u.NS.Exec(ctx, "ss", "-K", "-t", "-n", "dst", u.fam.stack.Addr().String())
		require.NoError(t, err, "ss -K: %s", out)
		t.Logf("ss -K:\n%s", out)

		err = readFails(t, ours)
		t.Logf("our read after ss -K: %v", err)
		require.ErrorIs(t, err, syscall.ECONNRESET)
		diff := u.Nstat().Diff(before)
		t.Logf("kernel counters: %v", NonZero(diff))
		require.EqualValues(t, 1, diff["MPTcpExtMPRstTx"], "kernel MPRstTx: %v", NonZero(diff))
		require.EqualValues(t, diff["MPTcpExtMPRstTx"], oursMIB(u, subflow.MPRstRx)-rstRx, "our MPRstRx vs the kernel's MPRstTx")
		require.EqualValues(t, diff["MPTcpExtMPFastcloseTx"], oursMIB(u, subflow.MPFastcloseRx), "our MPFastcloseRx vs the kernel's MPFastcloseTx")
		st := ours.Stats().Subflows[0]
		t.Logf("our subflow: %+v", st)
		require.Equal(t, "unspecified", st.PeerResetReason, "the kernel's MP_TCPRST reason on our subflow")
	})

	for _, kernelServer := range []bool{true, false} {
		t.Run("OursReset/"+map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer], func(t *testing.T) {
			u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
			ours, kernel := u.connect(t, kernelServer)
			warmFastclose(t, ours, kernel)
			before := u.Nstat()
			rstTx := oursMIB(u, subflow.MPRstTx)
			require.NoError(t, u.stack.Close()) // resets every connection (no MP_FASTCLOSE)
			// Linux keeps an MPTCP connection whose last subflow was reset
			// without MP_FASTCLOSE (the peer may join again): its read does
			// not fail, its counters show the MP_TCPRST.
			if !poll(u.Ctx, fcWait, func() bool { return u.Nstat().Diff(before)["MPTcpExtMPRstRx"] > 0 }) {
				t.Fatalf("the kernel never counted our MP_TCPRST: %v", NonZero(u.Nstat().Diff(before)))
			}
			diff := u.Nstat().Diff(before)
			t.Logf("kernel counters: %v", NonZero(diff))
			require.EqualValues(t, 1, diff["MPTcpExtMPRstRx"], "kernel MPRstRx: %v", NonZero(diff))
			require.EqualValues(t, 0, diff["MPTcpExtMPFastcloseRx"], "kernel MPFastcloseRx: %v", NonZero(diff))
			require.EqualValues(t, 1, oursMIB(u, subflow.MPRstTx)-rstTx, "our MPRstTx")
			require.Equal(t, "unspecified", ours.Stats().Subflows[0].ResetReason)
		})
	}
}

// TestUmptcpKernelFastcloseTwoSubflows: Abort with a join up (umptcp as
// client; the kernel as client would open its own join the same way). One
// RST with MP_FASTCLOSE and MP_TCPRST per subflow, counted per RST as
// Linux counts: we send two. The kernel counts each one that reaches a
// subflow still open (its first resets the other subflow too, so one or
// two) and its read fails with ECONNRESET.
func TestUmptcpKernelFastcloseTwoSubflows(t *testing.T) {
	u := newMultiRig(t, multiFamilies[0], RigOptions{}, stack.Config{}, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{})
	ours, kernel := u.connect(t, true)
	u.waitJoined(t, ours, kernel)
	before := u.Nstat()
	txBefore := u.stack.MIB()[subflow.MPFastcloseTx.Name()]
	require.NoError(t, ours.Abort())
	err := readFails(t, kernel)
	t.Logf("kernel read after our Abort: %v", err)
	require.ErrorIs(t, err, syscall.ECONNRESET)
	diff := u.Nstat().Diff(before)
	t.Logf("kernel counters: %v", NonZero(diff))
	require.EqualValues(t, 2, u.stack.MIB()[subflow.MPFastcloseTx.Name()]-txBefore, "our MPFastcloseTx: one per subflow")
	require.GreaterOrEqual(t, diff["MPTcpExtMPFastcloseRx"], int64(1), "kernel MPFastcloseRx: %v", NonZero(diff))
	require.LessOrEqual(t, diff["MPTcpExtMPFastcloseRx"], int64(2), "kernel MPFastcloseRx: %v", NonZero(diff))
	for _, s := range ours.Stats().Subflows {
		require.Equal(t, "unspecified", s.ResetReason, "subflow %d", s.ID)
	}
}
