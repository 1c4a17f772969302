package stack_test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
)

// csumNet is a client and a server stack with DSS checksums on, joined by
// n emulated paths (path i: 10.9.i.1 to 10.9.i.2); cEnds[i].SetParams
// changes what the client sends on path i, sEnds[i] the other way.
type csumNet struct {
	client, server *stack.Stack
	cEnds, sEnds   []*tun.Endpoint
}

func newCsumNet(t *testing.T, n int, p tun.LinkParams, csum bool) *csumNet {
	t.Helper()
	net := &csumNet{}
	var cl, sl []stack.Link
	for i := 0; i < n; i++ {
		a, b := tun.NewPipe(p, p)
		net.cEnds, net.sEnds = append(net.cEnds, a), append(net.sEnds, b)
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.2/24", i))}})
	}
	var err error
	net.client, err = stack.New(stack.Config{Links: cl, Checksum: csum})
	require.NoError(t, err)
	net.server, err = stack.New(stack.Config{Links: sl, Checksum: csum})
	require.NoError(t, err)
	t.Cleanup(func() { net.client.Close(); net.server.Close() })
	return net
}

// waitMIB waits until counter c of s reaches want.
func waitMIB(t *testing.T, s *stack.Stack, c subflow.Counter, want uint64, who string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for mib(s, c) < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, want, mib(s, c), "%s %s", who, c.Name())
}

// TestMPFailSingleSubflow: a middlebox rewrites one data segment of the
// only subflow (TCP checksum fixed). The receiver's DSS checksum fails: it
// sends MP_FAIL, never delivers the mapping, and the connection falls back
// to TCP with the sender's infinite mapping. The application reads every
// byte before the failed mapping, intact, then an error wrapping
// ErrChecksum (the sender does not send the lost bytes again); the other
// direction carries on as plain TCP, intact, to a clean EOF.
func TestMPFailSingleSubflow(t *testing.T) {
	n := newCsumNet(t, 1, tun.LinkParams{Delay: time.Millisecond}, true)
	c1, c2 := dialAccept(t, n.client, n.server, "10.9.0.2")
	require.True(t, c2.Stats().Checksum)
	const corruptAt = 1 << 20
	n.cEnds[0].SetParams(tun.LinkParams{Delay: time.Millisecond, CorruptAfter: corruptAt, CorruptSegments: 1})

	const size = 4 << 20
	sent, err := io.ReadAll(newStream(9, size))
	require.NoError(t, err)
	werr := make(chan error, 1)
	go func() {
		_, err := c1.Write(sent)
		if err == nil {
			err = c1.CloseWrite()
		}
		werr <- err
	}()
	c2.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(c2)
	require.ErrorIs(t, err, stack.ErrChecksum)
	t.Logf("read %d bytes, then: %v", len(got), err)
	require.EqualValues(t, 1, n.cEnds[0].Stats().Corrupted)
	require.Less(t, len(got), size)
	require.GreaterOrEqual(t, len(got), corruptAt-(64<<10), "everything before the failed mapping")
	require.True(t, bytes.Equal(sent[:len(got)], got), "only intact bytes were delivered")
	select {
	case err := <-werr:
		require.NoError(t, err, "the sender's writes go on after the fallback")
	case <-time.After(60 * time.Second):
		t.Fatal("the sender's Write did not complete")
	}

	// Both ends agree on what happened (the receiver: checksum error,
	// MP_FAIL out, the echo and the infinite mapping in; the sender: the
	// MP_FAIL in, its echo and the infinite mapping out).
	waitMIB(t, n.server, subflow.DataCsumErr, 1, "receiver")
	waitMIB(t, n.server, subflow.MPFailTx, 1, "receiver")
	waitMIB(t, n.server, subflow.DSSCorruptionFallback, 1, "receiver")
	waitMIB(t, n.server, subflow.MPFailRx, 1, "receiver")
	waitMIB(t, n.server, subflow.InfiniteMapRx, 1, "receiver")
	waitMIB(t, n.client, subflow.MPFailRx, 1, "sender")
	waitMIB(t, n.client, subflow.MPFailTx, 1, "sender")
	waitMIB(t, n.client, subflow.InfiniteMapTx, 1, "sender")
	require.Zero(t, mib(n.client, subflow.DataCsumErr))
	require.Zero(t, mib(n.server, subflow.InfiniteMapTx))
	require.False(t, c1.MultipathTCP())
	require.False(t, c2.MultipathTCP())
	t.Logf("fallback: %q / %q", c1.FallbackReason(), c2.FallbackReason())

	// The other direction goes on as plain TCP: every byte, then EOF.
	back, err := io.ReadAll(newStream(3, 2<<20))
	require.NoError(t, err)
	go func() { c2.Write(back); c2.CloseWrite() }()
	c1.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err = io.ReadAll(c1)
	require.NoError(t, err)
	require.True(t, bytes.Equal(back, got), "reverse direction intact (%d of %d bytes)", len(got), len(back))
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
	requireDone(t, c1, "sender")
	requireDone(t, c2, "receiver")
}

// TestMPFailTwoSubflows: the middlebox rewrites data on the second of two
// subflows. The receiver resets that subflow with MP_FAIL (and MP_TCPRST);
// the sender sends what was never DATA_ACKed again on the other subflow:
// both directions complete intact.
func TestMPFailTwoSubflows(t *testing.T) {
	p := tun.LinkParams{Rate: 100e6, Delay: 2 * time.Millisecond}
	n := newCsumNet(t, 2, p, true)
	c1, c2 := dialAccept(t, n.client, n.server, "10.9.0.2")
	waitSubflows(t, 2, c1, c2)
	bad := p
	bad.CorruptAfter, bad.CorruptSegments = 128<<10, 1
	n.cEnds[1].SetParams(bad)
	exchange(t, c1, c2, 8<<20)
	require.EqualValues(t, 1, n.cEnds[1].Stats().Corrupted)
	waitMIB(t, n.server, subflow.DataCsumErr, 1, "receiver")
	waitMIB(t, n.server, subflow.MPFailTx, 1, "receiver")
	waitMIB(t, n.server, subflow.DSSCorruptionReset, 1, "receiver")
	waitMIB(t, n.client, subflow.MPFailRx, 1, "sender")
	require.Zero(t, mib(n.server, subflow.DSSCorruptionFallback))
	require.Zero(t, mib(n.client, subflow.InfiniteMapTx))
	require.True(t, c1.MultipathTCP())
	require.True(t, c2.MultipathTCP())
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
}
