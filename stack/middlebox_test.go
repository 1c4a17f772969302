package stack_test

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// deliverRewritten hands an IPv4 TCP packet that a test middlebox changed
// to the stack above ep, with its TCP checksum made right again (as a
// rewriting middlebox does), so only MPTCP's own checks can notice.
func deliverRewritten(ep *nested.Endpoint, proto tcpip.NetworkProtocolNumber, raw []byte) {
	ip := header.IPv4(raw)
	tcp := header.TCP(raw[ip.HeaderLength():])
	tcp.SetChecksum(0)
	l := uint16(len(raw) - int(ip.HeaderLength()))
	tcp.SetChecksum(^checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), l)))
	np := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
	ep.DeliverNetworkPacket(proto, np)
	np.DecRef()
}
