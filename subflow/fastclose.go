package subflow

import (
	"fmt"
	"sync/atomic"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Resets of MPTCP subflows (RFC 8684 §3.6) and the abrupt close of a whole
// connection (MP_FASTCLOSE, §3.5).
//
// Our RSTs are gVisor's: the stack aborts a subflow's endpoint and gVisor
// sends the RST, which the layer decorates like any other segment of the
// subflow (see outbound). Decorating gVisor's own RST, rather than sending
// one of ours and suppressing gVisor's, means exactly one RST leaves, with
// the sequence numbers gVisor's TCP state says are right, and gVisor
// cannot race a second, undecorated one out. gVisor writes that RST from
// inside Endpoint.Abort, so a stack that marks the subflow first and
// forgets it only after Abort returns gets every RST decorated.
//
// As Linux does, every RST of a subflow that speaks MPTCP carries
// MP_TCPRST with the reason the stack recorded (default "unspecified");
// MP_FASTCLOSE goes first when the whole connection is being aborted, with
// the unspecified reason, which is what Linux 6.18 sends with its
// fastclose (option/testdata/kernel/passive-fastclose.hex). A subflow that
// fell back to plain TCP sends plain RSTs.

// rstState is what our RSTs on a subflow say; guarded by Subflow.mu.
type rstState struct {
	reason    uint8 // MP_TCPRST reason of our next RST
	fastclose bool  // our next RST carries MP_FASTCLOSE (Conn.Abort)
	sent      uint8 // 1 + the reason of the last MP_TCPRST we sent; 0: none
	plain     bool  // the peer reset the subflow: our RSTs meet no socket, and are plain
	// farewellDue: the peer's RST (without MP_FASTCLOSE) ended the
	// connection's last subflow, so our next RST on it carries
	// MP_FASTCLOSE (see Farewell); farewell: that MP_FASTCLOSE went out.
	farewellDue, farewell bool
	farewellCounted       bool // MPFastcloseTx counted for the farewell (once, whichever RST the peer takes)
}

// Farewell tells the peer that the connection is gone, when the stack lost
// it because the peer's RST ended every subflow. That RST may not be the
// peer's: an in-window one forged by an on-path attacker is as valid to
// TCP, and the peer, whose end of the subflow still lives, would wait for
// data forever (Linux keeps a connection without subflows, and reports no
// subflow reset to its application). A RST carrying MP_FASTCLOSE with the
// peer's key (§3.5) ends its connection too, so both ends report an error.
// The first RST gVisor sends on the subflow afterwards, in answer to the
// peer's next segment, carries it at exactly the peer's RCV.NXT
// (rstOptionsLocked); the stack calls Farewell once it has seen every
// subflow end, for a peer that sends nothing more. That one goes at the two
// sequence numbers the peer's RCV.NXT can be: what it acknowledged last,
// and our SND.NXT; a peer whose subflow is really gone ignores them. It
// reports whether it sent anything.
func (s *Subflow) Farewell() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.out.Load()
	if l == nil || s.st != stateEstablished || s.fb.on || !s.rst.plain || s.rst.farewell || !s.view.ackSent {
		return false
	}
	// Not marked sent: if neither guess is the peer's RCV.NXT, the peer
	// answers with a challenge ACK, and gVisor's RST in reply carries the
	// farewell again, at the exact number.
	s.rst.farewellDue = true
	var buf [maxTCPOptions]byte
	o := pad(s.appendFarewellLocked(buf[:0]))
	l.writeSegment(s.tuple, s.view.sndUna, s.view.rcvNxt, header.TCPFlagRst|header.TCPFlagAck, 0, o)
	if s.view.sndNxt != s.view.sndUna {
		l.writeSegment(s.tuple, s.view.sndNxt, s.view.rcvNxt, header.TCPFlagRst|header.TCPFlagAck, 0, o)
	}
	return true
}

// appendFarewellLocked appends the farewell's options (MP_FASTCLOSE with the
// peer's key, MP_TCPRST "unspecified", as Linux's fastclose) and counts
// the farewell once, as the peer takes at most one of its RSTs.
func (s *Subflow) appendFarewellLocked(dst []byte) []byte {
	fc := option.MPFastclose{Key: s.meta.remoteKey}
	dst = fc.Append(dst)
	r := option.TCPRST{Reason: option.ReasonUnspecified}
	dst = r.Append(dst)
	if !s.rst.farewellCounted {
		s.rst.farewellCounted = true
		s.reg.mib.Inc(MPFastcloseTx)
		s.reg.mib.Inc(MPRstTx)
	}
	return dst
}

// SetResetReason records why the stack is about to reset the subflow
// (option.Reason*): the RST gVisor sends when the stack aborts the
// endpoint carries it in MP_TCPRST. Without it the reason is
// "unspecified".
func (s *Subflow) SetResetReason(reason uint8) {
	s.mu.Lock()
	s.rst.reason = reason
	s.mu.Unlock()
}

// PrepareFastclose makes the subflow's next RST carry MP_FASTCLOSE with
// the peer's key (RFC 8684 §3.5): the stack calls it on every subflow of
// a connection it aborts, then aborts their endpoints. It reports whether
// the subflow speaks MPTCP; one that does not sends a plain RST.
func (s *Subflow) PrepareFastclose() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != stateEstablished {
		return false
	}
	s.rst.fastclose = true
	return true
}

// ResetReason returns the MP_TCPRST reason of the last RST we sent on the
// subflow, if we sent one.
func (s *Subflow) ResetReason() (uint8, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rst.sent - 1, s.rst.sent != 0
}

// rstOptionsLocked appends the MPTCP options of a RST gVisor is sending on
// the subflow: MP_FASTCLOSE when the connection is being aborted, then
// MP_TCPRST. At most 16 bytes, which fit next to gVisor's timestamps.
// Like Linux, each option sent is counted once per RST, and only the
// subflow's first RST carries them; after the peer's RST only the farewell
// of a connection that died with that subflow does (see Farewell).
func (s *Subflow) rstOptionsLocked(dst []byte) []byte {
	if s.st != stateEstablished {
		return dst // handshake, fallback or failed join: a plain RST
	}
	if s.rst.farewellDue && !s.rst.farewell {
		s.rst.farewell = true
		return s.appendFarewellLocked(dst)
	}
	if s.rst.sent != 0 || s.rst.plain {
		// Our reset went out already, or the peer reset the subflow:
		// this RST is gVisor's answer to a segment still arriving for
		// the closed endpoint (or its abort after refusing the peer's
		// RST), and meets no socket. Linux sends those from no socket,
		// plain; so do we, and both ends count one reset.
		return dst
	}
	mib := &s.reg.mib
	if s.rst.fastclose {
		fc := option.MPFastclose{Key: s.meta.remoteKey}
		dst = fc.Append(dst)
		mib.Inc(MPFastcloseTx)
	}
	r := option.TCPRST{Reason: s.rst.reason}
	dst = r.Append(dst)
	s.rst.sent = s.rst.reason + 1
	s.counters.ResetsSent++
	mib.Inc(MPRstTx)
	return dst
}

// countPeerResetLocked counts a RST of the peer that carried MP_TCPRST.
// Linux reads MPTCP options only while the connection has not fallen
// back, and so counts.
func (s *Subflow) countPeerResetLocked() {
	if s.st != stateFallback {
		s.reg.mib.Inc(MPRstRx)
	}
}

// fastcloseIn handles an MP_FASTCLOSE that arrived on the subflow, on a
// RST (as Linux sends it) or on an ACK (the RFC's other form). With our
// key it resets the connection: the stack's hook (Meta.OnPeerFastclose)
// runs on this goroutine, before gVisor sees the segment, so that the
// connection's error is the fastclose and not the subflow's reset. The
// stack then resets every subflow, which answers an ACK-borne fastclose
// with RSTs as §3.5 asks. A wrong key is ignored (and counted).
//
// It is called without the subflow's lock, which the hook must not meet.
func (s *Subflow) fastcloseIn(o *option.MPFastclose, onRST bool) {
	s.mu.Lock()
	mptcp := s.st == stateEstablished
	s.mu.Unlock()
	if !mptcp {
		return // no connection to close: plain TCP, or a handshake
	}
	m := s.meta
	if o.Key != m.localKey {
		s.reg.mib.Inc(MPFastcloseBadKey)
		return
	}
	s.reg.mib.Inc(MPFastcloseRx)
	if m.fc.from.CompareAndSwap(nil, s) {
		m.fc.onRST.Store(onRST)
		m.fc.received.Store(true)
	}
	m.fc.fire()
}

// fastcloseHook tells the stack about the peer's MP_FASTCLOSE, once.
type fastcloseHook struct {
	from     atomic.Pointer[Subflow] // the subflow the first one came on
	onRST    atomic.Bool             // it came on a RST
	received atomic.Bool             // from and onRST are set
	fired    atomic.Bool
	fn       atomic.Pointer[func(from *Subflow, onRST bool)]
}

// fire calls the hook if both it and the fastclose are there, once:
// whichever of the two comes second calls it.
func (h *fastcloseHook) fire() {
	if !h.received.Load() {
		return
	}
	if fn := h.fn.Load(); fn != nil && h.fired.CompareAndSwap(false, true) {
		(*fn)(h.from.Load(), h.onRST.Load())
	}
}

// OnPeerFastclose registers fn, called once when a valid MP_FASTCLOSE of
// the peer arrives (at once if one arrived already), with the subflow it
// came on and whether on a RST (then gVisor resets that subflow's
// endpoint right after fn returns). fn runs on the goroutine that
// delivers the segment, before gVisor sees it; it must not block or call
// into gVisor.
func (m *Meta) OnPeerFastclose(fn func(from *Subflow, onRST bool)) {
	m.fc.fn.Store(&fn)
	m.fc.fire()
}

// PeerFastclosed reports whether the peer aborted the connection with a
// valid MP_FASTCLOSE.
func (m *Meta) PeerFastclosed() bool { return m.fc.received.Load() }

// ResetReasonName returns a readable name of an MP_TCPRST reason code
// (RFC 8684 §3.6).
func ResetReasonName(r uint8) string {
	switch r {
	case option.ReasonUnspecified:
		return "unspecified"
	case option.ReasonMPTCPError:
		return "MPTCP-specific error"
	case option.ReasonNoResources:
		return "lack of resources"
	case option.ReasonAdminProhibited:
		return "administratively prohibited"
	case option.ReasonTooMuchOutstanding:
		return "too much outstanding data"
	case option.ReasonUnacceptablePerformance:
		return "unacceptable performance"
	case option.ReasonMiddleboxInterference:
		return "middlebox interference"
	}
	return fmt.Sprintf("reason %#02x", r)
}
