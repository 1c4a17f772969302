package stack_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
)

// TestStripSYNFallsBack: a middlebox strips MPTCP options from SYN and
// SYN-ACK (either or both ways): the connection is plain TCP from the
// start, data intact.
func TestStripSYNFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name         string
		client, back tun.StripWhere // client->server, server->client
	}{
		{"SYN", tun.StripSYN, tun.StripNone},
		{"SYN-ACK", tun.StripNone, tun.StripSYN},
		{"both", tun.StripSYN, tun.StripSYN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newCsumNet(t, 1, tun.LinkParams{Delay: time.Millisecond}, false)
			n.cEnds[0].SetParams(tun.LinkParams{Delay: time.Millisecond, StripMPTCP: tc.client})
			n.sEnds[0].SetParams(tun.LinkParams{Delay: time.Millisecond, StripMPTCP: tc.back})
			c1, c2 := dialAccept(t, n.client, n.server, "10.9.0.2")
			exchange(t, c1, c2, 2<<20)
			require.False(t, c1.MultipathTCP())
			require.False(t, c2.MultipathTCP())
			require.NotEmpty(t, c1.FallbackReason())
			require.Positive(t, n.cEnds[0].Stats().Stripped+n.sEnds[0].Stats().Stripped)
			require.NoError(t, c1.Close())
			require.NoError(t, c2.Close())
		})
	}
}

// TestStripDataMidTransfer: the options disappear from every non-SYN
// segment in the middle of a transfer on the only subflow (a middlebox
// appearing on the path). Both ends fall back to TCP; every byte arrives
// intact, in both directions, to a clean EOF.
func TestStripDataMidTransfer(t *testing.T) {
	for _, tc := range []struct {
		name         string
		csum         bool
		client, back tun.StripWhere
	}{
		{"both-ways", false, tun.StripData, tun.StripData},
		{"both-ways-csum", true, tun.StripData, tun.StripData},
		{"client-to-server", false, tun.StripData, tun.StripNone},
		{"server-to-client", false, tun.StripNone, tun.StripData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tun.LinkParams{Rate: 200e6, Delay: time.Millisecond}
			n := newCsumNet(t, 1, p, tc.csum)
			c1, c2 := dialAccept(t, n.client, n.server, "10.9.0.2")
			require.True(t, c1.MultipathTCP())
			flip := time.AfterFunc(150*time.Millisecond, func() {
				a, b := p, p
				a.StripMPTCP, b.StripMPTCP = tc.client, tc.back
				n.cEnds[0].SetParams(a)
				n.sEnds[0].SetParams(b)
			})
			defer flip.Stop()
			defer func() {
				if t.Failed() {
					t.Logf("client %+v %+v %v", c1.Stats(), c1.SubflowCounters(), n.client.MIB())
					t.Logf("server %+v %+v %v", c2.Stats(), c2.SubflowCounters(), n.server.MIB())
				}
			}()
			exchangeWithin(t, c1, c2, 16<<20, 20*time.Second)
			require.Positive(t, n.cEnds[0].Stats().Stripped+n.sEnds[0].Stats().Stripped, "the middlebox acted during the transfer")
			require.False(t, c1.MultipathTCP())
			require.False(t, c2.MultipathTCP())
			stripped := mib(n.client, subflow.FallbackOptionsStripped) + mib(n.server, subflow.FallbackOptionsStripped)
			require.Positive(t, stripped)
			require.Equal(t, stripped, mib(n.client, subflow.DssFallback)+mib(n.server, subflow.DssFallback)+
				mib(n.client, subflow.MPCapableDataFallback)+mib(n.server, subflow.MPCapableDataFallback))
			t.Logf("client %q, server %q", c1.FallbackReason(), c2.FallbackReason())
			require.NoError(t, c1.Close())
			require.NoError(t, c2.Close())
			requireDone(t, c1, "client")
			requireDone(t, c2, "server")
		})
	}
}

// TestStripDataOneOfTwoSubflows: with two subflows, the middlebox strips
// the options from data on the second path: that subflow is reset (no
// fallback is possible with several), the transfer completes intact on the
// first.
func TestStripDataOneOfTwoSubflows(t *testing.T) {
	p := tun.LinkParams{Rate: 100e6, Delay: 2 * time.Millisecond}
	n := newCsumNet(t, 2, p, false)
	c1, c2 := dialAccept(t, n.client, n.server, "10.9.0.2")
	waitSubflows(t, 2, c1, c2)
	bad := p
	bad.StripMPTCP = tun.StripData
	n.cEnds[1].SetParams(bad)
	n.sEnds[1].SetParams(bad)
	exchange(t, c1, c2, 8<<20)
	require.Positive(t, n.cEnds[1].Stats().Stripped)
	require.True(t, c1.MultipathTCP())
	require.True(t, c2.MultipathTCP())
	require.Zero(t, mib(n.client, subflow.FallbackOptionsStripped)+mib(n.server, subflow.FallbackOptionsStripped))
	closed := 0
	for _, c := range []*stack.Conn{c1, c2} {
		for _, s := range c.Stats().Subflows {
			if s.State == "closed" {
				closed++
			}
		}
	}
	require.Positive(t, closed, "the stripped subflow was reset")
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
}
