package stack_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
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
			// How much each carries is the scheduler's business (the
			// lowest-RTT subflow with room goes first); both must carry.
			require.Greater(t, s.BytesSent, uint64(64<<10), "subflow %d carried data", s.ID)
		}
	}
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
}

// mpSize is what each direction carries in the multipath tests.
func mpSize() int64 {
	if testing.Short() {
		return 4 << 20
	}
	return 64 << 20
}

var schedulers = []string{"default", "roundrobin", "redundant", "blest"}

// Every scheduler carries 64 MiB each way intact over 2 and 4 paths, equal
// and unequal (1:4 rate, 10 ms vs 80 ms), with every path used.
func TestMultipathSchedulers(t *testing.T) {
	// Rates stay modest: two CPUs run both stacks and every link.
	equal := tun.LinkParams{Rate: 100e6, Delay: 5 * time.Millisecond}
	fast := tun.LinkParams{Rate: 80e6, Delay: 10 * time.Millisecond}
	slow := tun.LinkParams{Rate: 20e6, Delay: 80 * time.Millisecond}
	topologies := []struct {
		name  string
		paths []tun.LinkParams
	}{
		{"2-equal", []tun.LinkParams{equal, equal}},
		{"2-unequal", []tun.LinkParams{fast, slow}},
		{"4-mixed", []tun.LinkParams{fast, slow, {Rate: 50e6, Delay: 5 * time.Millisecond}, {Rate: 40e6, Delay: 30 * time.Millisecond}}},
	}
	for _, topo := range topologies {
		for _, sched := range schedulers {
			t.Run(topo.name+"/"+sched, func(t *testing.T) {
				n := newMPNet(t, topo.paths, mpOptions{scheduler: sched})
				c1, c2 := dialAccept(t, n.client, n.server, n.serverAddr)
				waitSubflows(t, len(topo.paths), c1, c2)
				start := time.Now()
				exchangeWithin(t, c1, c2, mpSize(), 240*time.Second)
				el := time.Since(start)
				for _, c := range []*stack.Conn{c1, c2} {
					st := c.Stats()
					require.Len(t, st.Subflows, len(topo.paths))
					for _, s := range st.Subflows {
						// BLEST and the default rightly leave a much slower
						// path idle at times, but not for a whole transfer.
						require.NotZero(t, s.BytesSent, "subflow %d %s->%s carried nothing", s.ID, s.Local, s.Remote)
					}
					for _, k := range c.SubflowCounters() {
						require.Zero(t, k.UnmappedSegments, "%+v", k)
						require.Zero(t, k.MalformedOptions, "%+v", k)
						require.Zero(t, k.ImplausibleDSS, "%+v", k)
					}
				}
				t.Logf("%s: %d MiB each way in %v (%.0f Mbit/s per direction)", sched, mpSize()>>20, el.Round(time.Millisecond), float64(mpSize())*8/el.Seconds()/1e6)
				require.NoError(t, c1.Close())
				require.NoError(t, c2.Close())
			})
		}
	}
}

// cut blackholes path i in both directions.
func (n *mpNet) cut(i int, p tun.LinkParams) {
	p.Blackhole = true
	n.cEnds[i].SetParams(p)
	n.sEnds[i].SetParams(p)
}

// sendOneWay sends size bytes from a to b, calling mid once about a third
// has arrived, and checks the digest.
func sendOneWay(t *testing.T, a, b *stack.Conn, size int64, mid func(), limit time.Duration) {
	t.Helper()
	want := digest(newStream(3, size), size)
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(a, newStream(3, size), make([]byte, 128<<10))
		if err == nil {
			err = a.CloseWrite()
		}
		errc <- err
	}()
	type res struct {
		d   [32]byte
		n   int64
		err error
	}
	got := make(chan res, 1)
	go func() {
		h := sha256.New()
		n, err := io.CopyN(h, b, size/3)
		if err == nil {
			mid()
			var m int64
			m, err = io.Copy(h, b)
			n += m
		}
		var d [32]byte
		copy(d[:], h.Sum(nil))
		got <- res{d, n, err}
	}()
	timeout := time.After(limit)
	select {
	case r := <-got:
		require.NoError(t, r.err)
		require.Equal(t, size, r.n)
		require.Equal(t, want, r.d, "sha256")
	case <-timeout:
		t.Fatalf("transfer did not complete within %v: sender %+v receiver %+v", limit, a.Stats(), b.Stats())
	}
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-timeout:
		t.Fatal("sender did not finish")
	}
}

// Cutting a path in the middle of a transfer, in either direction, loses
// nothing: the stale subflow's data goes out again on the other one.
func TestMultipathFailover(t *testing.T) {
	p := tun.LinkParams{Rate: 200e6, Delay: 5 * time.Millisecond}
	for _, tc := range []struct {
		name     string
		cutPath  int
		download bool
	}{
		{"upload-cut-initial", 0, false},
		{"upload-cut-join", 1, false},
		{"download-cut-initial", 0, true},
		{"download-cut-join", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Round-robin keeps data in flight on both subflows, so the
			// cut one always holds bytes that must be sent again (the
			// default may leave a path idle at the moment of the cut).
			n := newMPNet(t, []tun.LinkParams{p, p}, mpOptions{scheduler: "roundrobin"})
			c1, c2 := dialAccept(t, n.client, n.server, n.serverAddr)
			waitSubflows(t, 2, c1, c2)
			from, to := c1, c2
			if tc.download {
				from, to = c2, c1
			}
			sendOneWay(t, from, to, mpSize(), func() { n.cut(tc.cutPath, p) }, 120*time.Second)
			st := from.Stats()
			t.Logf("sender: %+v", st)
			if testing.Short() {
				// 4 MiB may pass without the cut subflow holding any
				// unacknowledged byte at the cut: nothing to resend, and
				// nothing makes it stale. The full-size run checks both.
				return
			}
			require.NotZero(t, st.Reinjected, "the cut subflow's data was sent again")
			// The cut subflow went silent while the other one was
			// acknowledged: its bytes went out again at once (after a
			// few of its 10 ms round trips, under its 200 ms RTO).
			sender := n.client
			if tc.download {
				sender = n.server
			}
			require.NotZero(t, mib(sender, subflow.SubflowSilentReinject), "the silent subflow's bytes sent again before its RTO")
			// A short transfer can end before the second timeout that makes
			// the cut subflow stale; its unacknowledged bytes make it so.
			deadline := time.Now().Add(10 * time.Second)
			for from.Stats().Subflows[tc.cutPath].State == "active" {
				require.True(t, time.Now().Before(deadline), "the cut subflow is still active: %+v", from.Stats())
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// A backup path carries no data while the primary works, and everything
// once the primary dies, in either direction.
func TestMultipathBackup(t *testing.T) {
	p := tun.LinkParams{Rate: 200e6, Delay: 5 * time.Millisecond}
	for _, download := range []bool{false, true} {
		t.Run(map[bool]string{false: "upload", true: "download"}[download], func(t *testing.T) {
			n := newMPNet(t, []tun.LinkParams{p, p}, mpOptions{backup: []bool{false, true}})
			c1, c2 := dialAccept(t, n.client, n.server, n.serverAddr)
			waitSubflows(t, 2, c1, c2)
			for _, c := range []*stack.Conn{c1, c2} {
				require.True(t, c.Stats().Subflows[1].Backup, "both ends see the B bit of the join")
			}
			from, to := c1, c2
			if download {
				from, to = c2, c1
			}
			size := mpSize()
			var before uint64 // what the primary had delivered when it was cut
			sendOneWay(t, from, to, size, func() {
				s := from.Stats().Subflows[1]
				require.Less(t, s.BytesSent, uint64(64<<10), "the backup subflow carried data while the primary worked: %+v", s)
				n.cut(0, p)
				before = to.Stats().Subflows[0].BytesReceived // read or not
			}, 120*time.Second)
			// Everything that had not arrived when the primary was cut (a
			// blackhole drops what is in flight too) came over the backup.
			s := from.Stats().Subflows[1]
			require.GreaterOrEqual(t, s.BytesSent, uint64(size)-before, "the backup subflow carried the rest (%d bytes had arrived at the cut): %+v", before, s)
		})
	}
}

// MP_PRIO turns a subflow into a backup path at run time and back: the
// peer learns it, and neither side puts new data on it meanwhile.
func TestMultipathPrio(t *testing.T) {
	p := tun.LinkParams{Rate: 100e6, Delay: 5 * time.Millisecond}
	n := newMPNet(t, []tun.LinkParams{p, p}, mpOptions{})
	c1, c2 := dialAccept(t, n.client, n.server, n.serverAddr)
	waitSubflows(t, 2, c1, c2)
	waitBackup := func(c *stack.Conn, want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for c.Stats().Subflows[1].Backup != want {
			require.True(t, time.Now().Before(deadline), "backup flag never became %v: %+v", want, c.Stats().Subflows)
			time.Sleep(5 * time.Millisecond)
		}
	}
	require.NoError(t, c1.SetBackup(1, true))
	waitBackup(c1, true)
	waitBackup(c2, true) // MP_PRIO arrived
	before1, before2 := c1.Stats().Subflows[1].BytesSent, c2.Stats().Subflows[1].BytesSent
	size := mpSize() / 4
	var sendN func(from, to *stack.Conn, seed byte, size int64)
	half := func(from, to *stack.Conn, seed byte) { sendN(from, to, seed, size) }
	sendN = func(from, to *stack.Conn, seed byte, size int64) {
		buf := make([]byte, size)
		newStream(seed, size).Read(buf)
		done := make(chan error, 1)
		go func() { _, err := from.Write(buf); done <- err }()
		got := make([]byte, size)
		_, err := io.ReadFull(to, got)
		require.NoError(t, err)
		require.NoError(t, <-done)
		require.Equal(t, buf, got)
	}
	half(c1, c2, 5)
	half(c2, c1, 6)
	require.Less(t, c1.Stats().Subflows[1].BytesSent-before1, uint64(64<<10), "client used the backup subflow")
	require.Less(t, c2.Stats().Subflows[1].BytesSent-before2, uint64(64<<10), "server used the backup subflow")

	require.NoError(t, c1.SetBackup(1, false))
	waitBackup(c1, false)
	waitBackup(c2, false)
	before1 = c1.Stats().Subflows[1].BytesSent
	// Round-robin and more bytes than one path's window holds, so that
	// an eligible subflow gets data for certain: the default scheduler may
	// leave an equal second path nearly idle, and with -short's 1 MiB the
	// first path's window took all but one 64 KiB chunk.
	c1.SetScheduler(scheduler.NewRoundRobin())
	sendN(c1, c2, 7, 4*size)
	require.Greater(t, c1.Stats().Subflows[1].BytesSent-before1, uint64(64<<10), "the subflow carries data again")
	require.Error(t, c1.SetBackup(42, true), "no such subflow")
}
