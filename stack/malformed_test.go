package stack_test

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// garbler is a middlebox on a link's inbound side that mangles the MPTCP
// option of every nth segment carrying one (after the handshake) and fixes
// the TCP checksum, so only the MPTCP layer can notice.
type garbler struct {
	nested.Endpoint
	every   int
	seen    atomic.Int64
	mangled atomic.Int64
	rng     *rand.Rand
}

func newGarbler(child gvstack.LinkEndpoint, every int) *garbler {
	g := &garbler{every: every, rng: rand.New(rand.NewPCG(1, 2))}
	g.Endpoint.Init(child, g)
	return g
}

func (g *garbler) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if proto != header.IPv4ProtocolNumber {
		g.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	raw := pkt.Data().AsRange().ToSlice()
	ip := header.IPv4(raw)
	tcp := header.TCP(raw[ip.HeaderLength():])
	opts := tcp.Options()
	at := -1
	for i := 0; i < len(opts); {
		if opts[i] <= 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			break
		}
		if opts[i] == 30 {
			at = i
			break
		}
		i += int(opts[i+1])
	}
	n := g.seen.Add(1)
	if at < 0 || n < 20 || n%int64(g.every) != 0 {
		g.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	o := opts[at:]
	switch g.mangled.Add(1) % 5 {
	case 0: // truncated: a length that cuts the option short
		o[1] = 3
	case 1: // unknown subtype
		o[2] = 0xf0 | o[2]&0x0f
	case 2: // garbage after kind and length
		for i := 2; i < int(o[1]); i++ {
			o[i] = byte(g.rng.Uint32())
		}
	case 3: // a length running past the option area
		o[1] = byte(len(o) + 4)
	case 4: // a DSS whose flags promise more fields than the length holds
		if o[2]>>4 == 2 {
			o[3] |= 0x0f
		} else {
			o[1] = 2
		}
	}
	deliverRewritten(&g.Endpoint, proto, raw)
}

// TestMalformedOptionsFromPeer: mangled MPTCP options neither panic the
// stack nor corrupt what the application reads; the segments that carried
// them are dropped and TCP recovers them.
func TestMalformedOptionsFromPeer(t *testing.T) {
	a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	ga, gb := newGarbler(a, 13), newGarbler(b, 11)
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: ga, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	defer sa.Close()
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: gb, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	defer sb.Close()
	c1, c2 := dialAccept(t, sa, sb, "10.9.0.2")
	require.True(t, c1.MultipathTCP())
	require.True(t, c2.MultipathTCP())
	exchange(t, c1, c2, 8<<20)
	require.Positive(t, ga.mangled.Load())
	require.Positive(t, gb.mangled.Load())
	var malformed uint64
	for _, c := range []*stack.Conn{c1, c2} {
		for _, k := range c.SubflowCounters() {
			malformed += k.MalformedOptions + k.SegmentsDropped
		}
	}
	require.Positive(t, malformed, "the mangled options were noticed")
	c1.Close()
	c2.Close()
}
