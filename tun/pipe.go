package tun

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// LinkParams shape one direction of an emulated link.
type LinkParams struct {
	Rate       int64         // bits per second, 0 = unlimited
	Delay      time.Duration // one-way propagation delay
	Jitter     time.Duration // extra delay, uniform in [0, Jitter); order is kept unless Reorder
	Reorder    bool          // let jittered packets overtake each other
	Loss       float64       // 0..1 random drop probability (after the rate limiter: lost packets use capacity)
	QueueBytes int           // drop-tail limit of the rate limiter's queue (0 = default, see DefaultQueueBytes)
	Blackhole  bool          // drop everything, including packets already in flight
	MTU        int           // 0 = 1500; larger packets are dropped
	Seed       int64         // seed of the loss/jitter randomness
}

// DefaultQueueBytes returns the queue limit used when p.QueueBytes is 0:
// about one bandwidth-delay product (rate * (2*Delay + 50ms)), clamped to
// [64 KiB, 1 MiB].
func (p LinkParams) DefaultQueueBytes() int {
	bdp := float64(p.Rate) / 8 * (2*p.Delay + 50*time.Millisecond).Seconds()
	return int(min(max(bdp, 64<<10), 1<<20))
}

func (p LinkParams) queueLimit() int {
	if p.QueueBytes > 0 {
		return p.QueueBytes
	}
	return p.DefaultQueueBytes()
}

func (p LinkParams) mtu() uint32 {
	if p.MTU <= 0 {
		return DefaultMTU
	}
	return uint32(p.MTU)
}

// LinkStats counts packets of one direction of an emulated link.
type LinkStats struct {
	SentPackets      uint64 // handed to WritePackets
	SentBytes        uint64
	DeliveredPackets uint64 // handed to the peer's stack
	DeliveredBytes   uint64
	DroppedLoss      uint64 // random loss
	DroppedQueue     uint64 // drop-tail of the rate limiter
	DroppedBlackhole uint64 // blackhole, on entry or while in flight
	DroppedOther     uint64 // oversize, peer not attached, link closed
}

// Dropped returns the total number of dropped packets.
func (s LinkStats) Dropped() uint64 {
	return s.DroppedLoss + s.DroppedQueue + s.DroppedBlackhole + s.DroppedOther
}

// NewPipe returns two connected endpoints: packets written to a arrive at b
// shaped by ab, packets written to b arrive at a shaped by ba. Each direction
// has one delivery goroutine, which stops when the sending endpoint is closed
// (stack.Close or RemoveNIC close it).
func NewPipe(ab, ba LinkParams) (*Endpoint, *Endpoint) {
	a := &Endpoint{}
	b := &Endpoint{}
	a.peer, b.peer = b, a
	a.dir = newDirection(ab, b)
	b.dir = newDirection(ba, a)
	a.mtu.Store(ab.mtu())
	b.mtu.Store(ba.mtu())
	go a.dir.run()
	go b.dir.run()
	return a, b
}

// Endpoint is one end of an emulated link. It implements stack.LinkEndpoint
// for network-layer packets without a link header (like channel.Endpoint).
type Endpoint struct {
	peer *Endpoint
	dir  *direction // the direction this endpoint sends in

	mtu atomic.Uint32

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	linkAddr   tcpip.LinkAddress
	onClose    func()
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// SetParams replaces the parameters of the direction this endpoint sends in.
// It takes effect at once: a blackhole also drops packets already in flight;
// a new rate or delay applies to packets sent from now on (order is kept).
func (e *Endpoint) SetParams(p LinkParams) {
	e.dir.setParams(p)
	e.mtu.Store(p.mtu())
}

// Params returns the parameters of the direction this endpoint sends in.
func (e *Endpoint) Params() LinkParams {
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	return e.dir.params
}

// Stats returns the counters of the direction this endpoint sends in.
func (e *Endpoint) Stats() LinkStats {
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	return e.dir.stats
}

// Peer returns the other end of the pipe.
func (e *Endpoint) Peer() *Endpoint { return e.peer }

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.linkAddr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.linkAddr = addr
}

// Capabilities implements stack.LinkEndpoint.
func (*Endpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.LinkEndpoint.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: after Close it waits for the delivery
// goroutine of this endpoint's sending direction to exit. Before Close it
// returns at once.
func (e *Endpoint) Wait() {
	e.dir.mu.Lock()
	closed := e.dir.closed
	e.dir.mu.Unlock()
	if closed {
		<-e.dir.done
	}
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*Endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*Endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint: it stops this endpoint's sending
// direction, dropping packets in flight. Packets from the peer are still
// delivered while a dispatcher is attached. Close is idempotent.
func (e *Endpoint) Close() {
	e.mu.Lock()
	action := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if action != nil {
		action()
	}
	e.dir.close()
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = f
}

// WritePackets implements stack.LinkEndpoint. Packets are queued for the
// peer by reference (no payload copy); dropped packets count as written.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return e.dir.enqueue(pkts.AsSlice(), e.mtu.Load())
}

// inflight is one packet on the wire.
type inflight struct {
	at    int64 // delivery time, monotonic nanoseconds since epoch
	seq   uint64
	proto tcpip.NetworkProtocolNumber
	size  int
	pkt   *stack.PacketBuffer
}

// direction is one way of a pipe: a time-ordered queue and the goroutine
// delivering from it.
type direction struct {
	to *Endpoint

	mu        sync.Mutex
	params    LinkParams
	rng       *rand.Rand
	heap      []inflight // min-heap by (at, seq)
	seq       uint64
	busyUntil int64 // when the rate limiter finishes serializing
	lastAt    int64 // latest delivery time handed out (for in-order jitter)
	stats     LinkStats
	closed    bool

	wake chan struct{} // cap 1
	stop chan struct{}
	done chan struct{}
}

// epoch anchors monotonic time so that deadlines are plain int64s.
var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

func newDirection(p LinkParams, to *Endpoint) *direction {
	return &direction{
		to:     to,
		params: p,
		rng:    rand.New(rand.NewPCG(uint64(p.Seed), 0x756d707463702d74)),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

func (d *direction) setParams(p LinkParams) {
	d.mu.Lock()
	if p.Seed != d.params.Seed {
		d.rng = rand.New(rand.NewPCG(uint64(p.Seed), 0x756d707463702d74))
	}
	d.params = p
	d.mu.Unlock()
	d.kick() // a blackhole must flush the queue now
}

func (d *direction) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *direction) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	close(d.stop)
}

func (d *direction) enqueue(pkts []*stack.PacketBuffer, mtu uint32) (int, tcpip.Error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	p := &d.params
	now := nanotime()
	wasHead := int64(-1)
	if len(d.heap) > 0 {
		wasHead = d.heap[0].at
	}
	newHead := false
	for _, pkt := range pkts {
		size := pkt.Size()
		d.stats.SentPackets++
		d.stats.SentBytes += uint64(size)
		if p.Blackhole {
			d.stats.DroppedBlackhole++
			continue
		}
		if uint32(size) > mtu {
			d.stats.DroppedOther++
			continue
		}
		at := now
		if p.Rate > 0 {
			start := max(now, d.busyUntil)
			backlog := (start - now) * p.Rate / 8 / int64(time.Second)
			if backlog+int64(size) > int64(p.queueLimit()) {
				d.stats.DroppedQueue++
				continue
			}
			d.busyUntil = start + int64(size)*8*int64(time.Second)/p.Rate
			at = d.busyUntil
		}
		if p.Loss > 0 && d.rng.Float64() < p.Loss {
			d.stats.DroppedLoss++
			continue
		}
		at += int64(p.Delay)
		if p.Jitter > 0 {
			at += d.rng.Int64N(int64(p.Jitter))
		}
		if len(d.heap) == 0 {
			d.lastAt = at // nothing in flight to keep order with
		} else {
			if !p.Reorder {
				at = max(at, d.lastAt) // never overtake a packet in flight
			}
			d.lastAt = max(d.lastAt, at)
		}
		// Keep the payload by reference: the new inbound packet shares the
		// (copy-on-write) chunks of pkt's buffer.
		in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
		d.seq++
		d.push(inflight{at: at, seq: d.seq, proto: pkt.NetworkProtocolNumber, size: size, pkt: in})
		if wasHead < 0 || at < wasHead {
			newHead = true
			wasHead = at
		}
	}
	d.mu.Unlock()
	if newHead {
		d.kick()
	}
	return len(pkts), nil
}

// maxBatch bounds how many packets the delivery goroutine takes per lock.
const maxBatch = 64

func (d *direction) run() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	batch := make([]inflight, 0, maxBatch)
	for {
		d.mu.Lock()
		if d.closed {
			for _, it := range d.heap {
				it.pkt.DecRef()
				d.stats.DroppedOther++
			}
			clear(d.heap)
			d.heap = d.heap[:0]
			d.mu.Unlock()
			return
		}
		now := nanotime()
		blackhole := d.params.Blackhole
		for len(d.heap) > 0 && len(batch) < maxBatch && (blackhole || d.heap[0].at <= now) {
			it := d.pop()
			if blackhole {
				it.pkt.DecRef()
				d.stats.DroppedBlackhole++
				continue
			}
			batch = append(batch, it)
		}
		wait := time.Duration(-1)
		if len(batch) == 0 && len(d.heap) > 0 {
			wait = time.Duration(d.heap[0].at - now)
		}
		d.mu.Unlock()

		if len(batch) > 0 {
			d.deliver(batch)
			clear(batch)
			batch = batch[:0]
			continue
		}
		if wait >= 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.wake:
				timer.Stop()
			case <-d.stop:
			}
		} else {
			select {
			case <-d.wake:
			case <-d.stop:
			}
		}
	}
}

func (d *direction) deliver(batch []inflight) {
	d.to.mu.RLock()
	disp := d.to.dispatcher
	d.to.mu.RUnlock()
	var n, bytes uint64
	for _, it := range batch {
		if disp != nil {
			disp.DeliverNetworkPacket(it.proto, it.pkt)
			n++
			bytes += uint64(it.size)
		}
		it.pkt.DecRef()
	}
	d.mu.Lock()
	d.stats.DeliveredPackets += n
	d.stats.DeliveredBytes += bytes
	d.stats.DroppedOther += uint64(len(batch)) - n
	d.mu.Unlock()
}

func (a inflight) less(b inflight) bool {
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

func (d *direction) push(it inflight) {
	h := append(d.heap, it)
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h[i].less(h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	d.heap = h
}

func (d *direction) pop() inflight {
	h := d.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = inflight{}
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	d.heap = h
	return top
}
