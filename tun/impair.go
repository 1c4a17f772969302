package tun

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Impaired wraps any link endpoint (a TUN device's, say) and drops packets
// at random in either direction, or all of them. It brings loss to paths
// whose other end is the real kernel, where the pipe's emulation cannot
// sit (this machine's kernel has no netem).
type Impaired struct {
	nested.Endpoint
	outLoss, inLoss float64
	blackhole       atomic.Bool

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	droppedOut, droppedIn atomic.Uint64
}

var _ stack.LinkEndpoint = (*Impaired)(nil)
var _ stack.NetworkDispatcher = (*Impaired)(nil)

// Impair wraps ep: each packet written is dropped with probability
// outLoss, each packet received with probability inLoss.
func Impair(ep stack.LinkEndpoint, outLoss, inLoss float64, seed uint64) *Impaired {
	i := &Impaired{outLoss: outLoss, inLoss: inLoss, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	i.Endpoint.Init(ep, i)
	return i
}

// SetBlackhole drops everything in both directions while on.
func (i *Impaired) SetBlackhole(on bool) { i.blackhole.Store(on) }

// Dropped returns how many packets were dropped going out and coming in.
func (i *Impaired) Dropped() (out, in uint64) { return i.droppedOut.Load(), i.droppedIn.Load() }

func (i *Impaired) drop(p float64) bool {
	if i.blackhole.Load() {
		return true
	}
	if p <= 0 {
		return false
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.rng.Float64() < p
}

// WritePackets implements stack.LinkEndpoint. Dropped packets count as
// written, as on a real lossy link.
func (i *Impaired) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var keep stack.PacketBufferList
	all := pkts.AsSlice()
	for _, pkt := range all {
		if i.drop(i.outLoss) {
			i.droppedOut.Add(1)
			continue
		}
		keep.PushBack(pkt)
	}
	if keep.Len() == 0 {
		return len(all), nil
	}
	n, err := i.Endpoint.WritePackets(keep)
	return n + len(all) - keep.Len(), err
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (i *Impaired) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if i.drop(i.inLoss) {
		i.droppedIn.Add(1)
		return
	}
	i.Endpoint.DeliverNetworkPacket(proto, pkt)
}
