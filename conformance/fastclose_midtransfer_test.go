package conformance

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
)

// TestUmptcpKernelFastcloseMidTransfer: an abort in the middle of a bulk
// transfer, by us (Conn.Abort) or by the kernel (close with SO_LINGER
// {on, 0}), while we send (bytes in flight and queued) and while the
// kernel sends (its segments keep arriving after our RST), as client and
// as server. The other side's connection is reset, and the counters of
// both sides agree: one RST with MP_FASTCLOSE and MP_TCPRST sent, one of
// each taken. What either side answers to segments still arriving for
// the closed subflow are plain RSTs.
func TestUmptcpKernelFastcloseMidTransfer(t *testing.T) {
	type tc struct {
		name                          string
		weAbort, weSend, kernelServer bool
	}
	var cases []tc
	for _, weAbort := range []bool{true, false} {
		for _, weSend := range []bool{true, false} {
			for _, kernelServer := range []bool{true, false} {
				name := map[bool]string{true: "WeAbort", false: "KernelAborts"}[weAbort] + "/" +
					map[bool]string{true: "WeSend", false: "KernelSends"}[weSend] + "/" +
					map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer]
				cases = append(cases, tc{name, weAbort, weSend, kernelServer})
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
			ours, kernel := u.connect(t, c.kernelServer)
			warmFastclose(t, ours, kernel)
			before := u.Nstat()
			ourBefore := map[subflow.Counter]int64{}
			for _, k := range []subflow.Counter{subflow.MPFastcloseTx, subflow.MPRstTx, subflow.MPFastcloseRx, subflow.MPRstRx} {
				ourBefore[k] = oursMIB(u, k)
			}
			ourDiff := func(k subflow.Counter) int64 { return oursMIB(u, k) - ourBefore[k] }
			werr := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				deadline := time.Now().Add(fcWait)
				for time.Now().Before(deadline) {
					var err error
					if c.weSend {
						_, err = ours.Write(buf)
					} else {
						_, err = kernel.Write(buf)
					}
					if err != nil {
						werr <- err
						return
					}
				}
				werr <- errors.New("the writer never failed")
			}()
			// The reader takes a part of the stream, then stops: bytes
			// stay in flight and queued while one side aborts.
			var reader net.Conn = kernel
			if !c.weSend {
				reader = ours
			}
			reader.SetReadDeadline(time.Now().Add(fcWait))
			_, err := io.ReadFull(reader, make([]byte, 4<<20))
			require.NoError(t, err)

			if c.weAbort {
				require.NoError(t, ours.Abort())
				if c.weSend {
					require.ErrorIs(t, <-werr, stack.ErrAborted, "our Write")
					require.ErrorIs(t, readFails(t, kernel), syscall.ECONNRESET, "the kernel's read")
				} else if err := <-werr; !errors.Is(err, syscall.ECONNRESET) {
					// Linux reports a reset once: to the write in
					// progress, or else to the next read.
					require.ErrorIs(t, readFails(t, kernel), syscall.ECONNRESET, "the kernel's read (its write: %v)", err)
				}
			} else {
				tcpc, ok := kernel.(*net.TCPConn)
				require.True(t, ok, "kernel socket is %T", kernel)
				require.NoError(t, tcpc.SetLinger(0))
				require.NoError(t, kernel.Close())
				if c.weSend {
					require.ErrorIs(t, <-werr, stack.ErrPeerFastclose, "our Write")
				} else {
					<-werr // the kernel's write on its closed socket
				}
				require.ErrorIs(t, readFails(t, ours), stack.ErrPeerFastclose, "our Read")
			}
			require.NoError(t, WaitQuiet(u.Ctx, u.NS), "the kernel's sockets are gone")
			diff := u.Nstat().Diff(before)
			t.Logf("kernel counters: %v; ours %v %+v", NonZero(diff), changedMIB(u.stack), ours.Stats().Subflows)
			if c.weAbort {
				require.EqualValues(t, 1, ourDiff(subflow.MPFastcloseTx), "our MPFastcloseTx")
				require.EqualValues(t, 1, ourDiff(subflow.MPRstTx), "our MPRstTx")
			} else {
				require.EqualValues(t, 1, diff["MPTcpExtMPFastcloseTx"], "kernel MPFastcloseTx: %v", NonZero(diff))
				require.EqualValues(t, 0, ourDiff(subflow.MPRstTx), "we do not answer the kernel's RST")
			}
			require.EqualValues(t, ourDiff(subflow.MPFastcloseTx), diff["MPTcpExtMPFastcloseRx"], "kernel MPFastcloseRx vs our MPFastcloseTx: %v", NonZero(diff))
			require.EqualValues(t, ourDiff(subflow.MPRstTx), diff["MPTcpExtMPRstRx"], "kernel MPRstRx vs our MPRstTx: %v", NonZero(diff))
			require.EqualValues(t, diff["MPTcpExtMPFastcloseTx"], ourDiff(subflow.MPFastcloseRx), "our MPFastcloseRx vs the kernel's MPFastcloseTx")
			require.EqualValues(t, diff["MPTcpExtMPRstTx"], ourDiff(subflow.MPRstRx), "our MPRstRx vs the kernel's MPRstTx")
		})
	}
}
