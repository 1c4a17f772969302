package tun

import (
	"math/rand/v2"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The emulation shared by NewPipe, Forward and Shape: a direction takes
// packets in (from a stack's WritePackets or a link's inbound path), decides
// their fate and delivery time, and a goroutine of its own hands them to a
// target when their time has come.

// LinkParams shape one direction of an emulated link.
type LinkParams struct {
	Rate       int64         // bits per second, 0 = unlimited
	Delay      time.Duration // one-way propagation delay
	Jitter     time.Duration // extra delay, uniform in [0, Jitter); order is kept unless Reorder
	Reorder    bool          // let jittered packets overtake each other
	Loss       float64       // 0..1 random drop probability (after the rate limiter: lost packets use capacity)
	Duplicate  float64       // 0..1 probability that a delivered packet is delivered twice (the copy right after it; it uses no capacity)
	QueueBytes int           // drop-tail limit of the rate limiter's queue (0 = default, see DefaultQueueBytes)
	Blackhole  bool          // drop everything, including packets already in flight
	MTU        int           // 0 = 1500; larger packets are dropped
	Seed       int64         // seed of the loss/jitter/duplication randomness

	// Middleboxes (middlebox.go), applied to the packets that the link
	// does not drop on entry, before duplication: a duplicate is a copy
	// of the rewritten packet. Segment sizes never change; TCP checksums
	// stay valid. Only TCP over IPv4 (options allowed, no fragments) and
	// IPv6 (no extension headers) is touched.
	StripMPTCP      StripWhere // which TCP segments lose their MPTCP options (TCP option kind 30)
	CorruptAfter    int64      // payload bytes let through untouched (per direction) before the first rewrite
	CorruptSegments int        // then this many TCP segments with payload get their payload rewritten (0: none)
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

// LinkStats counts packets of one direction of an emulated link. Every
// packet that enters is eventually delivered or dropped; duplicates add to
// that: SentPackets + Duplicated = DeliveredPackets + Dropped() + in flight.
type LinkStats struct {
	SentPackets      uint64 // entered the link (WritePackets, or inbound from a forwarded or shaped link)
	SentBytes        uint64
	DeliveredPackets uint64 // handed to the far side (a stack, or the link written to)
	DeliveredBytes   uint64
	Duplicated       uint64 // extra copies made by LinkParams.Duplicate
	DroppedLoss      uint64 // random loss
	DroppedQueue     uint64 // drop-tail of the rate limiter
	DroppedBlackhole uint64 // blackhole, on entry or while in flight
	DroppedOther     uint64 // oversize, far side not attached or failing to write, link closed
	Stripped         uint64 // segments whose MPTCP options were blanked (LinkParams.StripMPTCP)
	Corrupted        uint64 // segments whose payload was rewritten (LinkParams.CorruptSegments)
}

// Dropped returns the total number of dropped packets.
func (s LinkStats) Dropped() uint64 {
	return s.DroppedLoss + s.DroppedQueue + s.DroppedBlackhole + s.DroppedOther
}

// target is where a direction delivers: a pipe's far end, the stack above a
// Shaped endpoint, or a link endpoint written to (writeTarget). deliver is
// only called from the direction's goroutine, one batch at a time, in
// delivery order. It must not release the packets (the direction does) and
// reports how many of them, and how many bytes, arrived.
type target interface {
	deliver(batch []inflight) (n int, bytes uint64)
}

// inflight is one packet on the wire.
type inflight struct {
	at    int64 // delivery time, monotonic nanoseconds since epoch
	seq   uint64
	proto tcpip.NetworkProtocolNumber
	size  int
	pkt   *stack.PacketBuffer
}

// direction is one way of an emulated link: a time-ordered queue and the
// goroutine delivering from it.
type direction struct {
	to target

	mu        sync.Mutex // guards everything below; never held while delivering
	params    LinkParams
	rng       *rand.Rand
	heap      []inflight // min-heap by (at, seq)
	seq       uint64
	busyUntil int64 // when the rate limiter finishes serializing
	lastAt    int64 // latest delivery time handed out (for in-order jitter)
	stats     LinkStats
	closed    bool

	// The corruption budget (armCorruption): payload bytes seen since it
	// was armed, and segments still to rewrite.
	corruptSeen int64
	corruptLeft int

	wake chan struct{} // cap 1
	stop chan struct{}
	done chan struct{}
}

var _ stack.NetworkDispatcher = (*direction)(nil)

// epoch anchors monotonic time so that deadlines are plain int64s.
var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// newDirection returns a direction delivering to `to`; start its goroutine
// with `go d.run()`.
func newDirection(p LinkParams, to target) *direction {
	d := &direction{
		to:     to,
		params: p,
		rng:    newRand(p.Seed),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	d.armCorruption()
	return d
}

func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x756d707463702d74))
}

func (d *direction) getParams() LinkParams {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.params
}

func (d *direction) getStats() LinkStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *direction) setParams(p LinkParams) {
	d.mu.Lock()
	if p.Seed != d.params.Seed {
		d.rng = newRand(p.Seed)
	}
	// Changing the corruption settings counts their bytes from now on
	// (so a test can start corrupting mid-transfer); setting the same ones
	// again, as when toggling a blackhole, keeps the running count.
	rearm := p.CorruptAfter != d.params.CorruptAfter || p.CorruptSegments != d.params.CorruptSegments
	d.params = p
	if rearm {
		d.armCorruption()
	}
	d.mu.Unlock()
	d.kick() // a blackhole must flush the queue now
}

func (d *direction) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close stops the goroutine, which drops what is still in flight.
// Idempotent.
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

// wait waits for the goroutine to exit if the direction is closed, and
// returns at once otherwise: gVisor's Stack.Wait calls a link's Wait
// before it closes the link.
func (d *direction) wait() {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		<-d.done
	}
}

// enqueue takes packets a stack writes. mtu 0 means the parameters' MTU.
// Dropped packets count as written, as on a real link.
func (d *direction) enqueue(pkts []*stack.PacketBuffer, mtu uint32) (int, tcpip.Error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	if mtu == 0 {
		mtu = d.params.mtu()
	}
	now := nanotime()
	newHead := false
	for _, pkt := range pkts {
		newHead = d.admit(now, pkt.NetworkProtocolNumber, pkt, mtu) || newHead
	}
	d.mu.Unlock()
	if newHead {
		d.kick()
	}
	return len(pkts), nil
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: a direction is
// attached to the link whose inbound packets it carries (Forward, and the
// inner link of Shape). It does not keep pkt.
func (d *direction) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.mu.Lock()
	if d.closed {
		d.stats.SentPackets++
		d.stats.SentBytes += uint64(pkt.Size())
		d.stats.DroppedOther++
		d.mu.Unlock()
		return
	}
	newHead := d.admit(nanotime(), proto, pkt, d.params.mtu())
	d.mu.Unlock()
	if newHead {
		d.kick()
	}
}

// DeliverLinkPacket implements stack.NetworkDispatcher. Raw IP links have
// no link-level packets to sniff.
func (*direction) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// admit decides the fate of one packet that enters at now, and queues it
// (and its duplicate) unless it is dropped. It reports whether the earliest
// delivery time changed, so the goroutine must be woken. d.mu is held.
func (d *direction) admit(now int64, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, mtu uint32) bool {
	p := &d.params
	size := pkt.Size()
	d.stats.SentPackets++
	d.stats.SentBytes += uint64(size)
	if p.Blackhole {
		d.stats.DroppedBlackhole++
		return false
	}
	if uint32(size) > mtu {
		d.stats.DroppedOther++
		return false
	}
	at := now
	if p.Rate > 0 {
		start := max(now, d.busyUntil)
		backlog := (start - now) * p.Rate / 8 / int64(time.Second)
		if backlog+int64(size) > int64(p.queueLimit()) {
			d.stats.DroppedQueue++
			return false
		}
		d.busyUntil = start + int64(size)*8*int64(time.Second)/p.Rate
		at = d.busyUntil
	}
	if p.Loss > 0 && d.rng.Float64() < p.Loss {
		d.stats.DroppedLoss++
		return false
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
	// The middleboxes see only packets that go on: what they count was
	// carried (short of a blackhole starting while it is in flight).
	var rewritten *buffer.View
	if p.middleboxActive() {
		rewritten = d.middlebox(pkt, size)
	}
	newHead := len(d.heap) == 0 || at < d.heap[0].at
	copies := 1
	if p.Duplicate > 0 && d.rng.Float64() < p.Duplicate {
		d.stats.Duplicated++
		copies = 2 // same time, next seq: the copy follows right after
	}
	for range copies {
		// A fresh packet whose payload is the whole of pkt (or of the
		// middleboxes' rewritten copy), shared by reference
		// (copy-on-write chunks): the far side may consume
		// headers of its copy (a stack) or write it out whole (a link).
		var payload buffer.Buffer
		if rewritten != nil {
			payload = buffer.MakeWithView(rewritten.Clone())
		} else {
			payload = pkt.ToBuffer()
		}
		out := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
		out.NetworkProtocolNumber = proto
		d.seq++
		d.push(inflight{at: at, seq: d.seq, proto: proto, size: size, pkt: out})
	}
	if rewritten != nil {
		rewritten.Release()
	}
	return newHead
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
	n, bytes := d.to.deliver(batch)
	for _, it := range batch {
		it.pkt.DecRef()
	}
	d.mu.Lock()
	d.stats.DeliveredPackets += uint64(n)
	d.stats.DeliveredBytes += bytes
	d.stats.DroppedOther += uint64(len(batch) - n)
	d.mu.Unlock()
}

// dispatch delivers batch to disp (nothing arrives if it is nil).
func dispatch(disp stack.NetworkDispatcher, batch []inflight) (n int, bytes uint64) {
	if disp == nil {
		return 0, 0
	}
	for _, it := range batch {
		disp.DeliverNetworkPacket(it.proto, it.pkt)
		bytes += uint64(it.size)
	}
	return len(batch), bytes
}

// writeTarget writes what a direction delivers out of a link endpoint, as
// one WritePackets call per batch.
type writeTarget struct {
	ep   stack.LinkEndpoint
	list stack.PacketBufferList // reused: only the direction's goroutine uses it
}

func (w *writeTarget) deliver(batch []inflight) (n int, bytes uint64) {
	for len(batch) > 0 {
		// The list holds references of its own, so that Reset can
		// release them; the direction releases its own.
		for _, it := range batch {
			w.list.PushBack(it.pkt.IncRef())
		}
		m, err := w.ep.WritePackets(w.list)
		w.list.Reset()
		m = min(max(m, 0), len(batch))
		for _, it := range batch[:m] {
			bytes += uint64(it.size)
		}
		n += m
		batch = batch[m:]
		switch err.(type) {
		case nil:
			return n, bytes
		case *tcpip.ErrClosedForSend:
			return n, bytes // the rest cannot go out either
		}
		// Some other error (a full device queue, say) lost one packet:
		// drop it as a real link would and go on with the rest.
		if len(batch) > 0 {
			batch = batch[1:]
		}
	}
	return n, bytes
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
