package subflow

import (
	"time"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ackDelay is how long a DATA_ACK may lag before the subflow sends a pure
// ACK of its own for it. gVisor's own ACKs usually carry it sooner.
const ackDelay = time.Millisecond

// dataFinRTO is the first retransmission interval of a DATA_FIN carried on
// pure ACKs (which TCP does not retransmit); it doubles each time.
const dataFinRTO = 200 * time.Millisecond

const maxDataFinTries = 12

// dataFinPoll is how often a pending DATA_FIN checks whether the data
// before it has all left (gVisor sends at its own pace).
const dataFinPoll = 20 * time.Millisecond

// AckIfStale arranges for the current DATA_ACK to reach the peer soon: if
// no segment carries it within ackDelay, a pure ACK does. The stack calls it
// after the connection's receive position advanced.
func (s *Subflow) AckIfStale() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armAckLocked()
}

func (s *Subflow) armAckLocked() {
	if s.st != stateEstablished || s.ackArmed || !s.ackPending() {
		return
	}
	s.ackArmed = true
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(ackDelay, s.flushAck)
		return
	}
	s.ackTimer.Reset(ackDelay)
}

func (s *Subflow) ackPending() bool {
	return s.meta.canAck.Load() && s.meta.rcvNxt.Load() != s.sentAck
}

func (s *Subflow) flushAck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ackArmed = false
	if s.ackPending() {
		s.sendPureAckLocked(false)
	}
}

// SendDataFin announces the connection's DATA_FIN (set with Meta.SetDataFin)
// on a pure ACK now and again, with backoff, until the peer acknowledges it.
func (s *Subflow) SendDataFin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finTries = 0
	s.dataFinTickLocked()
}

func (s *Subflow) dataFinTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataFinTickLocked()
}

func (s *Subflow) dataFinTickLocked() {
	if s.meta.DataFinAcked() || s.st != stateEstablished || s.finTries >= maxDataFinTries || s.last.closed {
		return
	}
	d := dataFinPoll
	if s.sndHigh >= s.written {
		// Every data byte has left: the DATA_FIN follows them, and is
		// sent again, with backoff, until acknowledged.
		s.sendPureAckLocked(true)
		d = dataFinRTO << min(s.finTries, 5)
		s.finTries++
	}
	if s.finTimer == nil {
		s.finTimer = time.AfterFunc(d, s.dataFinTick)
	} else {
		s.finTimer.Reset(d)
	}
}

// sendPureAckLocked writes a pure ACK that repeats the last header gVisor
// sent on this subflow (so the peer's TCP learns nothing new and, with SACK
// in use, does not count it as a duplicate ACK) with a fresh DSS.
func (s *Subflow) sendPureAckLocked(withFin bool) { s.sendAckLocked(withFin, nil) }

// sendAckLocked is sendPureAckLocked with extra options (MP_PRIO,
// ADD_ADDR, REMOVE_ADDR) after the DSS. It reports whether the extra
// options left.
func (s *Subflow) sendAckLocked(withFin bool, extra []byte) bool {
	l := s.out.Load()
	if l == nil || !s.last.valid || s.last.closed {
		return false
	}
	m := s.meta
	var d option.DSS
	if m.canAck.Load() {
		d.HasDataAck, d.DataAck64, d.DataAck = true, true, m.rcvNxt.Load()
		s.sentAck = d.DataAck
	}
	if fin := m.finSeq.Load(); fin != 0 && (withFin || s.sndHigh >= s.written) && !m.DataFinAcked() {
		s.addDataFin(&d, fin-1)
	}
	if !d.HasDataAck && !d.HasMapping && len(extra) == 0 {
		return false
	}
	var opts [2 * maxTCPOptions]byte
	o := s.appendTS(opts[:0])
	if d.HasDataAck || d.HasMapping {
		o = d.Append(o)
	}
	if len(o)+len(extra) > maxTCPOptions {
		// No room next to a DATA_FIN: the extra option goes on its own ACK.
		s.counters.AcksSent++
		l.writeSegment(s.tuple, s.last.seq, s.last.ack, header.TCPFlagAck, s.last.wnd, pad(o))
		o = s.appendTS(opts[:0])
		if len(o)+len(extra) > maxTCPOptions {
			// An IPv6 ADD_ADDR with a port (30 bytes) does not fit next
			// to timestamps either; a pure ACK without them is accepted
			// by Linux (it drops segments without a timestamp only when
			// they fail PAWS, which needs one).
			o = o[:0]
		}
	}
	o = append(o, extra...)
	s.counters.AcksSent++
	l.writeSegment(s.tuple, s.last.seq, s.last.ack, header.TCPFlagAck, s.last.wnd, pad(o))
	return true
}

// writeSegment builds an IPv4/IPv6 TCP segment without payload (an ACK or
// a RST) with the given options and writes it to the child link (below the
// rewriting, which it needs not).
func (l *Layer) writeSegment(t Tuple, seq, ack uint32, flags header.TCPFlags, wnd uint16, opts []byte) {
	v6 := t.Local.Addr().Is6() && !t.Local.Addr().Is4In6()
	ipLen := header.IPv4MinimumSize
	proto := header.IPv4ProtocolNumber
	if v6 {
		ipLen = header.IPv6MinimumSize
		proto = header.IPv6ProtocolNumber
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(l.MaxHeaderLength()) + ipLen + tcpLen,
		Payload:            buffer.Buffer{},
	})
	defer pkt.DecRef()
	th := header.TCP(pkt.TransportHeader().Push(tcpLen))
	th.Encode(&header.TCPFields{
		SrcPort:    t.Local.Port(),
		DstPort:    t.Remote.Port(),
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: wnd,
	})
	copy(th[header.TCPMinimumSize:], opts)
	ip := pkt.NetworkHeader().Push(ipLen)
	seg := segment{v6: v6, ip: ip, tcp: th, srcA: addr(t.Local), dstA: addr(t.Remote)}
	if v6 {
		header.IPv6(ip).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           addr(t.Local),
			DstAddr:           addr(t.Remote),
		})
	} else {
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{
			TotalLength: uint16(ipLen + tcpLen),
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     addr(t.Local),
			DstAddr:     addr(t.Remote),
		})
		h.SetChecksum(^h.CalculateChecksum())
	}
	th.SetChecksum(^checksum.Combine(seg.pseudo(tcpLen), checksum.Checksum(th, 0)))
	pkt.NetworkProtocolNumber = proto
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	l.Child().AddHeader(pkt)
	var list stack.PacketBufferList
	list.PushBack(pkt)
	l.Child().WritePackets(list)
}
