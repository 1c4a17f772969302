package tun

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestShapeRateAndDelay(t *testing.T) {
	t.Parallel()
	const rate = 20_000_000
	const delay = 25 * time.Millisecond
	a, b := NewPipe(LinkParams{}, LinkParams{})
	s := Shape(a, LinkParams{Rate: rate, Delay: delay, QueueBytes: 4 << 20}, LinkParams{Delay: delay})
	sa := newTestStack(t, s, pipeA4)
	sb := newTestStack(t, b, pipeB4)

	// A round trip crosses out and in once each.
	ln, port := gListen(t, sb, pipeB4.Addr())
	echoServer(t, ln.Accept)
	c, err := gDial(sa, pipeB4.Addr(), port)
	require.NoError(t, err)
	defer c.Close()
	for range 3 {
		rtt := echoRTT(t, c)
		require.GreaterOrEqual(t, rtt, 2*delay, "round trip")
		require.Less(t, rtt, 2*delay+time.Second, "round trip")
	}

	// 2 MiB take at least their serialization time at 20 Mbit/s (0.84 s).
	const n = 2 << 20
	start := time.Now()
	bps := pipeTransfer(t, sa, sb, pipeB4.Addr(), n, 60*time.Second)
	el := time.Since(start)
	out, in := s.Stats()
	t.Logf("shaped 20 Mbit/s %v: %s in %v; out %+v; in %+v", delay, mbit(bps), el.Round(time.Millisecond), out, in)
	require.GreaterOrEqual(t, el, 750*time.Millisecond, "2 MiB at 20 Mbit/s")
	require.LessOrEqual(t, bps, 1.1*rate)
	require.GreaterOrEqual(t, out.DeliveredBytes, uint64(n))
	require.Zero(t, out.Dropped())
	require.NotZero(t, in.DeliveredPackets)
	require.Zero(t, in.Dropped()) // (the last ACKs may still be in flight)

	// The pipe below sees exactly what the out direction delivers (once
	// the closing packets are through).
	require.Eventually(t, func() bool {
		out, _ := s.Stats()
		return out.DeliveredPackets == a.Stats().SentPackets
	}, 5*time.Second, 10*time.Millisecond)
	gotOut, gotIn := s.Params()
	require.EqualValues(t, rate, gotOut.Rate)
	require.Equal(t, delay, gotIn.Delay)
}

func TestShapeBlackhole(t *testing.T) {
	a, b := NewPipe(LinkParams{}, LinkParams{})
	defer closePipe(a, b)
	s := Shape(a, LinkParams{}, LinkParams{})
	defer func() { s.Close(); s.Wait() }()
	up := newCountingDispatcher() // the "stack" above s
	s.Attach(up)
	far := newCountingDispatcher() // the far side of the pipe
	b.Attach(far)

	writeRaw(t, s, 5, 100)
	far.waitFor(t, 5, 2*time.Second)
	writeRaw(t, b, 7, 100)
	up.waitFor(t, 7, 2*time.Second)

	s.SetParams(LinkParams{Blackhole: true}, LinkParams{Blackhole: true})
	writeRaw(t, s, 5, 100)
	writeRaw(t, b, 7, 100)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 5, far.count())
	require.Equal(t, 7, up.count())
	out, in := s.Stats()
	require.EqualValues(t, 5, out.DroppedBlackhole)
	require.EqualValues(t, 7, in.DroppedBlackhole)
	require.EqualValues(t, 10, out.SentPackets)
	require.EqualValues(t, 5, out.DeliveredPackets)
	require.EqualValues(t, 14, in.SentPackets)
	require.EqualValues(t, 7, in.DeliveredPackets)

	// In flight when the blackhole starts: dropped too.
	s.SetParams(LinkParams{}, LinkParams{Delay: 5 * time.Second})
	writeRaw(t, b, 3, 100)
	s.SetParams(LinkParams{}, LinkParams{Delay: 5 * time.Second, Blackhole: true})
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, in := s.Stats(); in.DroppedBlackhole == 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	_, in = s.Stats()
	require.EqualValues(t, 10, in.DroppedBlackhole)

	s.SetParams(LinkParams{}, LinkParams{})
	writeRaw(t, s, 5, 100)
	writeRaw(t, b, 7, 100)
	far.waitFor(t, 10, 2*time.Second)
	up.waitFor(t, 14, 2*time.Second)

	// Oversize packets are dropped on the way out, and the MTU says so.
	s.SetParams(LinkParams{MTU: 576}, LinkParams{})
	require.EqualValues(t, 576, s.MTU())
	writeRaw(t, s, 2, 1000)
	out, _ = s.Stats()
	require.EqualValues(t, 2, out.DroppedOther)
}

func TestShapeCloseStopsGoroutines(t *testing.T) {
	a, b := NewPipe(LinkParams{}, LinkParams{})
	defer func() { b.Close(); b.Wait() }()
	s := Shape(a, LinkParams{Delay: time.Second}, LinkParams{Delay: time.Second})
	up := newCountingDispatcher()
	s.Attach(up)
	b.Attach(newCountingDispatcher())
	writeRaw(t, s, 3, 100)
	writeRaw(t, b, 4, 100)
	// Wait before Close returns at once (gVisor's Stack.Wait relies on it).
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
		t.Fatal("Wait before Close blocked")
	}
	require.Eventually(t, func() bool { _, in := s.Stats(); return in.SentPackets == 4 }, 2*time.Second, time.Millisecond)
	s.Attach(nil)
	s.Close()
	s.Wait()
	for _, d := range []*direction{s.out, s.in} {
		select {
		case <-d.done:
		default:
			t.Fatal("direction goroutine still running after Close+Wait")
		}
	}
	out, in := s.Stats()
	require.EqualValues(t, 3, out.DroppedOther, "in flight at Close")
	require.EqualValues(t, 4, in.DroppedOther, "in flight at Close")
	require.Zero(t, up.count())
	l := rawPackets(1, 100)
	_, err := s.WritePackets(l)
	l.DecRef()
	require.IsType(t, &tcpip.ErrClosedForSend{}, err)
	// Close closed the inner endpoint too.
	l = rawPackets(1, 100)
	_, err = a.WritePackets(l)
	l.DecRef()
	require.IsType(t, &tcpip.ErrClosedForSend{}, err)
}
