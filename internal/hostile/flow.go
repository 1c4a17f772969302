package hostile

import (
	"fmt"
	"net/netip"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Dir names the sender of a segment on a flow.
type Dir uint8

const (
	// FromPeer is what the peer (the far side of the tapped link) sends:
	// the stack receives it. Inject such segments with Tap.ToStack.
	FromPeer Dir = iota
	// FromStack is what the stack above the tap sends: the peer receives
	// it. Inject such segments with Tap.ToPeer.
	FromStack
)

func (d Dir) String() string {
	if d == FromStack {
		return "FromStack"
	}
	return "FromPeer"
}

// other is the receiver of what d sends.
func (d Dir) other() Dir { return 1 - d }

// Side is what one end of a flow has been seen sending. Sequence numbers
// are absolute (as on the wire).
type Side struct {
	Packets uint64 // segments seen from this side

	HasISN   bool
	ISN      uint32 // from its SYN
	WndScale int    // its window scale shift from the SYNs, -1 if not negotiated

	HasSnd bool
	SndNxt uint32 // highest seq it sent, plus the segment's length (SYN, FIN count 1)

	HasAck bool
	Ack    uint32 // latest ACK it sent: what it expects next from the other side
	Wnd    uint16 // window field of its latest segment (unscaled)

	HasTS bool // it sends TCP timestamps (RFC 7323)
	TSVal uint32
	TSEcr uint32

	SawFin, SawRst bool

	// MPTCP, from its options.
	HasKey   bool
	Key      uint64 // its key (MP_CAPABLE)
	Checksum bool   // it asked for DSS checksums (MP_CAPABLE A flag)

	HasMapping bool
	DSN        uint64 // latest DSS mapping it sent (DSN expanded to 64 bits)
	SSN        uint32 // relative subflow sequence number of that mapping
	DataLen    uint16

	HasDataAck bool
	DataAck    uint64 // latest DATA_ACK it sent (expanded to 64 bits)
	DataFin    bool   // it sent a DATA_FIN

	Join        bool   // it sent an MP_JOIN SYN or SYN-ACK on this flow
	JoinToken   uint32 // the token of its MP_JOIN SYN
	OptErrors   uint64 // segments whose MPTCP options did not parse
	Subtypes    uint16 // bit 1<<subtype for every MPTCP option subtype seen
	addrIDs     [4]uint64
	removedIDs  [4]uint64
	announcedID [4]uint64
}

// AddrIDs returns the address IDs this side named in MP_JOIN, ADD_ADDR or
// REMOVE_ADDR options, in increasing order.
func (s *Side) AddrIDs() []uint8 { return bits(&s.addrIDs) }

// Announced returns the IDs of its ADD_ADDRs (echoes excluded).
func (s *Side) Announced() []uint8 { return bits(&s.announcedID) }

// Removed returns the IDs of its REMOVE_ADDRs.
func (s *Side) Removed() []uint8 { return bits(&s.removedIDs) }

// Saw reports whether this side sent an MPTCP option of subtype t.
func (s *Side) Saw(t option.Subtype) bool { return t < 16 && s.Subtypes&(1<<t) != 0 }

// MapEnd is the DSN just past its latest mapping (DSN + length): where its
// data stream has reached, as far as the wire shows.
func (s *Side) MapEnd() uint64 { return s.DSN + uint64(s.DataLen) }

func bits(set *[4]uint64) []uint8 {
	var ids []uint8
	for i := range 256 {
		if set[i/64]&(1<<(i%64)) != 0 {
			ids = append(ids, uint8(i))
		}
	}
	return ids
}

func setBit(set *[4]uint64, id uint8) { set[id/64] |= 1 << (id % 64) }

// Flow is a TCP flow as learnt from the wire: a snapshot, not updated
// after it is returned.
type Flow struct {
	Stack netip.AddrPort // our stack's end (above the tap)
	Peer  netip.AddrPort // the peer's end (below the tap)
	Side  [2]Side        // indexed by Dir: what each end sent
	MPTCP bool           // an MPTCP option was seen on it
	seen  uint64         // tap clock of the latest packet, for eviction
}

// V6 reports whether the flow is IPv6.
func (f *Flow) V6() bool { return f.Stack.Addr().Is6() && !f.Stack.Addr().Is4In6() }

// Checksum reports whether DSS checksums are in use (either side asked).
func (f *Flow) Checksum() bool { return f.Side[FromPeer].Checksum || f.Side[FromStack].Checksum }

// Established reports whether both sides have sent their SYN and an ACK.
func (f *Flow) Established() bool {
	return f.Side[FromPeer].HasISN && f.Side[FromStack].HasISN && f.Side[FromPeer].HasAck && f.Side[FromStack].HasAck
}

func (f *Flow) String() string {
	p, s := &f.Side[FromPeer], &f.Side[FromStack]
	return fmt.Sprintf("%v<->%v mptcp=%v peer{snd=%d ack=%d dsn=%d+%d dack=%d} stack{snd=%d ack=%d dsn=%d+%d dack=%d}",
		f.Stack, f.Peer, f.MPTCP, p.SndNxt, p.Ack, p.DSN, p.DataLen, p.DataAck,
		s.SndNxt, s.Ack, s.DSN, s.DataLen, s.DataAck)
}

// seqGT reports whether a is after b in sequence space (RFC 9293 §3.4).
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// expand widens a 32-bit DSN or DATA_ACK to 64 bits: the value nearest to
// ref with those low bits (RFC 8684 §3.3.1 leaves this to the receiver).
func expand(low uint32, ref uint64) uint64 {
	v := ref&^0xffffffff | uint64(low)
	switch d := int64(v - ref); {
	case d > 1<<31:
		v -= 1 << 32
	case d < -(1 << 31):
		v += 1 << 32
	}
	return v
}

// segment is the parsed headers of one IPv4/IPv6 TCP packet.
type segment struct {
	src, dst   netip.AddrPort
	seq, ack   uint32
	flags      header.TCPFlags
	wnd        uint16
	opts       []byte // TCP options (aliases the packet)
	payloadLen int
}

// parseSegment reads the headers of the IP packet whose first bytes are b
// and whose whole length is total. ok is false for anything but an
// unfragmented TCP segment with complete headers in b.
func parseSegment(b []byte, total int) (s segment, ok bool) {
	if len(b) < 1 {
		return s, false
	}
	var ipLen int
	var src, dst netip.Addr
	switch header.IPVersion(b) {
	case header.IPv4Version:
		if len(b) < header.IPv4MinimumSize {
			return s, false
		}
		h := header.IPv4(b)
		if h.Protocol() != uint8(header.TCPProtocolNumber) || h.More() || h.FragmentOffset() != 0 {
			return s, false
		}
		ipLen = int(h.HeaderLength())
		total = min(total, int(h.TotalLength()))
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case header.IPv6Version:
		if len(b) < header.IPv6MinimumSize || header.IPv6(b).NextHeader() != uint8(header.TCPProtocolNumber) {
			return s, false
		}
		ipLen = header.IPv6MinimumSize
		total = min(total, ipLen+int(header.IPv6(b).PayloadLength()))
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return s, false
	}
	if len(b) < ipLen+header.TCPMinimumSize {
		return s, false
	}
	t := header.TCP(b[ipLen:])
	tcpLen := int(t.DataOffset())
	if tcpLen < header.TCPMinimumSize || len(b) < ipLen+tcpLen || total < ipLen+tcpLen {
		return s, false
	}
	s.src = netip.AddrPortFrom(src, t.SourcePort())
	s.dst = netip.AddrPortFrom(dst, t.DestinationPort())
	s.seq, s.ack, s.flags, s.wnd = t.SequenceNumber(), t.AckNumber(), t.Flags(), t.WindowSize()
	s.opts = b[ipLen+header.TCPMinimumSize : ipLen+tcpLen]
	s.payloadLen = total - ipLen - tcpLen
	return s, true
}

// learn updates f with seg, sent by dir.
func (f *Flow) learn(dir Dir, seg *segment) {
	s, o := &f.Side[dir], &f.Side[dir.other()]
	s.Packets++
	syn := seg.flags.Contains(header.TCPFlagSyn)
	if syn {
		s.HasISN, s.ISN = true, seg.seq
		so := header.ParseSynOptions(seg.opts, seg.flags.Contains(header.TCPFlagAck))
		s.WndScale = so.WS // -1 when absent; RFC 7323: only in effect if both sent it
	}
	end := seg.seq + uint32(seg.payloadLen)
	if syn {
		end++
	}
	if seg.flags.Contains(header.TCPFlagFin) {
		end++
		s.SawFin = true
	}
	if seg.flags.Contains(header.TCPFlagRst) {
		s.SawRst = true
	}
	if !s.HasSnd || seqGT(end, s.SndNxt) {
		s.HasSnd, s.SndNxt = true, end
	}
	if seg.flags.Contains(header.TCPFlagAck) && (!s.HasAck || !seqGT(s.Ack, seg.ack)) {
		s.HasAck, s.Ack = true, seg.ack
	}
	s.Wnd = seg.wnd
	if ts := header.ParseTCPOptions(seg.opts); ts.TS {
		s.HasTS, s.TSVal, s.TSEcr = true, ts.TSVal, ts.TSEcr
	}

	var set option.Set
	if err := option.ParseTCPOptions(seg.opts, &set); err != nil {
		s.OptErrors++
	}
	if set.Present == 0 {
		return
	}
	f.MPTCP = true
	s.Subtypes |= set.Present
	if set.Has(option.SubtypeMPCapable) {
		m := &set.MPCapable
		s.Checksum = s.Checksum || m.Flags&option.FlagChecksum != 0
		switch m.Form {
		case option.MPCSynAck:
			s.HasKey, s.Key = true, m.SenderKey
		case option.MPCAck, option.MPCAckData, option.MPCAckDataCsum:
			// The third ACK (and first data) carries both keys: the
			// sender's and the passive opener's, echoed.
			s.HasKey, s.Key = true, m.SenderKey
			o.HasKey, o.Key = true, m.ReceiverKey
		}
	}
	if set.Has(option.SubtypeMPJoin) {
		j := &set.MPJoin
		if j.Form == option.JoinSyn || j.Form == option.JoinSynAck {
			s.Join = true
			setBit(&s.addrIDs, j.AddrID)
			if j.Form == option.JoinSyn {
				s.JoinToken = j.Token
			}
		}
	}
	if set.Has(option.SubtypeDSS) {
		d := &set.DSS
		if d.HasMapping {
			dsn := d.DSN
			if !d.DSN64 {
				dsn = expand(uint32(d.DSN), s.refDSN(o))
			}
			s.HasMapping, s.DSN, s.SSN, s.DataLen = true, dsn, d.SSN, d.DataLen
		}
		if d.HasDataAck {
			ack := d.DataAck
			if !d.DataAck64 {
				ack = expand(uint32(d.DataAck), o.refDSN(s))
			}
			s.HasDataAck, s.DataAck = true, ack
		}
		s.DataFin = s.DataFin || d.DataFin
	}
	if set.Has(option.SubtypeAddAddr) {
		setBit(&s.addrIDs, set.AddAddr.AddrID)
		if !set.AddAddr.Echo {
			setBit(&s.announcedID, set.AddAddr.AddrID)
		}
	}
	if set.Has(option.SubtypeRemoveAddr) {
		for _, id := range set.RemoveAddr.List() {
			setBit(&s.addrIDs, id)
			setBit(&s.removedIDs, id)
		}
	}
}

// refDSN is the best 64-bit reference for expanding a 32-bit DSN that s
// sends: its latest mapping, else what the other side acknowledged of it,
// else its IDSN from its key.
func (s *Side) refDSN(o *Side) uint64 {
	switch {
	case s.HasMapping:
		return s.DSN
	case o.HasDataAck:
		return o.DataAck
	case s.HasKey:
		return option.IDSN(s.Key) + 1
	}
	return 0
}

// Window returns the receive window dir advertised in its latest segment,
// scaled if both SYNs carried a window scale (RFC 7323 §2.2).
func (f *Flow) Window(dir Dir) uint32 {
	s, o := &f.Side[dir], &f.Side[dir.other()]
	if s.WndScale >= 0 && o.WndScale >= 0 {
		return uint32(s.Wnd) << min(s.WndScale, 14)
	}
	return uint32(s.Wnd)
}
