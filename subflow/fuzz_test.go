package subflow

import (
	"net/netip"
	"testing"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	fuzzLocal  = netip.MustParseAddrPort("10.1.0.2:80")
	fuzzRemote = netip.MustParseAddrPort("10.1.0.1:40000")
)

// ipv4TCP builds an IPv4 TCP packet from its parts, checksums correct.
func ipv4TCP(src, dst netip.AddrPort, flags uint8, seq, ack uint32, opts, payload []byte) []byte {
	opts = append([]byte{}, opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	th := header.TCP(b[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack, DataOffset: uint8(tcpLen), Flags: header.TCPFlags(flags), WindowSize: 1000})
	copy(th[header.TCPMinimumSize:], opts)
	copy(th[tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(th)))
	th.SetChecksum(^checksum.Checksum(th, sum))
	return b
}

// FuzzLayerInbound feeds arbitrary TCP options, flags, sequence numbers
// and payloads to the layer's inbound path, for a listening port and for an
// established MPTCP subflow. It must never panic, and whatever it accepts
// must leave the subflow's tables consistent.
func FuzzLayerInbound(f *testing.F) {
	mpcSyn := (&option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, Form: option.MPCSyn}).Append(nil)
	dss := (&option.DSS{HasDataAck: true, DataAck64: true, DataAck: 5, HasMapping: true, DSN64: true, DSN: 1001, SSN: 1, DataLen: 4}).Append(nil)
	fin := (&option.DSS{HasMapping: true, DSN64: true, DSN: 1005, SSN: 0, DataLen: 1, DataFin: true}).Append(nil)
	f.Add(uint8(header.TCPFlagSyn), uint32(0), uint32(0), mpcSyn, []byte{})
	f.Add(uint8(header.TCPFlagAck), uint32(101), uint32(1), dss, []byte("data"))
	f.Add(uint8(header.TCPFlagAck|header.TCPFlagFin), uint32(105), uint32(1), fin, []byte{})
	f.Add(uint8(header.TCPFlagAck), uint32(101), uint32(1), []byte{30, 3, 0x20}, []byte("x"))
	f.Add(uint8(header.TCPFlagAck), uint32(101), uint32(1), []byte{30, 40, 0x20, 0xff}, []byte{})
	f.Fuzz(func(t *testing.T, flags uint8, seq, ack uint32, opts, payload []byte) {
		if len(opts) > 40 || len(payload) > 2000 {
			return
		}
		reg := NewRegistry(false)
		reg.Listen(fuzzLocal.Port())
		l := NewLayer(channel.New(4, 1500, ""), reg)
		sf, _ := reg.acceptSYN(Tuple{Local: fuzzLocal, Remote: fuzzRemote}, false)
		sf.mu.Lock()
		sf.irs, sf.irsOK, sf.iss, sf.issOK = 100, true, 0, true
		sf.meta.setRemoteKey(42, 1000)
		sf.establishLocked()
		sf.mu.Unlock()
		for _, src := range []netip.AddrPort{fuzzRemote, netip.MustParseAddrPort("10.1.0.9:1234")} {
			raw := ipv4TCP(src, fuzzLocal, flags, seq, ack, opts, payload)
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
			np, _ := l.inspectIn(header.IPv4ProtocolNumber, pkt)
			if np != nil {
				np.DecRef()
			}
			pkt.DecRef()
		}
		sf.mu.Lock()
		defer sf.mu.Unlock()
		for i := 1; i < len(sf.rx.e); i++ {
			if sf.rx.e[i-1].Off > sf.rx.e[i].Off {
				t.Fatalf("receive mappings out of order: %+v", sf.rx.e)
			}
		}
		if m := sf.meta; m.SndUna() > m.sndMax.Load() {
			t.Fatalf("DATA_ACK %d beyond what was sent %d", m.SndUna(), m.sndMax.Load())
		}
	})
}
