package tun

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Forwarder joins two link endpoints through an emulated link (Forward).
// Its methods are safe for concurrent use.
type Forwarder struct {
	a, b   stack.LinkEndpoint
	ab, ba *direction

	closeOnce sync.Once
}

// Forward joins two link endpoints through an emulated link: every packet
// that a's link delivers inbound (for a TUN device: what the kernel routes
// into it) is written out of b after ab's shaping, and vice versa with ba.
// Works with any stack.LinkEndpoint that carries raw IP packets
// (Device.LinkEndpoint, a pipe end); a and b must not be attached to
// anything else, and stay the caller's to close after Close.
//
// Each direction has one goroutine that writes packets out when their time
// has come, in batches; the packets are not copied. As everywhere in the
// emulation, LinkParams.MTU 0 means 1500: between devices with a larger MTU,
// set it, or large packets are dropped. Close stops the forwarding.
func Forward(a, b stack.LinkEndpoint, ab, ba LinkParams) *Forwarder {
	f := &Forwarder{a: a, b: b}
	f.ab = newDirection(ab, &writeTarget{ep: b})
	f.ba = newDirection(ba, &writeTarget{ep: a})
	go f.ab.run()
	go f.ba.run()
	a.Attach(f.ab)
	b.Attach(f.ba)
	return f
}

// SetParams replaces the parameters of both directions. They take effect at
// once: a blackhole also drops packets already in flight; a new rate or
// delay applies to packets entering from now on (order is kept).
func (f *Forwarder) SetParams(ab, ba LinkParams) {
	f.ab.setParams(ab)
	f.ba.setParams(ba)
}

// Params returns the parameters of both directions.
func (f *Forwarder) Params() (ab, ba LinkParams) {
	return f.ab.getParams(), f.ba.getParams()
}

// Stats returns the counters of both directions: a packet is sent when a's
// (b's) link delivers it, and delivered when written out of b (a).
func (f *Forwarder) Stats() (ab, ba LinkStats) {
	return f.ab.getStats(), f.ba.getStats()
}

// Close detaches the forwarder from a and b (for a TUN device this stops
// and waits for its reader), stops both directions, dropping what is in
// flight, and waits for their goroutines: nothing is written out of a or b
// after Close returns. It is idempotent.
func (f *Forwarder) Close() {
	f.closeOnce.Do(func() {
		f.a.Attach(nil)
		f.b.Attach(nil)
		f.ab.close()
		f.ba.close()
		f.ab.wait()
		f.ba.wait()
	})
}
