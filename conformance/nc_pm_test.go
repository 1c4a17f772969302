package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNCEndpointsAgainstKernel runs the built `umptcp nc` with two TUN
// devices and the path-manager flags exactly as a user types them, against
// a kernel MPTCP peer in the same namespace:
//   - nc -l --endpoint B,signal: our server announces its second address,
//     the kernel client (add_addr_accepted raised) joins it;
//   - nc client --endpoint A,subflow --limits ...,add_addr_accepted=1: the
//     kernel server announces its second address, nc echoes and joins it
//     (and no subflow of its own from A: A is the initial address).
//
// Data is checked both ways, nc -v reports both subflows and its counters,
// the kernel's counters agree, and the pcap shows ADD_ADDR and its echo.
func TestNCEndpointsAgainstKernel(t *testing.T) {
	RequireRoot(t)
	bin := buildUmptcp(t)
	for _, listen := range []bool{true, false} {
		t.Run(map[bool]string{true: "server-signal", false: "client-joins-announced"}[listen], func(t *testing.T) {
			rig := NewRig(t, RigOptions{Name: "ncpm"})
			ip := func(args ...string) {
				t.Helper()
				out, err := rig.NS.Exec(rig.Ctx, "ip", args...)
				require.NoError(t, err, "ip %v: %s", args, out)
			}
			ip("mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")
			const size = 4 << 20
			n := rand.IntN(1e5)
			devA, devB := fmt.Sprintf("umpa%d", n), fmt.Sprintf("umpb%d", n)
			pcap := filepath.Join(t.TempDir(), "nc.pcap")
			args := []string{"netns", "exec", rig.NS.Name(), bin, "nc", "-v", "--pcap", pcap,
				"--tun", devA + ",10.83.0.2/24,10.83.0.1", "--tun", devB + ",10.84.0.2/24,10.84.0.1"}
			port := 7000 + rand.IntN(1000)
			kernelDone := make(chan error, 1)
			var kernelGot Result
			kernelSide := func(c net.Conn) {
				defer c.Close()
				var err error
				kernelGot, err = sendReceive(c, 2, size)
				kernelDone <- err
			}
			if listen {
				args = append(args, "-l", "--endpoint", "10.84.0.2,signal", strconv.Itoa(port))
				go func() {
					c, err := dialWhenListening(rig, "tcp4", "10.83.0.2:"+strconv.Itoa(port))
					if err != nil {
						kernelDone <- err
						return
					}
					kernelSide(c)
				}()
			} else {
				args = append(args, "--endpoint", "10.83.0.2,subflow", "--limits", "subflows=2,add_addr_accepted=1", "10.83.0.1", strconv.Itoa(port))
				ln, err := ListenMPTCP(rig.NS, "tcp4", "0.0.0.0:"+strconv.Itoa(port))
				require.NoError(t, err)
				defer ln.Close()
				go func() {
					c, err := ln.Accept()
					if err != nil {
						kernelDone <- err
						return
					}
					kernelSide(c)
				}()
			}
			before := rig.Nstat()
			ctx, cancel := context.WithTimeout(rig.Ctx, 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "ip", args...)
			if !listen {
				// The kernel's signal endpoint, added before nc creates
				// the device that will carry the address: the kernel
				// announces it when the connection is established.
				ip("mptcp", "endpoint", "add", "10.84.0.1", "signal")
			}
			// nc reads its input only once connected; the stream is sent
			// after the join had a moment to come up (the second half of
			// the data then uses it).
			cmd.Stdin = io.MultiReader(Stream(1, size/2), delayedReader{2 * time.Second}, io.LimitReader(streamTail(1, size), size-size/2))
			got := sha256.New()
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = got, &stderr
			require.NoError(t, cmd.Run(), "umptcp nc %v: %s", args, stderr.String())
			require.NoError(t, <-kernelDone)
			want := sha256.New()
			io.Copy(want, Stream(1, size))
			wantKernel := sha256.New()
			io.Copy(wantKernel, Stream(2, size))
			require.Equal(t, want.Sum(nil), kernelGot.Sum[:], "kernel received what nc read from stdin")
			require.Equal(t, wantKernel.Sum(nil), got.Sum(nil), "nc wrote what the kernel sent")

			d := rig.Nstat().Diff(before)
			out := stderr.String() + fmt.Sprintf("\nkernel counters: %v", NonZero(d))
			require.Contains(t, out, "using MPTCP", out)
			require.Contains(t, out, "2 subflow(s)", out)
			require.Contains(t, out, "10.84.0.", out)
			if listen {
				require.Contains(t, out, "MPTcpExtAddAddrTx=", out)
				require.Contains(t, out, "MPTcpExtEchoAdd=1", out)
				require.Contains(t, out, "MPTcpExtMPJoinSynRx=1", out)
				require.Equal(t, int64(1), d["MPTcpExtAddAddr"], "%v", NonZero(d))
				require.Equal(t, int64(1), d["MPTcpExtMPJoinSynTx"], "%v", NonZero(d))
			} else {
				require.Contains(t, out, "MPTcpExtAddAddr=1", out)
				require.Contains(t, out, "MPTcpExtEchoAddTx=1", out)
				require.Contains(t, out, "MPTcpExtMPJoinSynTx=1", out)
				require.Equal(t, int64(1), d["MPTcpExtEchoAdd"], "%v", NonZero(d))
				require.Equal(t, int64(1), d["MPTcpExtMPJoinSynRx"], "%v", NonZero(d))
			}
			require.Equal(t, 1, tsharkCount(t, pcap, "tcp.options.mptcp.subtype == 3 && tcp.options.mptcp.echo == 0"), "one ADD_ADDR")
			require.Equal(t, 1, tsharkCount(t, pcap, "tcp.options.mptcp.subtype == 3 && tcp.options.mptcp.echo == 1"), "one echo")
			require.Equal(t, 1, tsharkCount(t, pcap, "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.options.mptcp.subtype == 1"), "one MP_JOIN SYN")
		})
	}
}

// delayedReader returns EOF after sleeping once: in an io.MultiReader it
// pauses the stream.
type delayedReader struct{ d time.Duration }

func (r delayedReader) Read([]byte) (int, error) {
	time.Sleep(r.d)
	return 0, io.EOF
}

// streamTail is Stream(seed, n) without its first n/2 bytes.
func streamTail(seed uint64, n int64) io.Reader {
	s := Stream(seed, n)
	io.CopyN(io.Discard, s, n/2)
	return s
}
