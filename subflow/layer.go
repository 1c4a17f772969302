package subflow

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Layer is the option-rewriting link endpoint: it wraps the link of one NIC
// and adds or reads the MPTCP options of the segments of known subflows.
// Segments of other connections pass untouched, so plain gVisor TCP works on
// the same stack.
type Layer struct {
	nested.Endpoint
	reg    *Registry
	closed atomic.Bool
}

var _ stack.LinkEndpoint = (*Layer)(nil)
var _ stack.NetworkDispatcher = (*Layer)(nil)

// NewLayer wraps child, a network-layer link (TUN, emulated pipe, channel).
func NewLayer(child stack.LinkEndpoint, reg *Registry) *Layer {
	l := &Layer{reg: reg}
	l.Endpoint.Init(child, l)
	return l
}

// Detach stops all traffic through the layer and detaches the child link,
// waiting for its delivery goroutine to finish. Call it before closing the
// gVisor stack: gVisor's Stack.Wait detaches links while holding the stack
// lock, and a link goroutine still delivering a packet (which may need that
// lock to answer it) would then deadlock.
func (l *Layer) Detach() {
	l.closed.Store(true)
	l.Child().Attach(nil)
}

// Capabilities hides transmit checksum offload: the layer derives the
// payload's checksum from the TCP checksum gVisor computed, so gVisor has to
// compute it.
func (l *Layer) Capabilities() stack.LinkEndpointCapabilities {
	return l.Endpoint.Capabilities() &^ stack.CapabilityTXChecksumOffload
}

// GSOMaxSize is 0: one DSS mapping per segment for now.
func (l *Layer) GSOMaxSize() uint32 { return 0 }

// SupportedGSO reports no GSO, see GSOMaxSize.
func (l *Layer) SupportedGSO() stack.SupportedGSO { return stack.GSONotSupported }

// segment is a parsed view of an IPv4/IPv6 TCP packet's headers.
type segment struct {
	v6         bool
	ip         []byte
	tcp        header.TCP
	src, dst   netip.Addr
	srcA, dstA tcpip.Address // the same, as gVisor wants them
	payloadLen int
}

func parseHeaders(ip []byte, v6 bool, tcp []byte, payloadLen int) (segment, bool) {
	s := segment{v6: v6, ip: ip, tcp: header.TCP(tcp), payloadLen: payloadLen}
	if len(tcp) < header.TCPMinimumSize {
		return s, false
	}
	if v6 {
		if len(ip) < header.IPv6MinimumSize {
			return s, false
		}
		s.src = netip.AddrFrom16([16]byte(ip[8:24]))
		s.dst = netip.AddrFrom16([16]byte(ip[24:40]))
		s.srcA = tcpip.AddrFrom16([16]byte(ip[8:24]))
		s.dstA = tcpip.AddrFrom16([16]byte(ip[24:40]))
	} else {
		if len(ip) < header.IPv4MinimumSize {
			return s, false
		}
		s.src = netip.AddrFrom4([4]byte(ip[12:16]))
		s.dst = netip.AddrFrom4([4]byte(ip[16:20]))
		s.srcA = tcpip.AddrFrom4([4]byte(ip[12:16]))
		s.dstA = tcpip.AddrFrom4([4]byte(ip[16:20]))
	}
	return s, true
}

// checksumValid verifies the TCP checksum of the packet in data: the TCP
// header ends at hdrEnd, the packet at total.
func (s *segment) checksumValid(data stack.PacketData, hdrEnd, total int) bool {
	ipLen := len(s.ip)
	var sum uint16
	if total == data.Size() {
		sum = data.ChecksumAtOffset(hdrEnd)
	} else { // link padding after the IP packet: rare, so a copy will do
		sum = checksum.Checksum(data.AsRange().Capped(total).SubRange(hdrEnd).ToSlice(), 0)
	}
	sum = checksum.Combine(sum, checksum.Checksum(s.tcp, 0))
	return checksum.Combine(sum, s.pseudo(total-ipLen)) == 0xffff
}

func (s *segment) pseudo(tcpLen int) uint16 {
	return header.PseudoHeaderChecksum(header.TCPProtocolNumber, s.srcA, s.dstA, uint16(tcpLen))
}

// payloadSum derives the one's-complement sum of the payload from the TCP
// checksum: checksum = ~(pseudo + header + payload), and summing the header
// with its checksum field in place gives -(pseudo + payload)... so the
// payload's sum is ~(pseudo + sum(header)). No payload byte is read.
func (s *segment) payloadSum() uint16 {
	p := s.pseudo(len(s.tcp) + s.payloadLen)
	return ^checksum.Combine(p, checksum.Checksum(s.tcp, 0))
}

// WritePackets decorates the segments of known subflows with their MPTCP
// options and writes everything to the child link.
func (l *Layer) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	var out *stack.PacketBufferList // built only once a packet is rewritten or redirected
	var made [16]*stack.PacketBuffer
	extra := made[:0]
	var pieces [maxPieces]*stack.PacketBuffer
	changed := false
	for i, pkt := range all {
		nps, home := l.rewriteOut(pkt, pieces[:0])
		if home != l {
			// The subflow lives on another link (see Subflow.out):
			// its packets leave there, whatever gVisor's route said.
			if !changed {
				changed = true
				out = takeList()
				for _, before := range all[:i] {
					out.PushBack(before)
				}
			}
			list := takeList()
			if len(nps) == 0 {
				list.PushBack(pkt)
			}
			for _, np := range nps {
				list.PushBack(np)
				extra = append(extra, np)
			}
			home.Child().WritePackets(*list)
			giveList(list)
			continue
		}
		if len(nps) > 0 && !changed {
			changed = true
			out = takeList()
			for _, before := range all[:i] {
				out.PushBack(before)
			}
		}
		switch {
		case len(nps) > 0:
			for _, np := range nps {
				out.PushBack(np)
				extra = append(extra, np)
			}
		case changed:
			out.PushBack(pkt)
		}
	}
	if !changed {
		return l.Child().WritePackets(pkts)
	}
	var n int
	var err tcpip.Error
	if out.Len() > 0 {
		n, err = l.Child().WritePackets(*out)
	}
	giveList(out)
	for _, p := range extra {
		p.DecRef()
	}
	if err == nil || n > len(all) {
		n = len(all) // gVisor counts its own packets, not our pieces
	}
	return n, err
}

// lists recycles the packet lists WritePackets hands on: a list is a
// slice, and a fresh one per segment was one heap allocation per packet.
var lists = sync.Pool{New: func() any { return new(stack.PacketBufferList) }}

func takeList() *stack.PacketBufferList { return lists.Get().(*stack.PacketBufferList) }

// giveList empties l and recycles it. The list holds no references of its
// own, but Reset drops one per packet: one is taken first.
func giveList(l *stack.PacketBufferList) {
	for _, p := range l.AsSlice() {
		p.IncRef()
	}
	l.Reset()
	lists.Put(l)
}

// maxPieces bounds how many packets one segment is split into: one per
// DSS mapping its payload straddles.
const maxPieces = 8

// rewriteOut returns the packets that replace pkt (none: send it as it
// is). A segment whose payload straddles several mappings (gVisor merged
// bytes the stack wrote at different DSNs, which happens when a subflow
// carries non-contiguous parts of the data) is split into one segment per
// mapping, each with its own DSS.
func (l *Layer) rewriteOut(pkt *stack.PacketBuffer, dst []*stack.PacketBuffer) ([]*stack.PacketBuffer, *Layer) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return dst, l
	}
	seg, ok := parseHeaders(pkt.NetworkHeader().Slice(), pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber,
		pkt.TransportHeader().Slice(), pkt.Data().Size())
	if !ok {
		return dst, l
	}
	t := Tuple{Local: netip.AddrPortFrom(seg.src, seg.tcp.SourcePort()), Remote: netip.AddrPortFrom(seg.dst, seg.tcp.DestinationPort())}
	sf := l.reg.Lookup(t)
	if sf == nil {
		f := seg.tcp.Flags()
		if !f.Contains(header.TCPFlagSyn) || f.Contains(header.TCPFlagAck) {
			return dst, l
		}
		if sf = l.reg.claimDial(t); sf == nil {
			return dst, l
		}
	}
	home := sf.out.Load()
	if home == nil {
		sf.out.CompareAndSwap(nil, l)
		home = sf.out.Load()
	}
	var mpBuf [maxTCPOptions]byte
	var runsBuf [maxPieces]int
	payloadSum := seg.payloadSum()
	mp, runs := sf.outbound(seg.tcp, seg.payloadLen, payloadSum, mpBuf[:0], runsBuf[:0])
	if len(runs) > 0 {
		return l.split(pkt, &seg, sf, runs, dst), home
	}
	if len(mp) == 0 {
		return dst, home
	}
	var hdrBuf [header.TCPMinimumSize + maxTCPOptions]byte
	newTCP, trimmed := buildTCPHeader(hdrBuf[:0], seg.tcp, mp)
	if trimmed {
		sf.countTrimmed()
	}
	return append(dst, l.repack(pkt, &seg, newTCP, payloadSum, pkt.Data().ToBuffer())), home
}

// split sends pkt's payload as one segment per run of bytes that one DSS
// mapping covers. Only the last piece keeps PSH and FIN.
func (l *Layer) split(pkt *stack.PacketBuffer, seg *segment, sf *Subflow, runs []int, dst []*stack.PacketBuffer) []*stack.PacketBuffer {
	var hdr [header.TCPMinimumSize + maxTCPOptions]byte
	at := 0
	for i, n := range runs {
		h := header.TCP(append(hdr[:0], seg.tcp...))
		h.SetSequenceNumber(seg.tcp.SequenceNumber() + uint32(at))
		if i < len(runs)-1 {
			h.SetFlags(uint8(h.Flags() &^ (header.TCPFlagFin | header.TCPFlagPsh)))
		}
		payload := pkt.Data().ToBuffer()
		payload.TrimFront(int64(at))
		payload.Truncate(int64(n))
		sum := payload.Checksum(0)
		piece := *seg
		piece.tcp = h
		piece.payloadLen = n
		var mpBuf [maxTCPOptions]byte
		mp, _ := sf.outbound(h, n, sum, mpBuf[:0], nil) // one mapping covers each run
		var newBuf [header.TCPMinimumSize + maxTCPOptions]byte
		newTCP, trimmed := buildTCPHeader(newBuf[:0], h, mp)
		if trimmed {
			sf.countTrimmed()
		}
		dst = append(dst, l.repack(pkt, &piece, newTCP, sum, payload))
		at += n
	}
	sf.countSplit()
	return dst
}

// repack builds the packet again with a new TCP header; the payload is
// shared, not copied. The TCP checksum is computed from the header and the
// payload's sum (derived from gVisor's checksum, see payloadSum).
func (l *Layer) repack(pkt *stack.PacketBuffer, seg *segment, newTCP header.TCP, payloadSum uint16, payload buffer.Buffer) *stack.PacketBuffer {
	newTCP.SetChecksum(0)
	sum := checksum.Combine(seg.pseudo(len(newTCP)+seg.payloadLen), checksum.Checksum(newTCP, 0))
	newTCP.SetChecksum(^checksum.Combine(sum, payloadSum))

	linkHdr := pkt.LinkHeader().Slice()
	np := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(l.MaxHeaderLength()) + len(seg.ip) + len(newTCP),
		Payload:            payload,
	})
	copy(np.TransportHeader().Push(len(newTCP)), newTCP)
	ip := np.NetworkHeader().Push(len(seg.ip))
	copy(ip, seg.ip)
	fixIPLength(ip, seg.v6, len(seg.ip)+len(newTCP)+seg.payloadLen)
	if len(linkHdr) > 0 {
		copy(np.LinkHeader().Push(len(linkHdr)), linkHdr)
	}
	np.NetworkProtocolNumber = pkt.NetworkProtocolNumber
	np.TransportProtocolNumber = pkt.TransportProtocolNumber
	np.EgressRoute = pkt.EgressRoute
	np.GSOOptions = pkt.GSOOptions
	np.Hash = pkt.Hash
	np.Owner = pkt.Owner
	np.PktType = pkt.PktType
	np.NICID = pkt.NICID
	return np
}

func fixIPLength(ip []byte, v6 bool, total int) {
	if v6 {
		header.IPv6(ip).SetPayloadLength(uint16(total - header.IPv6MinimumSize))
		return
	}
	h := header.IPv4(ip)
	h.SetTotalLength(uint16(total))
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
}

// buildTCPHeader appends to dst the fixed header of old, its options and
// the MPTCP option mp, padded with NOPs. When the 40 bytes of option space
// do not hold both, SACK blocks are dropped from the end (never timestamps:
// a connection that negotiated them must keep them). It reports whether
// SACK blocks were dropped.
func buildTCPHeader(dst []byte, old header.TCP, mp []byte) (header.TCP, bool) {
	dst = append(dst, old[:header.TCPMinimumSize]...)
	opts := old.Options()
	room := maxTCPOptions - len(mp)
	trimmed := false
	if optsLen(opts) <= room {
		dst = append(dst, opts...)
	} else {
		trimmed = true
		dst = appendOptionsTrimmed(dst, opts, room)
	}
	dst = append(dst, mp...)
	for (len(dst)-header.TCPMinimumSize)%4 != 0 {
		dst = append(dst, header.TCPOptionNOP)
	}
	h := header.TCP(dst)
	h.SetDataOffset(uint8(len(dst)))
	return h, trimmed
}

// DeliverNetworkPacket reads the MPTCP options of inbound segments before
// gVisor sees them.
func (l *Layer) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if l.closed.Load() {
		return
	}
	np, drop := l.inspectIn(proto, pkt)
	if drop {
		return
	}
	if np != nil {
		l.Endpoint.DeliverNetworkPacket(proto, np)
		np.DecRef()
		return
	}
	l.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// inspectIn applies an inbound segment's MPTCP options. It returns a
// replacement packet (MSS clamped) or asks to drop the segment: a segment
// of an MPTCP subflow whose options are malformed, or whose data has no
// mapping, never reaches gVisor, so TCP retransmits it and no byte without
// a known DSN enters the subflow's stream.
func (l *Layer) inspectIn(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) (*stack.PacketBuffer, bool) {
	data := pkt.Data()
	total := data.Size()
	var ipLen int
	v6 := proto == header.IPv6ProtocolNumber
	switch proto {
	case header.IPv4ProtocolNumber:
		b, ok := data.PullUp(header.IPv4MinimumSize)
		if !ok {
			return nil, false
		}
		h := header.IPv4(b)
		if l.reg.localOnly != nil && !l.reg.isLocal(netip.AddrFrom4([4]byte(b[16:20]))) {
			return nil, true // never forward: see Registry.SetAddresses
		}
		if h.Protocol() != uint8(header.TCPProtocolNumber) {
			return nil, false
		}
		if h.More() || h.FragmentOffset() != 0 {
			l.reg.mib.Inc(TCPFragmentDrop) // see fragmentedTCP
			return nil, true
		}
		ipLen = int(h.HeaderLength())
		if t := int(h.TotalLength()); t < total {
			total = t
		}
	case header.IPv6ProtocolNumber:
		b, ok := data.PullUp(header.IPv6MinimumSize)
		if !ok {
			return nil, false
		}
		if l.reg.localOnly != nil && !l.reg.isLocal(netip.AddrFrom16([16]byte(b[24:40]))) {
			return nil, true
		}
		if next := header.IPv6(b).NextHeader(); next != uint8(header.TCPProtocolNumber) {
			if isIPv6ExtensionHeader(next) && carriesTCP(data, next) {
				l.reg.mib.Inc(TCPFragmentDrop) // see fragmentedTCP
				return nil, true
			}
			return nil, false
		}
		ipLen = header.IPv6MinimumSize
		if t := ipLen + int(header.IPv6(b).PayloadLength()); t < total {
			total = t
		}
	default:
		return nil, false
	}
	b, ok := data.PullUp(ipLen + header.TCPMinimumSize)
	if !ok {
		return nil, false
	}
	tcpLen := int(header.TCP(b[ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || ipLen+tcpLen > total {
		return nil, false
	}
	if b, ok = data.PullUp(ipLen + tcpLen); !ok {
		return nil, false
	}
	seg, ok := parseHeaders(b[:ipLen], v6, b[ipLen:ipLen+tcpLen], total-ipLen-tcpLen)
	if !ok {
		return nil, false
	}
	t := Tuple{Local: netip.AddrPortFrom(seg.dst, seg.tcp.DestinationPort()), Remote: netip.AddrPortFrom(seg.src, seg.tcp.SourcePort())}
	sf := l.reg.Lookup(t)
	flags := seg.tcp.Flags()
	isSyn := flags.Contains(header.TCPFlagSyn) && !flags.Contains(header.TCPFlagAck)
	if sf == nil && !isSyn && tcpLen-header.TCPMinimumSize < mpcAckLen {
		return nil, false // not ours: plain TCP (too short for the third ACK of a handshake we forgot)
	}
	if !pkt.RXChecksumValidated && !seg.checksumValid(data, ipLen+tcpLen, total) {
		// gVisor would drop it too; nothing it says is looked at.
		l.reg.mib.Inc(InCsumErrors)
		return nil, true
	}
	var set option.Set
	perr := option.ParseTCPOptions(seg.tcp.Options(), &set)
	if sf == nil && isSyn && l.reg.joinsOnly(t.Local.Port()) && (perr != nil || !set.Has(option.SubtypeMPJoin)) {
		// A port that takes joins only (a signal endpoint's port, a
		// listener that stopped accepting): a new connection is refused
		// before gVisor completes a handshake for nobody.
		l.reg.mib.Inc(MismatchPortSynRx)
		l.rejectJoin(t, seg.tcp, seg.payloadLen, option.ReasonAdminProhibited)
		return nil, true
	}
	if sf == nil && isSyn && perr == nil {
		switch {
		case set.Has(option.SubtypeMPCapable) && set.MPCapable.Form == option.MPCSyn && set.MPCapable.Version == 1:
			var evicted *Subflow
			sf, evicted = l.reg.acceptSYN(t, set.MPCapable.Flags&option.FlagChecksum != 0)
			if evicted != nil {
				evicted.Close() // its third ACK, if any, is reset below
			}
		case set.Has(option.SubtypeMPJoin) && set.MPJoin.Form == option.JoinSyn:
			var v joinVerdict
			var reason uint8
			var evicted *Subflow
			sf, v, reason, evicted = l.reg.acceptJoin(t, &set.MPJoin)
			if evicted != nil {
				evicted.Close() // its third ACK, if any, is reset below
			}
			if v == joinRejected {
				l.rejectJoin(t, seg.tcp, seg.payloadLen, reason)
				return nil, true
			}
		}
	}
	if sf == nil {
		if !isSyn && perr == nil && !flags.Contains(header.TCPFlagRst) && forgottenHandshake(&set) {
			// The third ACK of a handshake we no longer know (evicted
			// by a flood, or forgotten after handshakeTimeout): gVisor
			// would complete a connection whose MPTCP state is gone.
			if set.Has(option.SubtypeMPJoin) {
				l.reg.mib.Inc(MPJoinNoTokenFound)
			}
			l.rejectJoin(t, seg.tcp, seg.payloadLen, option.ReasonNoResources)
			return nil, true
		}
		return nil, false
	}
	sf.out.CompareAndSwap(nil, l)
	v := sf.receive(seg.tcp, seg.payloadLen, &set, perr)
	switch v {
	case ignore, ignoreDrop:
		return nil, v == ignoreDrop // TCP does not accept it: no MPTCP signal in it counts
	}
	if perr == nil && set.Has(option.SubtypeMPFastclose) {
		sf.fastcloseIn(&set.MPFastclose, flags.Contains(header.TCPFlagRst)) // before gVisor sees the segment
	}
	switch v {
	case drop:
		return nil, true
	case reset:
		return asReset(pkt, ipLen, tcpLen, &seg), false
	}
	if flags.Contains(header.TCPFlagSyn) {
		if by := mssClamp(seg.tcp.Options()); by > 0 {
			return clampMSS(pkt, ipLen, tcpLen, &seg, by), false
		}
	}
	return nil, false
}

// fragmentedTCP: TCP never needs IP fragments (it sizes segments to the
// path MTU and sets DF), and IPv6 TCP behind extension headers is as rare.
// The layer reads neither: gVisor would reassemble the fragments, or skip
// the headers, and hand TCP a segment whose MPTCP options no one checked
// (its data could enter a subflow's stream with no mapping). So such
// packets are dropped and counted (TCPFragmentDrop), on every connection,
// since a fragment does not say which connection it belongs to.

// isIPv6ExtensionHeader reports whether next is an IPv6 extension header
// that may come before a transport header.
func isIPv6ExtensionHeader(next uint8) bool {
	switch next {
	case 0, 43, 44, 60, 51: // hop-by-hop, routing, fragment, destination options, AH
		return true
	}
	return false
}

// carriesTCP follows the extension headers of the IPv6 packet in data,
// starting with next, and reports whether they end in TCP (a fragment
// header's next header counts: a first fragment of TCP).
func carriesTCP(data stack.PacketData, next uint8) bool {
	off := header.IPv6MinimumSize
	for i := 0; i < 8 && isIPv6ExtensionHeader(next); i++ {
		b, ok := data.PullUp(off + 8)
		if !ok {
			return false
		}
		h := b[off:]
		n := (int(h[1]) + 1) * 8
		switch next {
		case 44:
			n = 8 // fragment header: fixed size
		case 51:
			n = (int(h[1]) + 2) * 4 // AH counts 4-byte words, less 2
		}
		next = h[0]
		off += n
	}
	return next == uint8(header.TCPProtocolNumber)
}

// mpcAckLen is the size of MP_CAPABLE's third-ACK form, the shortest
// option of a third ACK (MP_JOIN's is 24 bytes).
const mpcAckLen = 20

// forgottenHandshake reports whether a segment of a tuple the registry does
// not know carries the options of a third ACK (or of the first data) of an
// MPTCP handshake, which only a handshake we answered can produce.
func forgottenHandshake(set *option.Set) bool {
	if set.Has(option.SubtypeMPJoin) && set.MPJoin.Form == option.JoinAck {
		return true
	}
	if !set.Has(option.SubtypeMPCapable) {
		return false
	}
	switch set.MPCapable.Form {
	case option.MPCAck, option.MPCAckData, option.MPCAckDataCsum:
		return true
	}
	return false
}

// rejectJoin answers a SYN with MP_JOIN that cannot join anything with a
// RST carrying MP_TCPRST (RFC 8684 §3.6); gVisor never sees the SYN.
func (l *Layer) rejectJoin(t Tuple, syn header.TCP, payloadLen int, reason uint8) {
	seq, ack, flags := resetFor(syn, payloadLen)
	var buf [8]byte
	o := option.TCPRST{Reason: reason}
	l.writeSegment(t, seq, ack, flags, 0, pad(o.Append(buf[:0])))
}

// asReset returns the headers of an inbound segment turned into a RST
// (payload dropped), for gVisor: its endpoint of a failed join must end.
func asReset(pkt *stack.PacketBuffer, ipLen, tcpLen int, seg *segment) *stack.PacketBuffer {
	raw := pkt.Data().AsRange().ToSlice()[:ipLen+tcpLen]
	fixIPLength(raw[:ipLen], seg.v6, ipLen+tcpLen)
	h := header.TCP(raw[ipLen:])
	h.SetFlags(uint8(h.Flags() | header.TCPFlagRst))
	h.SetChecksum(0)
	h.SetChecksum(^checksum.Combine(seg.pseudo(tcpLen), checksum.Checksum(h, 0)))
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
}

// mptcpOverhead is the most an MPTCP option adds to a data segment: a DSS
// with 8-byte DATA_ACK, 8-byte DSN and checksum.
const mptcpOverhead = 28

// mssClamp returns how much the MSS announced in a SYN or SYN-ACK must be
// lowered so that our data segments fit the path MTU. gVisor sizes payloads
// as MSS minus the largest option area it might send itself: 40 bytes with
// timestamps and SACK, 36 with SACK alone (four blocks), 12 with timestamps
// alone, 0 with neither. We send gVisor's options plus a DSS of up to 28
// bytes, trimming SACK blocks to stay within 40, so a segment can exceed
// gVisor's budget by min(40-reserved, 28). We always offer both options, so
// the peer's SYN says what is negotiated.
func mssClamp(opts []byte) int {
	ts, sack := false, false
	for i := 0; ; {
		kind, _, next, ok := nextOption(opts, i)
		if !ok {
			break
		}
		switch kind {
		case header.TCPOptionTS:
			ts = true
		case header.TCPOptionSACKPermitted:
			sack = true
		}
		i = next
	}
	reserved := 0
	switch {
	case ts && sack:
		reserved = 40
	case sack:
		reserved = 36
	case ts:
		reserved = 12
	}
	return min(maxTCPOptions-reserved, mptcpOverhead)
}

// clampMSS returns a copy of a SYN or SYN-ACK whose MSS option is lowered by
// by bytes, with the TCP checksum fixed.
func clampMSS(pkt *stack.PacketBuffer, ipLen, tcpLen int, seg *segment, by int) *stack.PacketBuffer {
	raw := pkt.Data().AsRange().ToSlice()
	h := header.TCP(raw[ipLen : ipLen+tcpLen])
	if lowerMSS(h.Options(), by) {
		h.SetChecksum(0)
		h.SetChecksum(^checksum.Combine(seg.pseudo(len(raw)-ipLen), checksum.Checksum(raw[ipLen:], 0)))
	}
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
}

func addr(ap netip.AddrPort) tcpip.Address {
	a := ap.Addr().Unmap()
	return tcpip.AddrFromSlice(a.AsSlice())
}
