package conformance

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
)

// TestUmptcpKernelFastcloseMidTransfer: our Abort in the middle of a bulk
// transfer, while we send (bytes in flight, unacknowledged) and while the
// kernel sends (its segments keep arriving after our RST). The kernel
// takes our MP_FASTCLOSE, its socket is reset, and the counters agree:
// one RST with MP_FASTCLOSE and MP_TCPRST from us, one of each taken by
// the kernel. What we answer to the segments still arriving for the
// closed subflow are plain RSTs, as Linux's from no socket.
func TestUmptcpKernelFastcloseMidTransfer(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		weSend, kernelServer bool
	}{{"WeSend", true, true}, {"KernelSends", false, true}, {"WeSendAsServer", true, false}, {"KernelSendsToServer", false, false}} {
		weSend := tc.weSend
		t.Run(tc.name, func(t *testing.T) {
			u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
			ours, kernel := u.connect(t, tc.kernelServer)
			warmFastclose(t, ours, kernel)
			before := u.Nstat()
			fcTx, rstTx := oursMIB(u, subflow.MPFastcloseTx), oursMIB(u, subflow.MPRstTx)
			werr := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				deadline := time.Now().Add(fcWait)
				for time.Now().Before(deadline) {
					var err error
					if weSend {
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
			// stay in flight and queued while we abort.
			reader := kernel
			if !weSend {
				reader = ours
			}
			reader.SetReadDeadline(time.Now().Add(fcWait))
			_, err := io.ReadFull(reader, make([]byte, 4<<20))
			require.NoError(t, err)
			require.NoError(t, ours.Abort())

			if weSend {
				require.ErrorIs(t, <-werr, stack.ErrAborted, "our Write")
				require.ErrorIs(t, readFails(t, kernel), syscall.ECONNRESET, "the kernel's read")
			} else {
				// Linux reports a reset once: to the write in progress,
				// or else to the next read.
				if err := <-werr; !errors.Is(err, syscall.ECONNRESET) {
					require.ErrorIs(t, readFails(t, kernel), syscall.ECONNRESET, "the kernel's read (its write: %v)", err)
				}
			}
			require.NoError(t, WaitQuiet(u.Ctx, u.NS), "the kernel's sockets are gone")
			diff := u.Nstat().Diff(before)
			t.Logf("kernel counters: %v; ours %v", NonZero(diff), changedMIB(u.stack))
			require.EqualValues(t, 1, oursMIB(u, subflow.MPFastcloseTx)-fcTx, "our MPFastcloseTx")
			require.EqualValues(t, 1, oursMIB(u, subflow.MPRstTx)-rstTx, "our MPRstTx")
			require.EqualValues(t, 1, diff["MPTcpExtMPFastcloseRx"], "kernel MPFastcloseRx: %v", NonZero(diff))
			require.EqualValues(t, 1, diff["MPTcpExtMPRstRx"], "kernel MPRstRx: %v", NonZero(diff))
		})
	}
}
