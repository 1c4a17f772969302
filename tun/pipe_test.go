package tun

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	pipeA4 = netip.MustParsePrefix("10.9.0.1/24")
	pipeB4 = netip.MustParsePrefix("10.9.0.2/24")
	pipeA6 = netip.MustParsePrefix("fd09::1/64")
	pipeB6 = netip.MustParsePrefix("fd09::2/64")
)

// pipeStacks joins two stacks with NewPipe(ab, ba).
func pipeStacks(t *testing.T, ab, ba LinkParams) (sa, sb *stack.Stack, a, b *Endpoint) {
	a, b = NewPipe(ab, ba)
	sa = newTestStack(t, a, pipeA4, pipeA6)
	sb = newTestStack(t, b, pipeB4, pipeB6)
	return sa, sb, a, b
}

// pipeTransfer sends n bytes from stack a to stack b on dst.
func pipeTransfer(t *testing.T, sa, sb *stack.Stack, dst netip.Addr, n int, timeout time.Duration) float64 {
	ln, port := gListen(t, sb, dst)
	return transfer(t, ln.Accept, func() (net.Conn, error) { return gDial(sa, dst, port) }, n, timeout)
}

func TestPipeUnshaped(t *testing.T) {
	sa, sb, a, b := pipeStacks(t, LinkParams{}, LinkParams{})
	const n = 8 << 20
	bps := pipeTransfer(t, sa, sb, pipeB4.Addr(), n, 60*time.Second)
	t.Logf("pipe unshaped IPv4: %d MiB at %s (race=%v)", n>>20, mbit(bps), raceEnabled)
	bps6 := pipeTransfer(t, sb, sa, pipeA6.Addr(), n/4, 60*time.Second)
	t.Logf("pipe unshaped IPv6 b->a: %d MiB at %s", n>>22, mbit(bps6))
	st := a.Stats()
	require.Zero(t, st.Dropped(), "%+v", st)
	require.GreaterOrEqual(t, st.DeliveredBytes, uint64(n))
	require.Zero(t, b.Stats().Dropped(), "%+v", b.Stats())
}

func TestPipeDelayLoss(t *testing.T) {
	t.Parallel() // latency-bound (~20 s): overlap it with the other tests
	p := LinkParams{Delay: 20 * time.Millisecond, Loss: 0.01, Seed: 1}
	q := p
	q.Seed = 2
	sa, sb, a, _ := pipeStacks(t, p, q)
	const n = 8 << 20
	start := time.Now()
	bps := pipeTransfer(t, sa, sb, pipeB4.Addr(), n, 90*time.Second)
	st := a.Stats()
	t.Logf("pipe 20ms+1%% loss: %d MiB at %s in %v; a->b %+v", n>>20, mbit(bps), time.Since(start).Round(time.Millisecond), st)
	require.NotZero(t, st.DroppedLoss, "1%% loss dropped nothing")
	lossRate := float64(st.DroppedLoss) / float64(st.SentPackets)
	require.InDelta(t, 0.01, lossRate, 0.006, "loss rate")
}

func TestPipeDelay(t *testing.T) {
	// A lone packet's one-way delay is at least Delay and not much more.
	const delay = 30 * time.Millisecond
	a, b := NewPipe(LinkParams{Delay: delay}, LinkParams{})
	defer closePipe(a, b)
	d := newCountingDispatcher()
	b.Attach(d)
	for range 3 {
		start := time.Now()
		writeRaw(t, a, 1, 100)
		d.waitFor(t, d.count()+1, 2*time.Second)
		el := time.Since(start)
		require.GreaterOrEqual(t, el, delay)
		require.Less(t, el, delay+500*time.Millisecond)
	}
}

func TestPipeRate(t *testing.T) {
	t.Parallel()
	const rate = 20_000_000
	// The queue holds more than the whole transfer, so there is no loss and
	// the measurement does not depend on how TCP recovers from a burst of
	// slow-start drops (TestPipeRateQueueDrop covers drop-tail).
	ab := LinkParams{Rate: rate, Delay: 5 * time.Millisecond, QueueBytes: 8 << 20}
	sa, sb, a, _ := pipeStacks(t, ab, LinkParams{Delay: 5 * time.Millisecond})
	const n = 3 << 20 // ~1.3 s at 20 Mbit/s
	start := time.Now()
	bps := pipeTransfer(t, sa, sb, pipeB4.Addr(), n, 60*time.Second)
	el := time.Since(start)
	st := a.Stats()
	wire := float64(st.DeliveredBytes) * 8 / el.Seconds()
	t.Logf("pipe 20 Mbit/s: goodput %s, wire %s over %v; %+v", mbit(bps), mbit(wire), el.Round(time.Millisecond), st)
	require.GreaterOrEqual(t, bps, 0.5*rate, "goodput too low")
	require.LessOrEqual(t, bps, 1.1*rate, "goodput above the configured rate")
	require.LessOrEqual(t, wire, 1.1*rate, "wire rate above the configured rate")
	require.Zero(t, st.Dropped())
}

func TestPipeRateQueueDrop(t *testing.T) {
	// 1 Mbit/s with a 10 kB queue: of a burst of 50 packets of 1020 B
	// (payload + IPv4 header), 9 fit (the one being serialized counts) and
	// 41 are dropped.
	a, b := NewPipe(LinkParams{Rate: 1_000_000, QueueBytes: 10_000}, LinkParams{})
	defer closePipe(a, b)
	d := newCountingDispatcher()
	b.Attach(d)
	start := time.Now()
	writeRaw(t, a, 50, 1000) // one WritePackets call: one arrival instant
	st := a.Stats()
	require.EqualValues(t, 50, st.SentPackets)
	require.EqualValues(t, 41, st.DroppedQueue, "%+v", st)
	// 9 packets of 1020 B at 1 Mbit/s take 73.4 ms to serialize.
	d.waitFor(t, 9, 3*time.Second)
	require.GreaterOrEqual(t, time.Since(start), 73*time.Millisecond)
}

func TestPipeBlackhole(t *testing.T) {
	a, b := NewPipe(LinkParams{}, LinkParams{})
	defer closePipe(a, b)
	d := newCountingDispatcher()
	b.Attach(d)

	writeRaw(t, a, 10, 200)
	d.waitFor(t, 10, 2*time.Second)

	p := a.Params()
	p.Blackhole = true
	a.SetParams(p)
	writeRaw(t, a, 10, 200)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 10, d.count())
	require.EqualValues(t, 10, a.Stats().DroppedBlackhole)

	// Packets in flight when the blackhole starts are lost too (the 5 s
	// delay keeps them in flight however slow this machine is).
	a.SetParams(LinkParams{Delay: 5 * time.Second})
	writeRaw(t, a, 5, 200)
	a.SetParams(LinkParams{Delay: 5 * time.Second, Blackhole: true})
	deadline := time.Now().Add(3 * time.Second)
	for a.Stats().DroppedBlackhole < 15 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.EqualValues(t, 15, a.Stats().DroppedBlackhole)
	require.Equal(t, 10, d.count())

	a.SetParams(LinkParams{})
	writeRaw(t, a, 10, 200)
	d.waitFor(t, 20, 2*time.Second)
	// The reverse direction was never affected.
	require.Zero(t, b.Stats().Dropped())
}

func TestPipeBlackholeTCP(t *testing.T) {
	sa, sb, a, _ := pipeStacks(t, LinkParams{Delay: time.Millisecond}, LinkParams{Delay: time.Millisecond})
	ln, port := gListen(t, sb, pipeB4.Addr())
	type res struct {
		n   int
		err error
	}
	got := make(chan res, 16)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- res{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			got <- res{n, err}
			if err != nil {
				return
			}
		}
	}()
	c, err := gDial(sa, pipeB4.Addr(), port)
	require.NoError(t, err)
	defer c.Close()
	recv := func(want int, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for total := 0; total < want; {
			select {
			case r := <-got:
				require.NoError(t, r.err)
				total += r.n
			case <-deadline:
				t.Fatalf("received %d of %d bytes within %v", total, want, timeout)
			}
		}
	}
	_, err = c.Write(make([]byte, 1000))
	require.NoError(t, err)
	recv(1000, 5*time.Second)

	a.SetParams(LinkParams{Delay: time.Millisecond, Blackhole: true})
	_, err = c.Write(make([]byte, 1000))
	require.NoError(t, err)
	select {
	case r := <-got:
		t.Fatalf("data crossed a blackhole: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
	require.NotZero(t, a.Stats().DroppedBlackhole)

	a.SetParams(LinkParams{Delay: time.Millisecond})
	recv(1000, 10*time.Second) // after the next retransmission
}

func TestPipeJitterKeepsOrder(t *testing.T) {
	a, b := NewPipe(LinkParams{Delay: 5 * time.Millisecond, Jitter: 10 * time.Millisecond, Seed: 7}, LinkParams{})
	defer closePipe(a, b)
	d := newCountingDispatcher()
	b.Attach(d)
	writeSizes(t, a, 100, 100) // one batch: only jitter decides the order
	d.waitFor(t, 100, 5*time.Second)
	sizes := d.sizeLog()
	for i := range sizes {
		require.Equal(t, 100+i+header.IPv4MinimumSize, sizes[i], "packet %d out of order", i)
	}

	// With Reorder, some packets overtake others.
	a.SetParams(LinkParams{Delay: 5 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: true, Seed: 7})
	writeSizes(t, a, 100, 100)
	d.waitFor(t, 200, 5*time.Second)
	sizes = d.sizeLog()[100:]
	inOrder := true
	for i := range sizes {
		inOrder = inOrder && sizes[i] == 100+i+header.IPv4MinimumSize
	}
	require.False(t, inOrder, "Reorder with jitter kept all 100 packets in order")
}

func TestPipeCloseStopsGoroutines(t *testing.T) {
	for range 20 {
		a, b := NewPipe(LinkParams{Delay: time.Second}, LinkParams{Rate: 1e6})
		d := newCountingDispatcher()
		b.Attach(d)
		a.Attach(d)
		writeRaw(t, a, 5, 500)
		writeRaw(t, b, 5, 500)
		closePipe(a, b)
		for _, e := range []*Endpoint{a, b} {
			select {
			case <-e.dir.done:
			default:
				t.Fatal("delivery goroutine still running after Close+Wait")
			}
			require.Empty(t, e.dir.heap)
			require.EqualValues(t, 5, e.Stats().DroppedOther, "in-flight packets dropped on Close")
		}
		l := rawPackets(1, 100)
		_, err := a.WritePackets(l)
		l.DecRef()
		require.IsType(t, &tcpip.ErrClosedForSend{}, err)
	}
}

func closePipe(a, b *Endpoint) {
	a.Close()
	b.Close()
	a.Wait()
	b.Wait()
}

// rawPackets builds n outbound IPv4 packets of payload bytes each.
func rawPackets(n, payload int) stack.PacketBufferList {
	return rawPacketsGrowing(n, payload, 0)
}

// rawPacketsGrowing builds n outbound IPv4 packets; packet i carries
// payload+i*step bytes.
func rawPacketsGrowing(n, payload, step int) stack.PacketBufferList {
	var l stack.PacketBufferList
	for i := range n {
		payload := payload + i*step
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: header.IPv4MinimumSize,
			Payload:            buffer.MakeWithData(make([]byte, payload)),
		})
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + payload),
			TTL:         64,
			Protocol:    253,
			SrcAddr:     tcpip.AddrFrom4([4]byte{10, 9, 0, 1}),
			DstAddr:     tcpip.AddrFrom4([4]byte{10, 9, 0, 2}),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = ipv4.ProtocolNumber
		l.PushBack(pkt)
	}
	return l
}

func writeRaw(t testing.TB, e stack.LinkEndpoint, n, payload int) {
	t.Helper()
	l := rawPackets(n, payload)
	defer l.DecRef()
	m, err := e.WritePackets(l)
	require.Nil(t, err)
	require.Equal(t, n, m)
}

// writeSizes writes n packets with payloads first, first+1, ... in one batch.
func writeSizes(t testing.TB, e stack.LinkEndpoint, n, first int) {
	t.Helper()
	l := rawPacketsGrowing(n, first, 1)
	defer l.DecRef()
	m, err := e.WritePackets(l)
	require.Nil(t, err)
	require.Equal(t, n, m)
}

// countingDispatcher records the sizes of delivered packets.
type countingDispatcher struct {
	n     atomic.Int64
	mu    sync.Mutex
	sizes []int
}

func newCountingDispatcher() *countingDispatcher { return &countingDispatcher{} }

func (d *countingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.mu.Lock()
	d.sizes = append(d.sizes, pkt.Size())
	d.mu.Unlock()
	d.n.Add(1)
}

func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (d *countingDispatcher) count() int { return int(d.n.Load()) }

func (d *countingDispatcher) sizeLog() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.sizes...)
}

func (d *countingDispatcher) waitFor(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d packets within %v", d.count(), n, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
