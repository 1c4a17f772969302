package stack_test

import (
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestSpoofedRemoveAllAddrs: one REMOVE_ADDR naming every address of the
// client (forged in the window on a path of the server's) closes all
// but one of the server's subflows: the connection lives on and carries
// data intact. Before the fix both went: the guard counted a subflow as
// live until its reader noticed the reset, so each ID in turn found
// "another" subflow.
func TestSpoofedRemoveAllAddrs(t *testing.T) {
	p := tun.LinkParams{Delay: time.Millisecond}
	var cl, sl []stack.Link
	var sps []*spoofer
	for i := 0; i < 2; i++ {
		a, b := tun.NewPipe(p, p)
		sp := newSpoofer(b)
		sps = append(sps, sp)
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: sp, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.2/24", i))}})
	}
	client, err := stack.New(stack.Config{Links: cl})
	require.NoError(t, err)
	server, err := stack.New(stack.Config{Links: sl})
	require.NoError(t, err)
	t.Cleanup(func() { client.Close(); server.Close() })
	c1, c2 := dialAccept(t, client, server, "10.9.0.2")
	waitSubflows(t, 2, c1, c2)
	var rm option.RemoveAddr
	for _, s := range c2.PathManager().Subflows() {
		rm.IDs[rm.N] = s.RemoteID
		rm.N++
	}
	require.EqualValues(t, 2, rm.N)
	var fired atomic.Bool
	// On whichever path carries the next segment with a DSS: the
	// scheduler may put the write below on either.
	for _, sp := range sps {
		sp.setPick(func(seg header.TCP, n int, d option.DSS, ok bool) [][]byte {
			if !ok || !fired.CompareAndSwap(false, true) {
				return nil
			}
			return [][]byte{rm.Append(nil)}
		})
	}
	// Traffic makes the client send a segment for the spoof to follow.
	go c1.Write([]byte("x"))
	buf := make([]byte, 1)
	_, err = io.ReadFull(c2, buf)
	require.NoError(t, err)
	waitFor(t, "the forged REMOVE_ADDR", 5*time.Second, func() bool { return fired.Load() && len(c2.PathManager().Subflows()) < 2 })
	time.Sleep(200 * time.Millisecond) // the removal's resets take effect
	require.Len(t, c2.PathManager().Subflows(), 1, "one subflow stays")
	exchangeWithin(t, c1, c2, 4<<20, 30*time.Second)
}
