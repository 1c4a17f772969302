package hostile

import (
	"errors"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MaxFlows bounds the flows a Tap remembers: a test has a handful, and a
// flood of new 4-tuples must not grow memory without end.
const MaxFlows = 64

// headBytes is how much of a packet is flattened to parse its headers: a
// maximal IPv4 header (60) plus a maximal TCP header (60).
const headBytes = 120

// Tap is a link endpoint between a link (its child) and a stack: packets
// pass unchanged both ways while the tap learns their TCP flows. Injected
// packets (ToStack, ToPeer) are not learnt from: they are lies.
type Tap struct {
	nested.Endpoint

	mu    sync.Mutex
	flows map[flowKey]*Flow
	clock uint64
	in    uint64 // packets seen from the peer
	out   uint64 // packets seen from the stack
}

var _ stack.LinkEndpoint = (*Tap)(nil)
var _ stack.NetworkDispatcher = (*Tap)(nil)

type flowKey struct{ stack, peer netip.AddrPort }

// NewTap wraps child. Use it where the conformance rigs take a wrap func:
//
//	func(ep stack.LinkEndpoint) stack.LinkEndpoint { tap = hostile.NewTap(ep); return tap }
func NewTap(child stack.LinkEndpoint) *Tap {
	t := &Tap{flows: make(map[flowKey]*Flow)}
	t.Endpoint.Init(child, t)
	return t
}

// DeliverNetworkPacket learns from a packet the peer sent and passes it up.
func (t *Tap) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	t.observe(FromPeer, pkt)
	t.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets learns from the packets the stack sends and passes them on.
func (t *Tap) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		t.observe(FromStack, pkt)
	}
	return t.Endpoint.WritePackets(pkts)
}

// observe parses pkt's headers and updates its flow.
func (t *Tap) observe(dir Dir, pkt *stack.PacketBuffer) {
	var buf [headBytes]byte
	head := buf[:0]
	for _, s := range pkt.AsSlices() {
		head = append(head, s[:min(len(s), headBytes-len(head))]...)
		if len(head) == headBytes {
			break
		}
	}
	seg, ok := parseSegment(head, pkt.Size())
	if !ok {
		return
	}
	k := flowKey{stack: seg.src, peer: seg.dst}
	if dir == FromPeer {
		k = flowKey{stack: seg.dst, peer: seg.src}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if dir == FromPeer {
		t.in++
	} else {
		t.out++
	}
	t.clock++
	f := t.flows[k]
	if f == nil {
		if len(t.flows) >= MaxFlows {
			t.evictLocked()
		}
		f = &Flow{Stack: k.stack, Peer: k.peer}
		f.Side[0].WndScale, f.Side[1].WndScale = -1, -1
		t.flows[k] = f
	}
	f.seen = t.clock
	f.learn(dir, &seg)
}

// evictLocked forgets the flow seen least recently.
func (t *Tap) evictLocked() {
	var oldest flowKey
	first := true
	var at uint64
	for k, f := range t.flows {
		if first || f.seen < at {
			oldest, at, first = k, f.seen, false
		}
	}
	delete(t.flows, oldest)
}

// Flows returns a snapshot of every flow the tap remembers.
func (t *Tap) Flows() []Flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Flow, 0, len(t.flows))
	for _, f := range t.flows {
		out = append(out, *f)
	}
	return out
}

// Flow returns a snapshot of the flow between our stack's end and the
// peer's end, and whether the tap knows it.
func (t *Tap) Flow(ours, peer netip.AddrPort) (Flow, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.flows[flowKey{stack: ours, peer: peer}]
	if !ok {
		return Flow{}, false
	}
	return *f, true
}

// Packets returns how many packets the tap saw from the peer (in) and from
// the stack (out), injected ones excluded.
func (t *Tap) Packets() (in, out uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.in, t.out
}

// ErrNotIP is returned for an injected packet that is not IPv4 or IPv6.
var ErrNotIP = errors.New("hostile: not an IPv4 or IPv6 packet")

// protoOf returns the network protocol of a raw IP packet.
func protoOf(ip []byte) (tcpip.NetworkProtocolNumber, error) {
	if len(ip) == 0 {
		return 0, ErrNotIP
	}
	switch header.IPVersion(ip) {
	case header.IPv4Version:
		return header.IPv4ProtocolNumber, nil
	case header.IPv6Version:
		return header.IPv6ProtocolNumber, nil
	}
	return 0, ErrNotIP
}

// newPacket copies ip into a fresh packet buffer, as a link delivers it.
func newPacket(ip []byte) *stack.PacketBuffer {
	v := buffer.NewViewSize(len(ip))
	copy(v.AsSlice(), ip)
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
}

// ToStack delivers the raw IP packet ip to the stack above the tap as if
// the link had: it goes through everything above (umptcp's option layer,
// gVisor). The tap does not learn from it. It returns once the stack's
// inbound path has taken the packet.
func (t *Tap) ToStack(ip []byte) error {
	proto, err := protoOf(ip)
	if err != nil {
		return err
	}
	pkt := newPacket(ip)
	defer pkt.DecRef()
	t.Endpoint.DeliverNetworkPacket(proto, pkt)
	return nil
}

// ToPeer writes the raw IP packet ip into the link below the tap, so the
// peer receives it as if our stack had sent it. The tap does not learn
// from it.
func (t *Tap) ToPeer(ip []byte) error {
	proto, err := protoOf(ip)
	if err != nil {
		return err
	}
	pkt := newPacket(ip)
	defer pkt.DecRef()
	pkt.NetworkProtocolNumber = proto
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if _, terr := t.Endpoint.WritePackets(l); terr != nil {
		return errors.New("hostile: writing to the link: " + terr.String())
	}
	return nil
}

// Inject builds a segment on the current state of the flow (ours, peer)
// and sends it at once in direction dir (FromPeer: ToStack; FromStack:
// ToPeer), so that the learnt sequence numbers are as fresh as possible.
// It returns the flow snapshot it built from.
func (t *Tap) Inject(ours, peer netip.AddrPort, dir Dir, spec Spec) (Flow, error) {
	f, ok := t.Flow(ours, peer)
	if !ok {
		return f, ErrNoFlow
	}
	ip, err := f.Build(dir, spec)
	if err != nil {
		return f, err
	}
	if dir == FromPeer {
		return f, t.ToStack(ip)
	}
	return f, t.ToPeer(ip)
}

// ErrNoFlow is returned by Inject for a flow the tap has not seen.
var ErrNoFlow = errors.New("hostile: no such flow")
