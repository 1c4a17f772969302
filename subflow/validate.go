package subflow

import (
	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The layer sees a segment before gVisor's TCP does, but the segment's
// MPTCP signals may take effect only if TCP accepts it (Linux parses them
// only after tcp_validate_incoming and tcp_ack): otherwise one blind
// spoofed segment could remove a subflow, end the stream with a DATA_FIN or
// acknowledge data the peer never got. gVisor's verdict comes too late (its
// TCP processes segments on its own goroutines), so the layer keeps its own
// view of each subflow's sequence space, learnt from the segments passing
// through it, and applies TCP's tests itself:
//
//   - the checksum (the segment is then dropped: gVisor would drop it too);
//   - RFC 793's acceptability: the segment overlaps the window we
//     advertised, as Linux's tcp_sequence() tests it: its end is not
//     before the last ACK we sent (RCV.WUP, which trails RCV.NXT by what
//     gVisor has not acknowledged yet) and its start is not beyond the
//     window's right edge;
//   - RFC 5961 §5.2: SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT, and in
//     a handshake exactly the ACK of our SYN;
//   - RFC 5961 §3.2: a RST counts only at RCV.NXT exactly, which the layer
//     follows from the segments it hands on (see tcpView.rcvNxt).
//
// A segment that fails any test still reaches gVisor (a bad checksum
// aside), which answers it as TCP does (a duplicate or challenge ACK); only
// its MPTCP options are ignored, and a Linux-named counter says why.
type tcpView struct {
	sent     bool   // a segment of ours went out: sndNxt is known
	ackSent  bool   // a segment of ours carried an ACK: rcvWup, rcvEdge known
	ourWS    uint8  // the window scale our SYN offered
	ourWSOK  bool   // our SYN offered window scaling
	peerWSOK bool   // the peer's SYN offered window scaling
	synAckd  bool   // the peer acknowledged our SYN
	sndNxt   uint32 // one past the highest sequence number we sent
	sndUna   uint32 // the highest acceptable ACK the peer sent
	maxWnd   uint32 // the largest window the peer advertised, scaled
	rcvWup   uint32 // the highest ACK we sent
	rcvEdge  uint32 // the highest right edge of a window we advertised
	rcvHigh  uint32 // one past the highest sequence number accepted from the peer

	// RCV.NXT as gVisor will have it when it processes the next segment:
	// gVisor takes a subflow's segments in the order the layer hands them
	// on, so its in-order point is the layer's, given the out-of-order
	// ranges received beyond it. rcvNxt is exact while uncertain is false;
	// more holes than ooo holds make it a lower bound until gVisor's own
	// ACK (rcvWup) passes them all.
	rcvNxt    uint32
	ooo       [4]seqRange
	nOOO      int
	uncertain bool
}

// seqRange is [start, end) in sequence space.
type seqRange struct{ start, end uint32 }

// scaled reports whether window scaling is in effect: both SYNs offered it.
func (v *tcpView) scaled() bool { return v.ourWSOK && v.peerWSOK }

// noteOut records what an outbound segment says of the sequence space.
func (v *tcpView) noteOut(h header.TCP, payloadLen int) {
	flags := h.Flags()
	seq := h.SequenceNumber()
	end := seq + uint32(payloadLen)
	if flags.Contains(header.TCPFlagSyn) {
		end++
		if !v.sent {
			v.sndUna = seq // nothing acknowledged yet, not even the SYN
		}
		o := findOption(h.Options(), header.TCPOptionWS)
		v.ourWSOK = len(o) == 3
		if v.ourWSOK {
			v.ourWS = min(o[2], 14)
		}
	}
	if flags.Contains(header.TCPFlagFin) {
		end++
	}
	if !v.sent || seqAfter(end, v.sndNxt) {
		v.sndNxt = end
	}
	v.sent = true
	if !flags.Contains(header.TCPFlagAck) || flags.Contains(header.TCPFlagRst) {
		return
	}
	ack := h.AckNumber()
	wnd := uint32(h.WindowSize())
	if !flags.Contains(header.TCPFlagSyn) && v.scaled() {
		wnd <<= v.ourWS // SYN windows are never scaled
	}
	if !v.ackSent {
		v.rcvWup, v.rcvEdge, v.rcvHigh, v.rcvNxt = ack, ack+wnd, ack, ack
	}
	if seqAfter(ack, v.rcvWup) {
		v.rcvWup = ack
		if seqAfter(ack, v.rcvNxt) {
			v.advanceTo(ack) // gVisor knows better: what it acknowledged is in order
		}
	}
	if edge := ack + wnd; seqAfter(edge, v.rcvEdge) {
		v.rcvEdge = edge
	}
	v.ackSent = true
}

// acceptable reports whether TCP accepts an inbound segment, or which
// counter says why not; an accepted segment updates the view. peerShift is
// the window scale the peer's SYN asked for.
func (v *tcpView) acceptable(h header.TCP, payloadLen int, peerShift uint8) (Counter, bool) {
	flags := h.Flags()
	seq := h.SequenceNumber()
	syn, rst := flags.Contains(header.TCPFlagSyn), flags.Contains(header.TCPFlagRst)
	hasAck := flags.Contains(header.TCPFlagAck)
	if syn && !hasAck {
		if v.ackSent {
			// A SYN on a synchronized subflow, or the peer's SYN
			// again (gVisor answers it): its options are old news
			// or a spoof, never acted on.
			return InvalidSequence, false
		}
		v.peerWSOK = len(findOption(h.Options(), header.TCPOptionWS)) == 3
		v.maxWnd = uint32(h.WindowSize())
		return 0, true
	}
	if !v.sent {
		return InvalidAckSequence, false // only a SYN opens a subflow
	}
	ack := h.AckNumber()
	if !v.ackSent {
		// SYN-SENT: only the ACK of our SYN counts (RFC 793 §3.9), on a
		// SYN-ACK or on a RST refusing the SYN.
		if !hasAck || ack != v.sndNxt || !syn && !rst {
			return InvalidAckSequence, false
		}
		if syn {
			v.peerWSOK = len(findOption(h.Options(), header.TCPOptionWS)) == 3
			v.maxWnd = uint32(h.WindowSize())
			v.sndUna, v.synAckd = ack, true
		}
		return 0, true
	}
	if rst {
		return v.rstAcceptable(seq)
	}
	if !hasAck {
		return InvalidAckSequence, false // RFC 793: drop a segment without ACK
	}
	if syn {
		seq++ // the SYN-ACK again (our third ACK was lost): data follows the SYN
	}
	end := seq + uint32(payloadLen)
	if flags.Contains(header.TCPFlagFin) {
		end++
	}
	if seqAfter(v.rcvWup, end) || seqAfter(seq, v.rcvEdge) {
		return InvalidSequence, false
	}
	switch {
	case !v.synAckd:
		// SYN-RECEIVED: SND.UNA < SEG.ACK <= SND.NXT.
		if !seqAfter(ack, v.sndUna) || seqAfter(ack, v.sndNxt) {
			return InvalidAckSequence, false
		}
	case seqAfter(ack, v.sndNxt):
		return AckUnsentData, false
	case seqAfter(v.sndUna-v.maxWnd, ack):
		return TooOldAck, false
	}
	if seqAfter(ack, v.sndUna) || !v.synAckd {
		v.sndUna, v.synAckd = ack, true
	}
	wnd := uint32(h.WindowSize())
	if !syn && v.scaled() {
		wnd <<= peerShift
	}
	v.maxWnd = max(v.maxWnd, wnd)
	if seqAfter(end, v.rcvEdge) {
		end = v.rcvEdge // gVisor keeps nothing beyond the window
	}
	if seqAfter(end, v.rcvHigh) {
		v.rcvHigh = end
	}
	if seqAfter(end, seq) {
		v.received(seq, end)
	}
	return 0, true
}

// received records that [seq, end) reached gVisor, which keeps it in
// order or out of order.
func (v *tcpView) received(seq, end uint32) {
	if !seqAfter(seq, v.rcvNxt) {
		if seqAfter(end, v.rcvNxt) {
			v.advanceTo(end)
		}
		return
	}
	for i := 0; i < v.nOOO; i++ { // merge with a range it touches
		r := &v.ooo[i]
		if !seqAfter(seq, r.end) && !seqAfter(r.start, end) {
			if seqAfter(r.start, seq) {
				r.start = seq
			}
			if seqAfter(end, r.end) {
				r.end = end
			}
			return
		}
	}
	if v.nOOO == len(v.ooo) {
		v.uncertain = true // too many holes to follow: a lower bound now
		return
	}
	v.ooo[v.nOOO] = seqRange{seq, end}
	v.nOOO++
}

// advanceTo moves the in-order point to to, and on through the
// out-of-order ranges it now reaches.
func (v *tcpView) advanceTo(to uint32) {
	v.rcvNxt = to
	for moved := true; moved; {
		moved = false
		for i := 0; i < v.nOOO; i++ {
			r := v.ooo[i]
			if seqAfter(r.start, v.rcvNxt) {
				continue
			}
			if seqAfter(r.end, v.rcvNxt) {
				v.rcvNxt = r.end
			}
			v.nOOO--
			v.ooo[i] = v.ooo[v.nOOO]
			moved = true
			break
		}
	}
	if v.uncertain && v.nOOO == 0 && !seqAfter(v.rcvHigh, v.rcvNxt) {
		v.uncertain = false // nothing is missing: exact again
	}
}

// rstAcceptable is RFC 5961 §3.2: a RST counts only at RCV.NXT exactly.
// While more holes were open than the view follows, RCV.NXT is known only
// to lie between our in-order point and one past the highest byte
// received, and a RST anywhere there counts.
func (v *tcpView) rstAcceptable(seq uint32) (Counter, bool) {
	if !v.uncertain {
		if seq != v.rcvNxt {
			return InvalidRst, false
		}
		return 0, true
	}
	if seqAfter(v.rcvNxt, seq) || seqAfter(seq, v.rcvHigh) {
		return InvalidRst, false
	}
	return 0, true
}

// receive is inbound for the layer: it first decides, under the same
// lock, whether TCP accepts the segment. One it does not accept has none of
// its MPTCP options acted on (the verdict is ignore) and is counted. It
// must not reach gVisor either (ignoreDrop) when it carries data or a FIN
// that gVisor might take although TCP must not: gVisor takes data whatever
// the segment's ACK says, and tests the window against its current one,
// which may reach past the edge the peer was told, so the data would enter
// the subflow's stream with no mapping to place it. Old segments (ending
// before the last ACK we sent) still reach gVisor, whose duplicate ACK
// answers a peer that lost our ACK; so do segments without data, which
// gVisor answers as TCP does (a challenge ACK, say).
func (s *Subflow) receive(h header.TCP, payloadLen int, set *option.Set, parseErr error) verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	why, ok := s.view.acceptable(h, payloadLen, s.peerWS)
	if ok {
		return s.inboundLocked(h, payloadLen, set, parseErr)
	}
	s.counters.NotAcceptable++
	s.reg.mib.Inc(why)
	end := h.SequenceNumber() + uint32(payloadLen)
	old := why == InvalidSequence && s.view.ackSent && seqAfter(s.view.rcvWup, end)
	if (payloadLen > 0 || h.Flags().Contains(header.TCPFlagFin)) && !old {
		return ignoreDrop
	}
	return ignore
}
