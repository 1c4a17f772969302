package stack_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// stalledPM is a path manager that stops at the first of the peer's
// signals until released: the peer's signals then pile up behind it.
type stalledPM struct {
	*pm.Manager
	once    sync.Once
	stalled chan struct{} // closed when a signal reached it
	release chan struct{}
}

func (s *stalledPM) HandleEvent(c pm.Conn, e pm.Event) {
	if e.Kind == pm.Removed || e.Kind == pm.Announced {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	s.Manager.HandleEvent(c, e)
}

// TestSignalStormBounded: an on-path attacker follows each of the client's
// data segments with in-window REMOVE_ADDRs (they need no HMAC) naming an
// address nobody has, faster than a (stalled) path manager takes them.
// What does not fit the connection's signal queue is dropped and counted
// (RmAddrDrop), and once the path manager goes on, the connection carries
// data intact.
func TestSignalStormBounded(t *testing.T) {
	a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	sp := newSpoofer(b)
	spm := &stalledPM{Manager: pm.New(nil, pm.DefaultLimits), stalled: make(chan struct{}), release: make(chan struct{})}
	released := false
	t.Cleanup(func() {
		if !released {
			close(spm.release)
		}
	})
	client, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	server, err := stack.New(stack.Config{PathManager: spm,
		Links: []stack.Link{{Endpoint: sp, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	t.Cleanup(func() { client.Close(); server.Close() })
	c1, c2 := dialAccept(t, client, server, "10.9.0.2")

	const perSegment, most = 8, 4000
	var sent atomic.Int64
	rm := option.RemoveAddr{N: 1}
	rm.IDs[0] = 200 // no address of the client's
	storm := make([][]byte, perSegment)
	for i := range storm {
		storm[i] = rm.Append(nil)
	}
	sp.setPick(func(seg header.TCP, n int, d option.DSS, ok bool) [][]byte {
		if !ok || n == 0 || sent.Load() >= most {
			return nil
		}
		sent.Add(perSegment)
		return storm
	})
	// Traffic for the storm to follow; the exchange waits for the release.
	done := make(chan struct{})
	go func() {
		defer close(done)
		exchangeWithin(t, c1, c2, 4<<20, 60*time.Second)
	}()
	select {
	case <-spm.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no forged REMOVE_ADDR reached the path manager")
	}
	require.Eventually(t, func() bool { return sent.Load() >= most }, 30*time.Second, 10*time.Millisecond,
		"the storm: %d REMOVE_ADDRs forged", sent.Load())
	time.Sleep(100 * time.Millisecond) // the last ones through the layer
	drops := server.MIB()[subflow.RmAddrDrop.Name()]
	rx := server.MIB()[subflow.RmAddr.Name()]
	t.Logf("%d REMOVE_ADDRs forged: %d received, %d dropped from a full queue", sent.Load(), rx, drops)
	require.Greater(t, drops, uint64(0), "a full signal queue drops")
	require.GreaterOrEqual(t, rx-drops, uint64(1), "the queue holds some")
	require.LessOrEqual(t, rx-drops, uint64(300), "at most the queue's bound (256) waits for the path manager")
	released = true
	close(spm.release)
	<-done
	require.Len(t, c2.Stats().Subflows, 1)
}
