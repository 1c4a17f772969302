package conformance

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// RFC 8684 §3.7 against the kernel: a middlebox on our side of the TUN
// (tun.Shape) that rewrites payload (TCP checksum fixed, so only the DSS
// checksum can tell) or strips MPTCP options.

// newShapedRig is newUmptcpRig with our link shaped by out (what we send)
// and in (what we receive), changeable with the returned Shaped.
func newShapedRig(t *testing.T, kernel RigOptions, out, in tun.LinkParams) (*umptcpRig, **tun.Shaped) {
	t.Helper()
	var sh *tun.Shaped
	u := newUmptcpRigWrapped(t, tunFamilies[0], kernel, stack.Config{}, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
		sh = tun.Shape(ep, out, in)
		return sh
	})
	return u, &sh
}

func roleName(kernelServer bool) string {
	if kernelServer {
		return "UmptcpClient"
	}
	return "UmptcpServer"
}

// ourMIB returns the counters of our stack by nstat name.
func ourMIB(u *umptcpRig, c subflow.Counter) uint64 { return u.stack.MIB()[c.Name()] }

func waitOurMIB(t *testing.T, u *umptcpRig, c subflow.Counter, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ourMIB(u, c) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, want, ourMIB(u, c), "ours %s", c.Name())
}

// waitKernel polls the kernel's counters until every named one went up
// (or a few seconds passed) and returns the last difference.
func waitKernel(u *umptcpRig, before Counters, names ...string) map[string]int64 {
	deadline := time.Now().Add(10 * time.Second)
	for {
		diff := u.Nstat().Diff(before)
		ok := true
		for _, n := range names {
			ok = ok && diff[n] > 0
		}
		if ok || time.Now().After(deadline) {
			return diff
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUmptcpKernelMPFailFromKernel: the kernel's data to us is rewritten
// on the only subflow, checksums on. We count DataCsumErr, send MP_FAIL
// and never deliver the mapping; the kernel answers with MP_FAIL and an
// infinite mapping (MPFailRx, MPFailTx, InfiniteMapTx on its side), which
// we receive (InfiniteMapRx): both ends continue as plain TCP. Our
// application reads the bytes before the failed mapping, intact, then an
// error wrapping ErrChecksum: the kernel does not send the lost bytes
// again (it continues its stream as plain TCP).
func TestUmptcpKernelMPFailFromKernel(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		t.Run(roleName(kernelServer), func(t *testing.T) {
			u, sh := newShapedRig(t, RigOptions{Checksum: true}, tun.LinkParams{}, tun.LinkParams{})
			before := u.Nstat()
			ours, kernel := u.connect(t, kernelServer)
			requireOursMPTCP(t, ours, kernel, true)
			const corruptAt, size = 1 << 20, 4 << 20
			(*sh).SetParams(tun.LinkParams{}, tun.LinkParams{CorruptAfter: corruptAt, CorruptSegments: 1})

			sent, err := io.ReadAll(Stream(21, size))
			require.NoError(t, err)
			kw := make(chan error, 1)
			go func() {
				kernel.SetWriteDeadline(time.Now().Add(60 * time.Second))
				_, err := kernel.Write(sent)
				kw <- err
			}()
			ours.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(ours)
			require.ErrorIs(t, err, stack.ErrChecksum)
			t.Logf("read %d bytes, then %v", len(got), err)
			_, in := (*sh).Stats()
			require.EqualValues(t, 1, in.Corrupted)
			require.GreaterOrEqual(t, len(got), corruptAt-(64<<10), "every byte before the failed mapping")
			require.True(t, bytes.Equal(sent[:len(got)], got), "no corrupted byte delivered")
			select {
			case err := <-kw:
				require.NoError(t, err, "the kernel's writes go on")
			case <-time.After(60 * time.Second):
				t.Fatal("kernel write did not complete")
			}

			waitKernel(u, before, "MPTcpExtMPFailRx", "MPTcpExtMPFailTx", "MPTcpExtInfiniteMapTx")
			waitOurMIB(t, u, subflow.DataCsumErr, 1)
			waitOurMIB(t, u, subflow.MPFailTx, 1)
			waitOurMIB(t, u, subflow.DSSCorruptionFallback, 1)
			waitOurMIB(t, u, subflow.MPFailRx, 1)
			// The kernel's infinite mapping reaches us and we fall back
			// too. It rides on data the kernel sized for plain TCP: only
			// the room our MP_CAPABLE MSS leaves for its DSS keeps those
			// segments within the MTU (without it the kernel's own IP
			// output refused them, counting IpFragFails, and the
			// connection stalled).
			waitOurMIB(t, u, subflow.InfiniteMapRx, 1)
			require.False(t, ours.MultipathTCP(), "ours fell back: %q", ours.FallbackReason())
			mp, err := KernelMultipathTCP(kernel)
			require.NoError(t, err)
			require.False(t, mp, "kernel")
			// Everything the kernel sent after its fallback reaches our
			// subflow (the application saw the stream end at the failed
			// mapping already).
			require.Eventually(t, func() bool {
				sc := ours.SubflowCounters()
				return len(sc) == 1 && sc[0].BytesIn >= size
			}, 20*time.Second, 20*time.Millisecond, "the kernel's data after its infinite mapping reaches our subflow: %+v", ours.SubflowCounters())
			diff := u.Nstat().Diff(before)
			t.Logf("kernel: %v; ours: %+v", NonZero(diff), ours.SubflowCounters())
			RequireIncreased(t, diff, "MPTcpExtMPFailRx", "MPTcpExtMPFailTx", "MPTcpExtInfiniteMapTx")
			RequireUnchanged(t, diff, "MPTcpExtDataCsumErr", "MPTcpExtInfiniteMapRx", "IpFragFails")
			ours.Close()
			kernel.Close()
		})
	}
}

// TestUmptcpKernelMPFailToKernel: our data to the kernel is rewritten on
// the only subflow. The kernel counts DataCsumErr and sends MP_FAIL; we
// answer with MP_FAIL and an infinite mapping and both go on as plain TCP.
// Our application's data is what it wrote; the kernel, as Linux does after
// MP_FAIL, hands its application the rewritten segment (the test checks
// that nothing but that one segment's bytes differ). The kernel's data to
// us after the fallback arrives intact.
func TestUmptcpKernelMPFailToKernel(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		t.Run(roleName(kernelServer), func(t *testing.T) {
			u, sh := newShapedRig(t, RigOptions{Checksum: true}, tun.LinkParams{}, tun.LinkParams{})
			before := u.Nstat()
			ours, kernel := u.connect(t, kernelServer)
			requireOursMPTCP(t, ours, kernel, true)
			const corruptAt, size = 1 << 20, 4 << 20
			(*sh).SetParams(tun.LinkParams{CorruptAfter: corruptAt, CorruptSegments: 1}, tun.LinkParams{})

			sent, err := io.ReadAll(Stream(22, size))
			require.NoError(t, err)
			go func() { ours.Write(sent); ours.CloseWrite() }()
			kernel.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(kernel)
			require.NoError(t, err)
			out, _ := (*sh).Stats()
			require.EqualValues(t, 1, out.Corrupted)
			require.Equal(t, len(sent), len(got), "the kernel got as many bytes as we sent")
			first, last := -1, -1
			for i := range sent {
				if sent[i] != got[i] {
					if first < 0 {
						first = i
					}
					last = i
				}
			}
			t.Logf("the kernel's application got bytes %d..%d rewritten (Linux delivers them after MP_FAIL)", first, last)
			if first >= 0 {
				require.Less(t, last-first, 1500, "only the one rewritten segment differs")
			}

			waitOurMIB(t, u, subflow.MPFailRx, 1)
			waitOurMIB(t, u, subflow.MPFailTx, 1)
			waitOurMIB(t, u, subflow.InfiniteMapTx, 1)
			require.Zero(t, ourMIB(u, subflow.DataCsumErr))
			diff := waitKernel(u, before, "MPTcpExtDataCsumErr", "MPTcpExtMPFailTx", "MPTcpExtMPFailRx", "MPTcpExtInfiniteMapRx")
			t.Logf("kernel: %v", NonZero(diff))
			RequireIncreased(t, diff, "MPTcpExtDataCsumErr", "MPTcpExtMPFailTx", "MPTcpExtMPFailRx", "MPTcpExtInfiniteMapRx")
			RequireUnchanged(t, diff, "MPTcpExtInfiniteMapTx")

			// After the fallback the kernel's data reaches us as plain TCP.
			back, err := io.ReadAll(Stream(23, 1<<20))
			require.NoError(t, err)
			go func() {
				kernel.Write(back)
				if hc, ok := kernel.(interface{ CloseWrite() error }); ok {
					hc.CloseWrite()
				}
			}()
			ours.SetReadDeadline(time.Now().Add(60 * time.Second))
			rb, err := io.ReadAll(ours)
			require.NoError(t, err)
			require.True(t, bytes.Equal(back, rb), "kernel to us after the fallback: %d of %d bytes", len(rb), len(back))
			require.False(t, ours.MultipathTCP())
			ours.Close()
			kernel.Close()
		})
	}
}

// TestUmptcpKernelStripSYN: MPTCP options stripped from the handshake in
// one direction or the other: plain TCP on both ends, data intact, and the
// kernel's counters show the fallback when it had offered or seen MPTCP.
func TestUmptcpKernelStripSYN(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		for _, dir := range []string{"Out", "In"} {
			t.Run(roleName(kernelServer)+"/Strip"+dir, func(t *testing.T) {
				var out, in tun.LinkParams
				if dir == "Out" {
					out.StripMPTCP = tun.StripSYN
				} else {
					in.StripMPTCP = tun.StripSYN
				}
				u, sh := newShapedRig(t, RigOptions{}, out, in)
				before := u.Nstat()
				ours, kernel := u.connect(t, kernelServer)
				require.NoError(t, Exchange(u.Ctx, ours, kernel, ExchangeOptions{AtoB: 4 << 20, BtoA: 4 << 20}))
				so, si := (*sh).Stats()
				require.Positive(t, so.Stripped+si.Stripped)
				require.False(t, ours.MultipathTCP(), "ours")
				mp, err := KernelMultipathTCP(kernel)
				require.NoError(t, err)
				require.False(t, mp, "kernel")
				diff := u.Nstat().Diff(before)
				t.Logf("kernel: %v; ours: %q", NonZero(diff), ours.FallbackReason())
				if kernelServer && dir == "Out" {
					RequireUnchanged(t, diff, "MPTcpExtMPCapableSYNRX") // it saw plain TCP only
				} else {
					require.Positive(t, diff["MPTcpExtMPCapableFallbackACK"]+diff["MPTcpExtMPCapableFallbackSYNACK"], "the kernel fell back: %v", NonZero(diff))
				}
				ours.Close()
				kernel.Close()
			})
		}
	}
}

// TestUmptcpKernelStripData: MPTCP options disappear from every non-SYN
// segment half-way through a transfer (in one direction or both) on the
// only subflow: both ends fall back to TCP and every byte arrives intact;
// the kernel counts the fallback (DssFallback or MPCapableDataFallback),
// we count FallbackOptionsStripped.
func TestUmptcpKernelStripData(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		for _, dir := range []string{"Out", "In", "Both"} {
			t.Run(roleName(kernelServer)+"/Strip"+dir, func(t *testing.T) {
				u, sh := newShapedRig(t, RigOptions{}, tun.LinkParams{}, tun.LinkParams{})
				before := u.Nstat()
				ours, kernel := u.connect(t, kernelServer)
				requireOursMPTCP(t, ours, kernel, false)
				var out, in tun.LinkParams
				if dir != "In" {
					out.StripMPTCP = tun.StripData
				}
				if dir != "Out" {
					in.StripMPTCP = tun.StripData
				}
				require.NoError(t, Exchange(u.Ctx, ours, kernel, ExchangeOptions{AtoB: 8 << 20, BtoA: 8 << 20, Midway: func() error {
					(*sh).SetParams(out, in)
					return nil
				}}))
				so, si := (*sh).Stats()
				require.Positive(t, so.Stripped+si.Stripped)
				require.False(t, ours.MultipathTCP(), "ours")
				require.Positive(t, ourMIB(u, subflow.FallbackOptionsStripped), "ours: %q", ours.FallbackReason())
				mp, err := KernelMultipathTCP(kernel)
				require.NoError(t, err)
				require.False(t, mp, "kernel")
				diff := u.Nstat().Diff(before)
				t.Logf("kernel: %v; ours: %q", NonZero(diff), ours.FallbackReason())
				// Which counter depends on the segment the kernel notices
				// first: data without a DSS (DssFallback, or
				// MPCapableDataFallback before any DSS), or an unmapped
				// segment inside a mapping it is consuming, which it
				// treats as corruption (DSSCorruptionFallback).
				require.Positive(t, diff["MPTcpExtDssFallback"]+diff["MPTcpExtMPCapableDataFallback"]+diff["MPTcpExtDSSCorruptionFallback"], "the kernel fell back: %v", NonZero(diff))
				ours.Close()
				kernel.Close()
			})
		}
	}
}
