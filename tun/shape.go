package tun

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Shaped is a link endpoint that puts an emulated link between a stack and
// the link endpoint it wraps (Shape).
type Shaped struct {
	nested.Endpoint // the inner link
	out, in         *direction
	outMTU          atomic.Uint32 // out's LinkParams.MTU (MTU is asked for per packet)

	mu         sync.RWMutex // guards dispatcher
	dispatcher stack.NetworkDispatcher
}

var _ stack.LinkEndpoint = (*Shaped)(nil)

// Shape wraps inner (e.g. a TUN device's endpoint that a umptcp stack uses)
// so that packets the stack writes pass through `out` before reaching
// inner, and packets inner delivers pass through `in` before reaching the
// stack. Shaped implements stack.LinkEndpoint for links carrying raw IP
// packets; its MTU is the smaller of inner's and out's (LinkParams.MTU 0
// meaning 1500).
//
// Each direction has one goroutine; Close (which closing the stack does)
// stops them and closes inner.
func Shape(inner stack.LinkEndpoint, out, in LinkParams) *Shaped {
	s := &Shaped{}
	s.out = newDirection(out, &writeTarget{ep: inner})
	s.in = newDirection(in, s)
	// inner delivers straight into the in direction, which delivers to
	// the stack (see deliver).
	s.Endpoint.Init(inner, s.in)
	s.outMTU.Store(out.mtu())
	go s.out.run()
	go s.in.run()
	return s
}

// SetParams replaces the parameters of both directions. They take effect
// at once: a blackhole also drops packets already in flight; a new rate or
// delay applies to packets entering from now on (order is kept).
func (s *Shaped) SetParams(out, in LinkParams) {
	s.out.setParams(out)
	s.in.setParams(in)
	s.outMTU.Store(out.mtu())
}

// Params returns the parameters of both directions.
func (s *Shaped) Params() (out, in LinkParams) {
	return s.out.getParams(), s.in.getParams()
}

// Stats returns the counters of both directions: out counts what the stack
// wrote and what reached inner, in what inner delivered and what reached
// the stack.
func (s *Shaped) Stats() (out, in LinkStats) {
	return s.out.getStats(), s.in.getStats()
}

// MTU implements stack.LinkEndpoint.
func (s *Shaped) MTU() uint32 {
	return min(s.Endpoint.MTU(), s.outMTU.Load())
}

// WritePackets implements stack.LinkEndpoint: the packets enter the out
// direction (by reference) and reach inner when their time has come.
// Dropped packets count as written.
func (s *Shaped) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return s.out.enqueue(pkts.AsSlice(), 0)
}

// GSOMaxSize implements stack.GSOEndpoint: no GSO, the emulation shapes
// packets as they are on the wire.
func (*Shaped) GSOMaxSize() uint32 { return 0 }

// SupportedGSO implements stack.GSOEndpoint.
func (*Shaped) SupportedGSO() stack.SupportedGSO { return stack.GSONotSupported }

// Close implements stack.LinkEndpoint: it stops both directions, dropping
// what is in flight, and closes inner. Idempotent as far as inner's Close
// is.
func (s *Shaped) Close() {
	s.out.close()
	s.in.close()
	s.Endpoint.Close()
}

// Wait implements stack.LinkEndpoint: after Close it waits for both
// directions' goroutines, then for inner. Before Close only inner is
// waited for (gVisor's Stack.Wait calls Wait before it closes the link).
func (s *Shaped) Wait() {
	s.out.wait()
	s.in.wait()
	s.Endpoint.Wait()
}

// Attach implements stack.LinkEndpoint: attaching a stack attaches the in
// direction to inner, detaching it (nil) detaches inner.
func (s *Shaped) Attach(d stack.NetworkDispatcher) {
	s.mu.Lock()
	s.dispatcher = d
	s.mu.Unlock()
	s.Endpoint.Attach(d)
}

// deliver implements target for the in direction: to the stack, if one is
// attached.
func (s *Shaped) deliver(batch []inflight) (int, uint64) {
	s.mu.RLock()
	disp := s.dispatcher
	s.mu.RUnlock()
	return dispatch(disp, batch)
}
