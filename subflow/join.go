package subflow

import (
	"crypto/subtle"
	"time"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The MP_JOIN handshake (RFC 8684 §3.2) of additional subflows:
//
//	client                                  server
//	SYN      MP_JOIN(token_B, nonce_A, id, B)  ->
//	      <- SYN-ACK  MP_JOIN(trunc HMAC_B, nonce_B, id, B)
//	ACK      MP_JOIN(HMAC_A)                   ->   (retransmitted until acknowledged)
//	      <- ACK  DSS                               (the "fourth ACK")
//
// Only then may the client send data on the subflow. A join that fails its
// checks is reset with MP_TCPRST; it never falls back to plain TCP, and the
// connection is not affected.

// joinAckRTO is the first retransmission interval of the third ACK; it
// doubles up to maxJoinAckTries.
const joinAckRTO = 200 * time.Millisecond

const maxJoinAckTries = 8

func (s *Subflow) joinSynOption(dst []byte) []byte {
	o := option.MPJoin{Form: option.JoinSyn, Backup: s.localBackup, AddrID: s.localID, Token: s.meta.remoteToken, Nonce: s.localNonce}
	return o.Append(dst)
}

func (s *Subflow) joinSynAckOption(dst []byte) []byte {
	m := s.meta
	h := option.JoinHMAC(m.localKey, m.remoteKey, s.localNonce, s.remoteNonce)
	o := option.MPJoin{Form: option.JoinSynAck, Backup: s.localBackup, AddrID: s.localID, TruncHMAC: option.TruncHMAC(h), Nonce: s.localNonce}
	return o.Append(dst)
}

func (s *Subflow) joinAckOption(dst []byte) []byte {
	m := s.meta
	h := option.JoinHMAC(m.localKey, m.remoteKey, s.localNonce, s.remoteNonce)
	o := option.MPJoin{Form: option.JoinAck}
	copy(o.HMAC[:], h[:option.MPJoinHMACLen])
	return o.Append(dst)
}

// noteSynAck remembers what our SYN-ACK said, so that the fourth ACK (a
// pure ACK of ours, sent before gVisor sends anything else) repeats it: the
// next sequence number, the peer's, our timestamp, and the window in the
// scaled form the established connection uses.
func (s *Subflow) noteSynAck(h header.TCP) {
	s.last = lastHeader{valid: true, seq: h.SequenceNumber() + 1, ack: h.AckNumber(), wnd: h.WindowSize()}
	opts := h.Options()
	if o := findOption(opts, header.TCPOptionTS); len(o) == 10 {
		s.last.hasTS, s.last.tsVal, s.last.tsEcr = true, be32(o[2:]), be32(o[6:])
	}
	if o := findOption(opts, header.TCPOptionWS); len(o) == 3 {
		// gVisor puts window scaling in a SYN-ACK only when the peer
		// offered it, so the shift is in force from now on.
		s.last.wnd >>= min(o[2], 14)
	}
}

// joinSynAckLocked checks the server's answer to our MP_JOIN SYN.
func (s *Subflow) joinSynAckLocked(h header.TCP, set *option.Set) verdict {
	j := &set.MPJoin
	if !set.Has(option.SubtypeMPJoin) || j.Form != option.JoinSynAck {
		return s.failLocked(h, 0, "SYN-ACK without MP_JOIN", option.ReasonMPTCPError)
	}
	m := s.meta
	want := option.TruncHMAC(option.JoinHMAC(m.remoteKey, m.localKey, j.Nonce, s.localNonce))
	if j.TruncHMAC != want {
		s.reg.mib.Inc(MPJoinSynAckHMacFailure)
		return s.failLocked(h, 0, "MP_JOIN SYN-ACK with a wrong HMAC", option.ReasonMPTCPError)
	}
	s.reg.mib.Inc(MPJoinSynAckRx)
	s.remoteNonce, s.remoteID, s.peerBackup = j.Nonce, j.AddrID, j.Backup
	s.establishLocked()
	s.joinTries = 0
	s.joinTimer = time.AfterFunc(joinAckRTO, s.joinAckTick)
	return pass
}

// joinThirdAckLocked checks the client's third ACK of a join.
func (s *Subflow) joinThirdAckLocked(h header.TCP, set *option.Set) verdict {
	j := &set.MPJoin
	if !set.Has(option.SubtypeMPJoin) || j.Form != option.JoinAck {
		return s.failLocked(h, 0, "third ACK without MP_JOIN", option.ReasonMPTCPError)
	}
	m := s.meta
	want := option.JoinHMAC(m.remoteKey, m.localKey, s.remoteNonce, s.localNonce)
	if subtle.ConstantTimeCompare(j.HMAC[:], want[:option.MPJoinHMACLen]) != 1 {
		s.reg.mib.Inc(MPJoinAckHMacFailure)
		return s.failLocked(h, 0, "MP_JOIN third ACK with a wrong HMAC", option.ReasonMPTCPError)
	}
	s.reg.mib.Inc(MPJoinAckRx)
	// Half-open joins do not hold subflow slots (acceptJoin), so the
	// limit is enforced again as a join completes.
	if m.subflows.Load()-m.halfOpenN.Load() >= s.reg.maxSubflowsNow.Load() {
		s.reg.mib.Inc(MPJoinRejected)
		return s.failLocked(h, 0, "subflow limit reached", option.ReasonAdminProhibited)
	}
	s.establishLocked()
	s.noteEcr(h)
	s.counters.JoinAcksSent++
	s.sendPureAckLocked(false) // the fourth ACK: the peer may send data now
	return pass
}

// joinEstablishedLocked follows an established join: the client learns
// that its third ACK arrived, the server answers a retransmitted one.
func (s *Subflow) joinEstablishedLocked(h header.TCP, payloadLen int, set *option.Set) {
	flags := h.Flags()
	if flags.Contains(header.TCPFlagSyn) || !flags.Contains(header.TCPFlagAck) {
		return
	}
	switch {
	case s.role == Client && !s.readyClosed:
		// Any segment after the SYN-ACK acknowledges the third ACK.
		if s.joinTimer != nil {
			s.joinTimer.Stop()
		}
		s.readyLocked()
	case s.role == Server && set.Has(option.SubtypeMPJoin) && set.MPJoin.Form == option.JoinAck && payloadLen == 0:
		s.noteEcr(h)
		s.counters.JoinAcksSent++
		s.sendPureAckLocked(false)
	}
}

// noteEcr makes our next pure ACK echo the timestamp of h.
func (s *Subflow) noteEcr(h header.TCP) {
	if o := findOption(h.Options(), header.TCPOptionTS); len(o) == 10 && s.last.hasTS {
		s.last.tsEcr = be32(o[2:])
	}
}

// joinAckTick retransmits the third ACK until the peer acknowledges it.
func (s *Subflow) joinAckTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readyClosed || s.st != stateEstablished || s.last.closed || s.joinTries >= maxJoinAckTries {
		return
	}
	s.joinTries++
	s.counters.JoinAcksSent++
	l := s.out.Load()
	if l != nil && s.last.valid {
		var opts [maxTCPOptions]byte
		o := s.appendTS(opts[:0])
		o = s.joinAckOption(o)
		l.writeSegment(s.tuple, s.last.seq, s.last.ack, header.TCPFlagAck, s.last.wnd, pad(o))
	}
	s.joinTimer.Reset(joinAckRTO << min(s.joinTries, 4))
}

// failLocked ends a join whose handshake failed: the peer gets a RST with
// MP_TCPRST saying why (in answer to h, the offending segment; off is its
// payload length), and gVisor gets the segment as a RST so that its
// endpoint ends too.
func (s *Subflow) failLocked(h header.TCP, payloadLen int, why string, reason uint8) verdict {
	s.stopHandshakeTimerLocked()
	wasHandshake := s.st == stateSynSent || s.st == stateSynReceived
	s.st = stateFailed
	s.failWhy = why
	if wasHandshake {
		close(s.established)
	}
	s.readyLocked()
	if l := s.out.Load(); l != nil {
		seq, ack, flags := resetFor(h, payloadLen)
		var opts [8]byte
		o := option.TCPRST{Reason: reason}
		l.writeSegment(s.tuple, seq, ack, flags, 0, pad(o.Append(opts[:0])))
		s.counters.ResetsSent++
		s.rst.sent = reason + 1
		s.reg.mib.Inc(MPRstTx) // as Linux counts the RST of a subflow it resets
	}
	if s.role == Server {
		go s.Close() // nobody will accept it: forget it now
	}
	return reset
}

// resetFor returns the sequence numbers and flags of a RST answering h
// (RFC 9293 §3.10.7.1): if h acknowledges something, the RST takes that
// sequence number; otherwise it acknowledges h.
func resetFor(h header.TCP, payloadLen int) (seq, ack uint32, flags header.TCPFlags) {
	f := h.Flags()
	if f.Contains(header.TCPFlagAck) {
		return h.AckNumber(), 0, header.TCPFlagRst
	}
	ack = h.SequenceNumber() + uint32(payloadLen)
	if f.Contains(header.TCPFlagSyn) {
		ack++
	}
	if f.Contains(header.TCPFlagFin) {
		ack++
	}
	return 0, ack, header.TCPFlagRst | header.TCPFlagAck
}

// pad NOP-pads TCP options to a multiple of 4 bytes.
func pad(o []byte) []byte {
	for len(o)%4 != 0 {
		o = append(o, header.TCPOptionNOP)
	}
	return o
}

// appendTS appends the timestamp option of the last header, if any.
func (s *Subflow) appendTS(o []byte) []byte {
	if !s.last.hasTS {
		return o
	}
	o = append(o, header.TCPOptionNOP, header.TCPOptionNOP)
	return o[:len(o)+header.EncodeTSOption(s.last.tsVal, s.last.tsEcr, o[len(o):len(o)+10])]
}

// IsJoin reports whether the subflow was opened with MP_JOIN.
func (s *Subflow) IsJoin() bool { return s.join }

// Ready is closed when the subflow may carry data (see the field), or has
// failed.
func (s *Subflow) Ready() <-chan struct{} { return s.ready }

// Failed reports whether the subflow's join failed, and why.
func (s *Subflow) Failed() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st == stateFailed, s.failWhy
}

// Backup reports whether the subflow is a backup path: either side asked
// (MP_JOIN B bit or MP_PRIO), as Linux treats it.
func (s *Subflow) Backup() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.localBackup || s.peerBackup
}

// SetBackup changes our backup wish for the subflow at run time and tells
// the peer with MP_PRIO (RFC 8684 §3.3.8) on a pure ACK.
func (s *Subflow) SetBackup(b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.localBackup == b {
		return
	}
	s.localBackup = b
	if s.st == stateEstablished {
		p := option.MPPrio{Backup: b}
		var buf [4]byte
		if s.sendAckLocked(false, p.Append(buf[:0])) {
			s.reg.mib.Inc(MPPrioTx)
		}
	}
}

// Progress is what a scheduler needs to know of a subflow, as the option
// layer sees it. Offsets count subflow data bytes.
type Progress struct {
	Written uint64 // handed to the endpoint by the stack
	Sent    uint64 // left at least once
	Acked   uint64 // acknowledged by the peer at the TCP level
	MSS     int    // largest payload sent: the effective MSS (0 before any data)
	Backup  bool   // see Backup
	// PeerWindow is the receive window the peer's last segment
	// advertised, in bytes: 0 when it stopped reading (flow control,
	// not a failure).
	PeerWindow uint64
}

// Progress returns a snapshot, under one lock.
func (s *Subflow) Progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Progress{Written: s.written, Sent: s.sndHigh, Acked: min(s.acked, s.sndHigh), MSS: s.maxSeg, Backup: s.localBackup || s.peerBackup,
		PeerWindow: uint64(s.lastWnd) << s.peerWS}
}

// FullyEstablished reports, for the initial subflow of a client, whether
// the server's first DSS arrived: it has our key, so joins will find the
// connection.
func (s *Subflow) FullyEstablished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fullyEstab || s.role == Server
}

// AddrIDs returns our address ID and the peer's for this subflow.
func (s *Subflow) AddrIDs() (local, remote uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.localID, s.remoteID
}

// PeerResetReason returns the MP_TCPRST reason of the peer's reset of this
// subflow, if it sent one.
func (s *Subflow) PeerResetReason() (uint8, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint8(s.peerRstReason), s.peerRstReason >= 0
}
