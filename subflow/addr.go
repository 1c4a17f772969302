package subflow

import (
	"net/netip"

	"github.com/umptcp/umptcp/option"
)

// Address signalling (RFC 8684 §3.4) and priority changes (§3.3.8) are
// connection-level events that happen to arrive on one subflow. The option
// layer checks them (the ADD_ADDR HMAC, §3.4.1) and answers what needs an
// answer on the wire at once (the ADD_ADDR echo); the decision what to do
// (join the address, close subflows) belongs to the path manager above, to
// which they are handed as Signals.

// SignalKind says what a peer signalled.
type SignalKind uint8

const (
	// PeerAnnounced: the peer announced an address (ADD_ADDR with a valid
	// HMAC). ID and Addr; Addr's port is 0 when the option had none.
	PeerAnnounced SignalKind = iota + 1
	// PeerEchoed: the peer echoed our announcement of ID.
	PeerEchoed
	// PeerRemoved: the peer removed the addresses IDs (REMOVE_ADDR).
	PeerRemoved
	// PeerPriority: the peer changed the backup flag of Subflow (MP_PRIO).
	PeerPriority
)

// Signal is one address or priority event a peer sent.
type Signal struct {
	Kind    SignalKind
	ID      uint8
	IDs     []uint8 // PeerRemoved
	Addr    netip.AddrPort
	Backup  bool
	Subflow *Subflow // where it arrived
}

// SetSignalFunc sets the function the option layer hands the peer's
// signals to. It is called on the packet path with the subflow's lock
// held: it must only queue the signal (it may not call into the subflow).
// Signals that arrived before it was set are handed over at once.
func (m *Meta) SetSignalFunc(f func(Signal)) {
	m.sigMu.Lock()
	m.sigFunc = f
	early := m.sigEarly
	m.sigEarly = nil
	m.sigMu.Unlock()
	for _, s := range early {
		f(s)
	}
}

func (m *Meta) signal(s Signal) {
	m.sigMu.Lock()
	f := m.sigFunc
	if f == nil {
		if len(m.sigEarly) < maxEarlySignals {
			m.sigEarly = append(m.sigEarly, s)
		}
		m.sigMu.Unlock()
		return
	}
	m.sigMu.Unlock()
	f(s)
}

// maxEarlySignals bounds what is kept for a connection the stack has not
// taken over yet (a peer may announce right after the handshake).
const maxEarlySignals = 16

// signalOptions are the options signalsLocked looks at.
const signalOptions = 1<<option.SubtypeAddAddr | 1<<option.SubtypeRemoveAddr | 1<<option.SubtypeMPPrio

// signalsLocked handles the ADD_ADDR, REMOVE_ADDR and MP_PRIO options of a
// segment that arrived on an established MPTCP subflow.
func (s *Subflow) signalsLocked(set *option.Set) {
	m := s.meta
	mib := &s.reg.mib
	if set.Has(option.SubtypeAddAddr) {
		a := &set.AddAddr
		ap := netip.AddrPortFrom(a.Addr.Unmap(), a.Port)
		switch {
		case a.Echo:
			mib.Inc(EchoAdd)
			m.signal(Signal{Kind: PeerEchoed, ID: a.AddrID, Addr: ap, Subflow: s})
		case a.HMAC != option.AddAddrHMAC(m.remoteKey, m.localKey, a.AddrID, a.Addr, a.Port):
			// Not from the peer, or mangled: an attacker must not steer
			// our subflows (§3.4.1). No echo, so a genuine peer resends.
			mib.Inc(AddAddrHMacFailure)
		default:
			mib.Inc(AddAddr)
			if a.HasPort {
				mib.Inc(PortAdd)
			}
			echo := option.AddAddr{Echo: true, AddrID: a.AddrID, Addr: a.Addr, HasPort: a.HasPort, Port: a.Port}
			var buf [32]byte
			if s.sendAckLocked(false, echo.Append(buf[:0])) {
				mib.Inc(EchoAddTx)
			}
			m.signal(Signal{Kind: PeerAnnounced, ID: a.AddrID, Addr: ap, Subflow: s})
		}
	}
	if set.Has(option.SubtypeRemoveAddr) {
		mib.Inc(RmAddr)
		ids := append([]uint8(nil), set.RemoveAddr.List()...)
		m.signal(Signal{Kind: PeerRemoved, IDs: ids, Subflow: s})
	}
	if set.Has(option.SubtypeMPPrio) {
		mib.Inc(MPPrioRx)
		if s.peerBackup != set.MPPrio.Backup {
			s.peerBackup = set.MPPrio.Backup
			m.poke()
			m.signal(Signal{Kind: PeerPriority, Backup: s.localBackup || s.peerBackup, Subflow: s})
		}
	}
}

// SendAddAddr announces our address id (with a port unless addr's is 0) to
// the peer on a pure ACK of this subflow (§3.4.1), with its HMAC. It
// reports whether the option left; the caller retransmits until the peer
// echoes it.
func (s *Subflow) SendAddAddr(id uint8, addr netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != stateEstablished {
		return false
	}
	m := s.meta
	a := option.AddAddr{AddrID: id, Addr: addr.Addr().Unmap(), HasPort: addr.Port() != 0, Port: addr.Port(), HasHMAC: true}
	a.HMAC = option.AddAddrHMAC(m.localKey, m.remoteKey, id, a.Addr, a.Port)
	var buf [32]byte
	if !s.sendAckLocked(false, a.Append(buf[:0])) {
		s.reg.mib.Inc(AddAddrTxDrop)
		return false
	}
	s.reg.mib.Inc(AddAddrTx)
	return true
}

// SendRemoveAddr tells the peer that our addresses ids are gone (§3.4.2),
// on a pure ACK of this subflow. It reports whether the option left.
func (s *Subflow) SendRemoveAddr(ids []uint8) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != stateEstablished || len(ids) == 0 {
		return false
	}
	var r option.RemoveAddr
	r.N = uint8(copy(r.IDs[:], ids))
	var buf [48]byte
	if !s.sendAckLocked(false, r.Append(buf[:0])) {
		return false
	}
	s.reg.mib.Inc(RmAddrTx)
	return true
}
