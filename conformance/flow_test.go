package conformance

import (
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
)

// TestUmptcpKernelFlowControl: a receiver that stops reading for a while
// makes the sender wait (connection-level flow control: our receive buffer
// fills, the subflow window closes; the kernel's buffers fill the other
// way), and everything arrives intact once it reads again. Both directions,
// both roles.
func TestUmptcpKernelFlowControl(t *testing.T) {
	const size = 32 << 20
	const pause = 1500 * time.Millisecond
	for _, kernelServer := range []bool{true, false} {
		for _, weRead := range []bool{true, false} {
			name := map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer] + map[bool]string{true: "/UmptcpReadsLate", false: "/KernelReadsLate"}[weRead]
			t.Run(name, func(t *testing.T) {
				u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{ReceiveBuffer: 1 << 20})
				before := u.Nstat()
				ours, kernel := u.connect(t, kernelServer)
				var src, dst net.Conn = kernel, ours
				if !weRead {
					src, dst = ours, kernel
				}
				sent := make(chan error, 1)
				go func() {
					_, err := Send(src, 5, size)
					if err == nil {
						err = src.(HalfCloser).CloseWrite()
					}
					sent <- err
				}()
				time.Sleep(pause)
				select {
				case err := <-sent:
					t.Fatalf("the sender finished %d bytes without a reader (err %v): no flow control", size, err)
				default:
				}
				got, err := Receive(dst)
				require.NoError(t, err)
				require.NoError(t, <-sent)
				want := sha256.New()
				io.Copy(want, Stream(5, size))
				require.EqualValues(t, size, got.N)
				require.Equal(t, want.Sum(nil), got.Sum[:])
				require.True(t, ours.MultipathTCP())
				RequireUnchanged(t, u.Nstat().Diff(before), MPCapableErrorCounters...)
			})
		}
	}
}
