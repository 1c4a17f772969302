package stack_test

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// mpNet is a client and a server stack joined by several emulated paths:
// path i links 10.9.i.1 (client) and 10.9.i.2 (server).
type mpNet struct {
	client, server *stack.Stack
	cEnds, sEnds   []*tun.Endpoint
	serverAddr     string
}

type mpOptions struct {
	scheduler string
	backup    []bool // per path, client side
}

func newMPNet(t *testing.T, paths []tun.LinkParams, o mpOptions) *mpNet {
	t.Helper()
	n := &mpNet{}
	var cl, sl []stack.Link
	var pf *tun.PcapFile
	if f := os.Getenv("UMPTCP_TEST_PCAP"); f != "" {
		w, err := os.Create(f)
		require.NoError(t, err)
		pf, err = tun.NewPcapFile(w)
		require.NoError(t, err)
		t.Cleanup(func() { pf.Close() })
	}
	for i, p := range paths {
		a, b := tun.NewPipe(p, p)
		n.cEnds, n.sEnds = append(n.cEnds, a), append(n.sEnds, b)
		var ca gvstack.LinkEndpoint = a
		if pf != nil {
			ca = pf.Wrap(a)
		}
		backup := i < len(o.backup) && o.backup[i]
		cl = append(cl, stack.Link{Endpoint: ca, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.1/24", i))}, Backup: backup})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.9.%d.2/24", i))}})
	}
	var err error
	n.client, err = stack.New(stack.Config{Links: cl, Scheduler: o.scheduler})
	require.NoError(t, err)
	n.server, err = stack.New(stack.Config{Links: sl, Scheduler: o.scheduler})
	require.NoError(t, err)
	t.Cleanup(func() { n.client.Close(); n.server.Close() })
	n.serverAddr = "10.9.0.2"
	return n
}

// waitSubflows waits until both ends of the connection have want active
// subflows.
func waitSubflows(t *testing.T, want int, conns ...*stack.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		for {
			active := 0
			for _, s := range c.Stats().Subflows {
				if s.State == "active" {
					active++
				}
			}
			if active == want {
				break
			}
			require.True(t, time.Now().Before(deadline), "%d active subflows, want %d: %+v", active, want, c.Stats().Subflows)
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestMultipathTwoPaths(t *testing.T) {
	n := newMPNet(t, []tun.LinkParams{{Rate: 100e6, Delay: 5 * time.Millisecond}, {Rate: 100e6, Delay: 5 * time.Millisecond}}, mpOptions{})
	c1, c2 := dialAccept(t, n.client, n.server, n.serverAddr)
	require.True(t, c1.MultipathTCP())
	waitSubflows(t, 2, c1, c2)
	exchange(t, c1, c2, 16<<20)
	for _, c := range []*stack.Conn{c1, c2} {
		st := c.Stats()
		t.Logf("%+v", st)
		for _, s := range st.Subflows {
			require.Greater(t, s.BytesSent, uint64(1<<20), "subflow %d carried data", s.ID)
		}
	}
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
}
