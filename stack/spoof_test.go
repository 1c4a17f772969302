package stack_test

import (
	"sync"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// spoofer sits on a stack's inbound link as an on-path attacker: it sees
// every segment and may add segments of its own right after one, built
// from it so that they are in the receiver's TCP window (same addresses,
// the sequence number right after the seen segment, its ACK number).
// Such a segment passes every TCP check; only the MPTCP rules stop it.
type spoofer struct {
	nested.Endpoint
	mu sync.Mutex
	// pick is called with every inbound IPv4 TCP segment and the DSS it
	// carried, if any; the option areas it returns are sent as spoofed
	// pure ACKs after that segment.
	pick func(seg header.TCP, payloadLen int, d option.DSS, hasDSS bool) [][]byte
}

func newSpoofer(child gvstack.LinkEndpoint) *spoofer {
	s := &spoofer{}
	s.Endpoint.Init(child, s)
	return s
}

func (s *spoofer) setPick(f func(seg header.TCP, payloadLen int, d option.DSS, hasDSS bool) [][]byte) {
	s.mu.Lock()
	s.pick = f
	s.mu.Unlock()
}

func (s *spoofer) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	s.mu.Lock()
	pick := s.pick
	s.mu.Unlock()
	if proto != header.IPv4ProtocolNumber || pick == nil {
		s.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	raw := pkt.Data().AsRange().ToSlice()
	ip := header.IPv4(raw)
	if len(raw) < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) {
		s.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	tcp := header.TCP(raw[ip.HeaderLength():])
	payloadLen := len(tcp) - int(tcp.DataOffset())
	d, has := findDSS(tcp.Options())
	extra := pick(tcp, payloadLen, d, has)
	s.Endpoint.DeliverNetworkPacket(proto, pkt)
	for _, opts := range extra {
		deliverRewritten(&s.Endpoint, proto, spoofAfter(raw, opts))
	}
}

// findDSS returns the DSS option in opts, if one parses.
func findDSS(opts []byte) (option.DSS, bool) {
	for i := 0; i < len(opts) && i < 64; {
		if opts[i] <= 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			break
		}
		if opts[i] == 30 && opts[i+1] >= 3 && option.Subtype(opts[i+2]>>4) == option.SubtypeDSS {
			d, _, err := option.ParseDSS(opts[i : i+int(opts[i+1])])
			return d, err == nil
		}
		i += int(opts[i+1])
	}
	return option.DSS{}, false
}

// spoofAfter builds a pure ACK carrying opts that follows the segment raw
// (an IPv4 TCP segment): the next sequence number, the same ACK.
func spoofAfter(raw []byte, opts []byte) []byte {
	ip := header.IPv4(raw)
	tcp := header.TCP(raw[ip.HeaderLength():])
	payloadLen := len(tcp) - int(tcp.DataOffset())
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	buf := make([]byte, header.IPv4MinimumSize+tcpLen)
	nip := header.IPv4(buf)
	nip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(buf)),
		ID:          ip.ID() + 1,
		TTL:         ip.TTL(),
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     ip.SourceAddress(),
		DstAddr:     ip.DestinationAddress(),
	})
	nip.SetChecksum(^nip.CalculateChecksum())
	th := header.TCP(buf[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{
		SrcPort:    tcp.SourcePort(),
		DstPort:    tcp.DestinationPort(),
		SeqNum:     tcp.SequenceNumber() + uint32(payloadLen),
		AckNum:     tcp.AckNumber(),
		DataOffset: uint8(tcpLen),
		Flags:      header.TCPFlagAck,
		WindowSize: tcp.WindowSize(),
	})
	copy(th[header.TCPMinimumSize:], opts)
	return buf
}

// dataFinDSS is a DATA_FIN-only DSS at dsn, as a sender closing sends it.
func dataFinDSS(dsn uint64) []byte {
	d := option.DSS{HasMapping: true, DSN64: true, DSN: dsn, SSN: 0, DataLen: 1, DataFin: true}
	return d.Append(nil)
}
