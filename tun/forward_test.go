package tun

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestForwardPipes(t *testing.T) {
	t.Parallel()
	const rate = 20_000_000
	const delay = 20 * time.Millisecond
	a1, a2 := NewPipe(LinkParams{}, LinkParams{})
	b1, b2 := NewPipe(LinkParams{}, LinkParams{})
	ab := LinkParams{Rate: rate, Delay: delay, QueueBytes: 4 << 20, Duplicate: 0.01, Seed: 1}
	ba := LinkParams{Delay: delay}
	f := Forward(a2, b1, ab, ba)
	t.Cleanup(func() {
		f.Close()
		f.Close() // idempotent
		require.False(t, a2.IsAttached(), "Close detaches")
		require.False(t, b1.IsAttached(), "Close detaches")
		for _, d := range []*direction{f.ab, f.ba} {
			select {
			case <-d.done:
			default:
				t.Error("direction goroutine still running after Close")
			}
		}
		closePipe(a2, b1)
	})
	sa := newTestStack(t, a1, pipeA4)
	sb := newTestStack(t, b2, pipeB4)
	gotAB, gotBA := f.Params()
	require.Equal(t, ab, gotAB)
	require.Equal(t, ba, gotBA)

	ln, port := gListen(t, sb, pipeB4.Addr())
	echoServer(t, ln.Accept)
	c, err := gDial(sa, pipeB4.Addr(), port)
	require.NoError(t, err)
	defer c.Close()
	rtt := echoRTT(t, c)
	require.GreaterOrEqual(t, rtt, 2*delay, "round trip")

	const n = 2 << 20
	start := time.Now()
	bps := pipeTransfer(t, sa, sb, pipeB4.Addr(), n, 60*time.Second)
	el := time.Since(start)
	sAB, sBA := f.Stats()
	t.Logf("forwarded 20 Mbit/s %v: rtt %v, %s in %v; ab %+v; ba %+v", delay, rtt.Round(time.Millisecond), mbit(bps), el.Round(time.Millisecond), sAB, sBA)
	require.GreaterOrEqual(t, el, 750*time.Millisecond, "2 MiB at 20 Mbit/s")
	require.GreaterOrEqual(t, sAB.DeliveredBytes, uint64(n))
	require.NotZero(t, sAB.Duplicated)
	require.Zero(t, sAB.Dropped())
	require.NotZero(t, sBA.DeliveredPackets)
	require.Zero(t, sBA.Dropped())

	// Blackholing one way stops the traffic; lifting it lets it resume.
	f.SetParams(LinkParams{Blackhole: true}, LinkParams{})
	require.NoError(t, c.SetDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = c.Write([]byte{'y'})
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "echo across a blackhole")
	sAB2, _ := f.Stats()
	require.Greater(t, sAB2.DroppedBlackhole, sAB.DroppedBlackhole)
	f.SetParams(LinkParams{}, LinkParams{})
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 1)
	_, err = c.Read(buf) // after the next retransmission
	require.NoError(t, err)
	require.Equal(t, byte('y'), buf[0])
}

// TestForwardTUN joins two network namespaces with Forward between two TUN
// devices without stack addresses, and runs kernel TCP through it.
func TestForwardTUN(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name   string
		c1, c2 string // ParsePortSpec forms
	}{
		{"IPv4", "umtf4a,10.93.0.1/24", "umtf4b,10.93.0.2/24"},
		{"IPv6", "umtf6a,fd93::1/64", "umtf6b,fd93::2/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const delay = 15 * time.Millisecond
			const rate = 20_000_000
			ns1, ns2 := newNetns(t), newNetns(t)
			cfg1, err := ParsePortSpec(tc.c1)
			require.NoError(t, err)
			cfg2, err := ParsePortSpec(tc.c2)
			require.NoError(t, err)
			d1, err := OpenIn(ns1, cfg1)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, d1.Close()) })
			d2, err := OpenIn(ns2, cfg2)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, d2.Close()) })
			f := Forward(d1.LinkEndpoint(), d2.LinkEndpoint(),
				LinkParams{Rate: rate, Delay: delay, QueueBytes: 4 << 20}, LinkParams{Delay: delay})
			t.Cleanup(f.Close)

			dst := cfg2.HostAddr.Addr()
			var ln net.Listener
			require.NoError(t, InNetns(ns2, func() (err error) {
				ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
				return err
			}))
			t.Cleanup(func() { ln.Close() })
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			dial := func() (c net.Conn, err error) {
				err = InNetns(ns1, func() error {
					c, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, port).String(), 10*time.Second)
					return err
				})
				return c, err
			}

			echoServer(t, ln.Accept)
			c, err := dial()
			require.NoError(t, err)
			rtt := echoRTT(t, c)
			c.Close()
			require.GreaterOrEqual(t, rtt, 2*delay, "round trip")

			const n = 2 << 20
			start := time.Now()
			bps := transfer(t, ln.Accept, dial, n, 60*time.Second)
			el := time.Since(start)
			ab, ba := f.Stats()
			t.Logf("kernel TCP through Forward: rtt %v, %d MiB at %s in %v; ab %+v; ba %+v",
				rtt.Round(time.Millisecond), n>>20, mbit(bps), el.Round(time.Millisecond), ab, ba)
			require.GreaterOrEqual(t, el, 750*time.Millisecond, "2 MiB at 20 Mbit/s")
			require.GreaterOrEqual(t, ab.DeliveredBytes, uint64(n))
			require.NotZero(t, ba.DeliveredPackets)
			require.Zero(t, ab.DroppedQueue+ab.DroppedBlackhole+ab.DroppedLoss)
		})
	}
}

// TestShapeTUN shapes a TUN device's endpoint under a gVisor stack whose
// peer is the kernel.
func TestShapeTUN(t *testing.T) {
	needRoot(t)
	const delay = 15 * time.Millisecond
	const rate = 20_000_000
	ns := newNetns(t)
	cfg, err := ParseSpec("umts4,10.94.0.2/24,10.94.0.1")
	require.NoError(t, err)
	d, err := OpenIn(ns, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	s := Shape(d.LinkEndpoint(), LinkParams{Rate: rate, Delay: delay, QueueBytes: 4 << 20}, LinkParams{Delay: delay})
	gs := newTestStack(t, s, cfg.StackAddr)

	host := cfg.HostAddr.Addr()
	var ln net.Listener
	require.NoError(t, InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	echoServer(t, ln.Accept)
	c, err := gDial(gs, host, port)
	require.NoError(t, err)
	rtt := echoRTT(t, c)
	c.Close()
	require.GreaterOrEqual(t, rtt, 2*delay, "round trip")

	const n = 2 << 20
	start := time.Now()
	bps := transfer(t, ln.Accept, func() (net.Conn, error) { return gDial(gs, host, port) }, n, 60*time.Second)
	el := time.Since(start)
	out, in := s.Stats()
	t.Logf("gVisor -> kernel through Shape: rtt %v, %d MiB at %s in %v; out %+v; in %+v",
		rtt.Round(time.Millisecond), n>>20, mbit(bps), el.Round(time.Millisecond), out, in)
	require.GreaterOrEqual(t, el, 750*time.Millisecond, "2 MiB at 20 Mbit/s")
	require.GreaterOrEqual(t, out.DeliveredBytes, uint64(n))
	require.NotZero(t, in.DeliveredPackets)
}
