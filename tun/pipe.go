package tun

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

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
	return e.dir.getParams()
}

// Stats returns the counters of the direction this endpoint sends in.
func (e *Endpoint) Stats() LinkStats {
	return e.dir.getStats()
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
func (e *Endpoint) Wait() { e.dir.wait() }

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

// deliver implements target: the peer's sending direction delivers to this
// endpoint's dispatcher.
func (e *Endpoint) deliver(batch []inflight) (int, uint64) {
	e.mu.RLock()
	disp := e.dispatcher
	e.mu.RUnlock()
	return dispatch(disp, batch)
}
