package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// countingDispatcher counts what the layer hands on.
type countingDispatcher struct{ n int }

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}
func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// ipv6With builds an IPv6 packet whose extension headers (each 8 bytes,
// next-header chained) end in a TCP header.
func ipv6With(exts ...uint8) []byte {
	b := make([]byte, header.IPv6MinimumSize+8*len(exts)+header.TCPMinimumSize)
	first := uint8(header.TCPProtocolNumber)
	if len(exts) > 0 {
		first = exts[0]
	}
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: tcpip.TransportProtocolNumber(first), HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 1}), DstAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 2})})
	off := header.IPv6MinimumSize
	for i := range exts {
		next := uint8(header.TCPProtocolNumber)
		if i+1 < len(exts) {
			next = exts[i+1]
		}
		b[off] = next // next header; length 0: 8 bytes (and the fragment header is 8)
		off += 8
	}
	header.TCP(b[off:]).Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck})
	return b
}

// TestFragmentedTCPDropped: TCP in IPv4 fragments, and IPv6 TCP behind
// extension headers (a fragment header among them), never reach gVisor,
// whose reassembly would hand TCP options the layer never read; other
// packets pass.
func TestFragmentedTCPDropped(t *testing.T) {
	reg := NewRegistry(false)
	l := NewLayer(channel.New(1, 1500, ""), reg)
	var d countingDispatcher
	l.Attach(&d)
	deliver := func(proto tcpip.NetworkProtocolNumber, b []byte) {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		l.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
	v4 := func(flags uint8, offset uint16, proto tcpip.TransportProtocolNumber) []byte {
		b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
		header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto), Flags: flags, FragmentOffset: offset,
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
		return b
	}
	for _, tc := range []struct {
		name  string
		proto tcpip.NetworkProtocolNumber
		b     []byte
		drop  bool
	}{
		{"IPv4 first fragment of TCP", header.IPv4ProtocolNumber, v4(header.IPv4FlagMoreFragments, 0, header.TCPProtocolNumber), true},
		{"IPv4 later fragment of TCP", header.IPv4ProtocolNumber, v4(0, 1480, header.TCPProtocolNumber), true},
		{"IPv4 fragment of UDP", header.IPv4ProtocolNumber, v4(header.IPv4FlagMoreFragments, 0, header.UDPProtocolNumber), false},
		{"IPv4 TCP, not fragmented", header.IPv4ProtocolNumber, v4(header.IPv4FlagDontFragment, 0, header.TCPProtocolNumber), false},
		{"IPv6 TCP behind a fragment header", header.IPv6ProtocolNumber, ipv6With(44), true},
		{"IPv6 TCP behind hop-by-hop and destination options", header.IPv6ProtocolNumber, ipv6With(0, 60), true},
		{"IPv6 TCP", header.IPv6ProtocolNumber, ipv6With(), false},
	} {
		before, dropped := d.n, reg.MIB().Get(TCPFragmentDrop)
		deliver(tc.proto, tc.b)
		if tc.drop {
			require.Equal(t, before, d.n, tc.name)
			require.Equal(t, dropped+1, reg.MIB().Get(TCPFragmentDrop), tc.name)
		} else {
			require.Equal(t, before+1, d.n, tc.name)
			require.Equal(t, dropped, reg.MIB().Get(TCPFragmentDrop), tc.name)
		}
	}
}
