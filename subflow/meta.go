package subflow

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/umptcp/umptcp/option"
)

// Meta is the connection-level (data-level) state that every subflow of one
// MPTCP connection reads when it writes options and updates when options
// arrive. The stack owns the connection; the subflows only read the values
// the stack publishes here and report what the peer said.
//
// All fields but the signal hand-over are atomics: they are read on the per-packet path of several
// subflows and written by the stack's goroutines.
type Meta struct {
	localKey, remoteKey   uint64
	localIDSN, remoteIDSN uint64
	localToken            uint32
	remoteToken           uint32      // the peer's token, which our MP_JOIN SYNs carry
	checksum              atomic.Bool // DSS checksums in use (§3.3.1), either side asked

	// initialLocal is our address on the initial subflow: address ID 0.
	initialLocal netip.Addr
	// subflows counts the live subflows (handshakes included); the token
	// is forgotten when the last one goes.
	subflows atomic.Int32
	// halfOpen lists the server joins waiting for their third ACK, oldest
	// first (guarded by the registry's mu): a join flood with the real
	// token evicts its own oldest entries, never established subflows.
	halfOpen  []*Subflow
	halfOpenN atomic.Int32 // how many of the subflows are half-open joins

	canAck  atomic.Bool   // the remote IDSN is known: DATA_ACK may be sent
	rcvNxt  atomic.Uint64 // the DATA_ACK we send: next DSN expected
	sndUna  atomic.Uint64 // the highest DATA_ACK the peer sent
	sndMax  atomic.Uint64 // one past the highest DSN handed to a subflow (DATA_FIN included)
	finSeq  atomic.Uint64 // our DATA_FIN's DSN + 1; 0 while we have not closed
	peerFin atomic.Uint64 // the peer's DATA_FIN DSN + 1; 0 while not received; written under rxMu
	wndEnd  atomic.Uint64 // right edge of the peer's data-level receive window

	changed chan struct{} // poked when sndUna or peerFin advance

	// rxMu orders the peer's mappings against its DATA_FIN across
	// subflows (datafin.go): rxMapped is one past the highest DSN any
	// mapping of the peer's covered (written under rxMu, read without).
	rxMu     sync.Mutex
	rxMapped atomic.Uint64
	perr     protoErrHook // a data-level protocol error ends the connection (datafin.go)

	// joined is set once a subflow joined (MP_JOIN): from then on the
	// connection may no longer fall back to TCP with an infinite mapping
	// (RFC 8684 §3.7; Linux's allow_infinite_fallback).
	joined atomic.Bool
	fc     fastcloseHook // the peer's MP_FASTCLOSE, for the stack (fastclose.go)

	// The peer's address and priority signals, for the path manager
	// (see SetSignalFunc).
	sigMu    sync.Mutex
	sigFunc  func(Signal)
	sigEarly []Signal
}

func newMeta(localKey uint64, token uint32, idsn uint64) *Meta {
	m := &Meta{localKey: localKey, localToken: token, localIDSN: idsn, changed: make(chan struct{}, 1)}
	m.sndUna.Store(idsn + 1)
	m.sndMax.Store(idsn + 1)
	return m
}

// setRemoteKey records the peer's key; from then on DATA_ACK can be sent.
// It is called with the owning subflow's lock held, once.
func (m *Meta) setRemoteKey(key uint64, idsn uint64) {
	m.remoteKey = key
	m.remoteToken = option.Token(key)
	m.remoteIDSN = idsn
	m.rcvNxt.Store(idsn + 1)
	m.canAck.Store(true)
}

// LocalKey and RemoteKey are the 64-bit keys of the MP_CAPABLE exchange.
func (m *Meta) LocalKey() uint64  { return m.localKey }
func (m *Meta) RemoteKey() uint64 { return m.remoteKey }

// LocalToken identifies the connection to joining subflows (§3.2).
func (m *Meta) LocalToken() uint32 { return m.localToken }

// LocalIDSN and RemoteIDSN are the initial data sequence numbers; the first
// data byte in each direction has DSN IDSN+1.
func (m *Meta) LocalIDSN() uint64  { return m.localIDSN }
func (m *Meta) RemoteIDSN() uint64 { return m.remoteIDSN }

// RemoteToken is the peer's token: joins to the peer carry it.
func (m *Meta) RemoteToken() uint32 { return m.remoteToken }

// Subflows returns how many subflows of the connection are alive.
func (m *Meta) Subflows() int { return int(m.subflows.Load()) }

// Poke wakes whoever waits on Changed.
func (m *Meta) Poke() { m.poke() }

// Checksum reports whether DSS checksums are in use.
func (m *Meta) Checksum() bool { return m.checksum.Load() }

// SetDataAck publishes the next DSN the connection expects, which every
// outgoing segment then carries as DATA_ACK.
func (m *Meta) SetDataAck(v uint64) { m.rcvNxt.Store(v) }

// DataAck is the value SetDataAck last published.
func (m *Meta) DataAck() uint64 { return m.rcvNxt.Load() }

// SndUna is the highest DATA_ACK received from the peer.
func (m *Meta) SndUna() uint64 { return m.sndUna.Load() }

// SetDataFin marks the DSN of our DATA_FIN; subflows announce it on their
// pure ACKs once every data byte has left.
func (m *Meta) SetDataFin(dsn uint64) {
	m.finSeq.Store(dsn + 1)
	m.noteSent(dsn + 1)
}

// noteSent raises sndMax to end: a DATA_ACK up to it is plausible.
func (m *Meta) noteSent(end uint64) {
	for {
		cur := m.sndMax.Load()
		if end <= cur || m.sndMax.CompareAndSwap(cur, end) {
			return
		}
	}
}

// DataFinAcked reports whether the peer acknowledged our DATA_FIN.
func (m *Meta) DataFinAcked() bool {
	f := m.finSeq.Load()
	return f != 0 && m.sndUna.Load() >= f
}

// PeerFin returns the DSN of the peer's DATA_FIN, if one arrived.
func (m *Meta) PeerFin() (uint64, bool) {
	f := m.peerFin.Load()
	return f - 1, f != 0
}

// Changed is poked when the peer's DATA_ACK or DATA_FIN advance.
func (m *Meta) Changed() <-chan struct{} { return m.changed }

func (m *Meta) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// onDataAck applies a DATA_ACK (already expanded to 64 bits) from the peer.
func (m *Meta) onDataAck(v uint64) {
	for {
		una := m.sndUna.Load()
		if v <= una {
			return
		}
		if m.sndUna.CompareAndSwap(una, v) {
			m.poke()
			return
		}
	}
}

// SndWndEnd is the right edge of the peer's receive window at the data
// level (RFC 8684 §3.3.4): no DSN at or beyond it may be sent. Linux drops
// such data (MPTcpExtNoDSSInWindow).
func (m *Meta) SndWndEnd() uint64 { return m.wndEnd.Load() }

// noteWndEnd raises the window's right edge to v.
func (m *Meta) noteWndEnd(v uint64) {
	for {
		cur := m.wndEnd.Load()
		if v <= cur {
			return
		}
		if m.wndEnd.CompareAndSwap(cur, v) {
			m.poke()
			return
		}
	}
}

// onPeerFin records the peer's DATA_FIN without the checks of
// acceptPeerFin (a fallen-back subflow's TCP FIN, which no mapping can
// contradict); false if one was known already.
func (m *Meta) onPeerFin(dsn uint64) bool {
	m.rxMu.Lock()
	defer m.rxMu.Unlock()
	if m.peerFin.CompareAndSwap(0, dsn+1) {
		m.poke()
		return true
	}
	return false
}
