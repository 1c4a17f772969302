package subflow

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/option"
)

// Registry knows every subflow of one stack by 4-tuple, the client
// subflows whose SYN has not left yet, the ports that offer MPTCP, and the
// connections by token. The Layers of all NICs of a stack share one.
//
// mu guards the maps; it is held only for map operations (read-locked on
// the per-packet path), never while a Subflow's lock is held.
type Registry struct {
	mu        sync.RWMutex
	flows     map[Tuple]*Subflow
	dials     map[dialKey]*Subflow
	listening map[uint16]bool
	joinOnly  map[uint16]bool // listening ports that refuse new connections
	tokens    map[uint32]*Meta

	// Checksum is this side's wish for DSS checksums (MP_CAPABLE flag A).
	checksum bool

	mib MIB

	// pendingQ lists them, oldest first, with some that completed since
	// (pruned when it matters); guarded by mu.
	pendingQ []*Subflow
	// pending counts the MP_CAPABLE handshakes of new connections waiting
	// for their third ACK: bounded, so that a SYN flood cannot grow it.
	// (Half-open joins are bounded per connection: Meta.halfOpen.)
	pending atomic.Int32
	// maxSubflowsNow is maxSubflows for the per-packet path, which must
	// not take mu while holding a subflow's lock.
	maxSubflowsNow atomic.Int32

	// Guarded by mu (the path manager may change them at run time).
	maxSubflows int                  // per connection, the initial one included
	addrIDs     map[netip.Addr]uint8 // our addresses' IDs (0 is the initial subflow's); replaced, never changed in place
	// Set before traffic flows, read-only afterwards.
	localOnly map[netip.Addr]bool // non-nil: inbound packets must be to one of these
}

// DefaultMaxSubflows bounds the subflows of one connection, the initial one
// included, unless SetMaxSubflows says otherwise (Linux allows at most 8
// additional ones).
const DefaultMaxSubflows = 9

type dialKey struct {
	localPort uint16
	remote    netip.AddrPort
}

// NewRegistry returns an empty registry. checksum says whether this side
// asks for DSS checksums.
func NewRegistry(checksum bool) *Registry {
	r := &Registry{
		flows:     make(map[Tuple]*Subflow),
		dials:     make(map[dialKey]*Subflow),
		listening: make(map[uint16]bool),
		joinOnly:  make(map[uint16]bool),
		tokens:    make(map[uint32]*Meta),
		checksum:  checksum,

		maxSubflows: DefaultMaxSubflows,
	}
	r.maxSubflowsNow.Store(DefaultMaxSubflows)
	return r
}

// MIB returns the stack-wide counters.
func (r *Registry) MIB() *MIB { return &r.mib }

// SetMaxSubflows bounds the subflows a connection may have; joins beyond it
// are reset (MP_TCPRST "administratively prohibited", as Linux does). Call
// it before traffic flows.
func (r *Registry) SetMaxSubflows(n int) {
	if n < 1 {
		n = 1
	}
	r.mu.Lock()
	r.maxSubflows = n
	r.mu.Unlock()
	r.maxSubflowsNow.Store(int32(n))
}

// SetAddrID gives our address a the ID id (1-255) for the joins that
// follow; id 0 forgets it (joins from or to it say ID 0). The path manager
// calls it when endpoints change at run time.
func (r *Registry) SetAddrID(a netip.Addr, id uint8) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make(map[netip.Addr]uint8, len(r.addrIDs)+1)
	for k, v := range r.addrIDs {
		ids[k] = v
	}
	if id == 0 {
		delete(ids, a)
	} else {
		ids[a] = id
	}
	r.addrIDs = ids
}

// SetAddresses tells the registry the address IDs of the stack's addresses
// (RFC 8684 §3.2; the initial subflow's address is ID 0 whatever this
// says). A non-nil localOnly lists every address of the stack: inbound
// packets to any other address are dropped:
// the stack runs with IP forwarding on so that a packet to one of its
// addresses may arrive on any link (the weak host model, which a server with
// several paths to one address needs), and must never forward anything else.
// Call it before traffic flows.
func (r *Registry) SetAddresses(ids map[netip.Addr]uint8, localOnly []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrIDs = ids
	if localOnly != nil {
		r.localOnly = make(map[netip.Addr]bool, len(localOnly))
		for _, a := range localOnly {
			r.localOnly[a] = true
		}
	}
}

// isLocal reports whether an inbound packet to dst may be accepted.
func (r *Registry) isLocal(dst netip.Addr) bool {
	return r.localOnly == nil || r.localOnly[dst]
}

// addrID is the address ID of our address a on a connection.
func (r *Registry) addrID(m *Meta, a netip.Addr) uint8 {
	if a == m.initialLocal {
		return 0
	}
	return r.addrIDs[a]
}

// newMetaLocked makes connection state with a fresh key whose token no
// other connection of this stack uses (§3.1: a host must not reuse tokens).
func (r *Registry) newMetaLocked() (*Meta, error) {
	for i := 0; i < 64; i++ {
		key, err := option.NewKey()
		if err != nil {
			return nil, err
		}
		tok := option.Token(key)
		if _, dup := r.tokens[tok]; dup {
			continue
		}
		m := newMeta(key, tok, option.IDSN(key))
		m.checksum.Store(r.checksum)
		m.subflows.Store(1)
		r.tokens[tok] = m
		return m, nil
	}
	return nil, errors.New("subflow: no unique MPTCP token after 64 keys")
}

// Dial prepares a client subflow for an endpoint bound to localPort that is
// about to connect to remote: its SYN will carry MP_CAPABLE.
func (r *Registry) Dial(localPort uint16, remote netip.AddrPort) (*Subflow, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.newMetaLocked()
	if err != nil {
		return nil, err
	}
	s := newSubflow(r, Tuple{Local: netip.AddrPortFrom(netip.Addr{}, localPort), Remote: remote}, Client, m)
	s.st = stateSynSent
	r.mib.Inc(MPCapableSYNTX)
	r.dials[dialKey{localPort, remote}] = s
	return s, nil
}

// Join prepares an additional subflow of the connection of m (RFC 8684
// §3.2) for an endpoint bound to local that is about to connect to remote:
// its SYN will carry MP_JOIN with the peer's token and our address ID
// localID. backup asks the peer to use the subflow only when no other one
// can send.
func (r *Registry) Join(m *Meta, local netip.AddrPort, remote netip.AddrPort, localID uint8, backup bool) (*Subflow, error) {
	nonce, err := newNonce()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tokens[m.localToken] != m {
		return nil, errors.New("subflow: the connection is gone")
	}
	s := newSubflow(r, Tuple{Local: local, Remote: remote}, Client, m)
	s.join = true
	s.localNonce = nonce
	s.localID = localID
	s.localBackup = backup
	s.st = stateSynSent
	m.subflows.Add(1)
	r.dials[dialKey{local.Port(), remote}] = s
	r.mib.Inc(MPJoinSynTx)
	return s, nil
}

// Listen makes SYNs with MP_CAPABLE to port get an MPTCP answer.
func (r *Registry) Listen(port uint16) {
	r.mu.Lock()
	r.listening[port] = true
	r.mu.Unlock()
}

// JoinsOnly makes a listening port refuse new connections (a reset to
// their SYN) while it still takes joins.
func (r *Registry) JoinsOnly(port uint16) {
	r.mu.Lock()
	r.joinOnly[port] = true
	r.mu.Unlock()
}

func (r *Registry) joinsOnly(port uint16) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.joinOnly[port]
}

// Unlisten undoes Listen and forgets the server subflows on port that no
// connection adopted (handshakes gVisor completed but nobody accepted).
func (r *Registry) Unlisten(port uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.listening, port)
	delete(r.joinOnly, port)
	for t, s := range r.flows {
		if s.role == Server && t.Local.Port() == port && !s.adopted.Load() {
			r.forgetLocked(s)
		}
	}
}

// Lookup returns the subflow of an accepted or connected endpoint; the
// layer calls it for every segment.
func (r *Registry) Lookup(t Tuple) *Subflow {
	r.mu.RLock()
	s := r.flows[t]
	r.mu.RUnlock()
	return s
}

// claimDial binds a pending client subflow to the full tuple of its SYN.
func (r *Registry) claimDial(t Tuple) *Subflow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.flows[t]; s != nil {
		return s
	}
	k := dialKey{t.Local.Port(), t.Remote}
	s := r.dials[k]
	if s == nil {
		return nil
	}
	delete(r.dials, k)
	s.tuple = t
	if !s.join {
		s.meta.initialLocal = t.Local.Addr()
	}
	r.flows[t] = s
	return s
}

// acceptSYN creates the server subflow for a SYN with MP_CAPABLE v1 to a
// listening port. When MaxPendingHandshakes are waiting already, the
// oldest goes if it has waited StaleHandshake (a genuine handshake takes a
// round trip; one that waited that long is most likely a flood's), and it
// is returned as evicted for the caller to close outside the lock;
// otherwise the SYN gets no state: gVisor answers it as plain TCP (with a
// SYN cookie once its own backlog is full), so a genuine client still
// connects, without MPTCP. So while a flood lasts new connections fall
// back, and once it stops they get MPTCP again within StaleHandshake.
func (r *Registry) acceptSYN(t Tuple, peerWantsChecksum bool) (s, evicted *Subflow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.flows[t]; s != nil {
		return s, nil // a retransmitted SYN
	}
	if !r.listening[t.Local.Port()] {
		return nil, nil
	}
	if r.pending.Load() >= MaxPendingHandshakes {
		r.pendingQ = stillPending(r.pendingQ)
		if len(r.pendingQ) == 0 || time.Since(r.pendingQ[0].born) < StaleHandshake {
			r.mib.Inc(SynFloodFallback)
			return nil, nil
		}
		evicted = r.pendingQ[0]
		r.pendingQ = append(r.pendingQ[:0], r.pendingQ[1:]...)
		r.mib.Inc(HandshakeEvicted)
	}
	m, err := r.newMetaLocked()
	if err != nil {
		return nil, evicted // answered as plain TCP: fallback
	}
	if peerWantsChecksum {
		m.checksum.Store(true)
	}
	m.initialLocal = t.Local.Addr()
	r.mib.Inc(MPCapableSYNRX)
	s = newSubflow(r, t, Server, m)
	s.st = stateSynReceived
	s.born = time.Now()
	r.flows[t] = s
	s.forgetIfStuck()
	if len(r.pendingQ) >= 2*MaxPendingHandshakes {
		r.pendingQ = stillPending(r.pendingQ) // those done meanwhile
	}
	r.pendingQ = append(r.pendingQ, s)
	return s, evicted
}

// joinVerdict is the answer to a SYN with MP_JOIN.
type joinVerdict uint8

const (
	joinNotOurs joinVerdict = iota // not a listening port: gVisor answers
	joinAccepted
	joinRejected // reset with MP_TCPRST reason
)

// acceptJoin creates the server subflow for a SYN with MP_JOIN (RFC 8684
// §3.2), or says why it is refused: an unknown token (reason "MPTCP-specific
// error", as Linux), or a connection that cannot take another subflow
// ("administratively prohibited").
//
// Half-open joins do not count against the connection's subflow limit: a
// flood of join SYNs carrying the real token (the token is on the wire)
// would otherwise hold every slot. Each connection keeps at most
// MaxHalfOpenJoins of them; a new one evicts the oldest, which is returned
// as evicted for the caller to close (outside the registry's lock).
func (r *Registry) acceptJoin(t Tuple, j *option.MPJoin) (s *Subflow, v joinVerdict, reason uint8, evicted *Subflow) {
	nonce, err := newNonce()
	if err != nil {
		return nil, joinRejected, option.ReasonNoResources, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.flows[t]; s != nil {
		return s, joinAccepted, 0, nil // a retransmitted SYN
	}
	if !r.listening[t.Local.Port()] {
		return nil, joinNotOurs, 0, nil
	}
	r.mib.Inc(MPJoinSynRx)
	if j.Backup {
		r.mib.Inc(MPJoinSynBackupRx)
	}
	m := r.tokens[j.Token]
	if m == nil {
		r.mib.Inc(MPJoinNoTokenFound)
		return nil, joinRejected, option.ReasonMPTCPError, nil
	}
	m.halfOpen = stillPending(m.halfOpen)
	if !m.canAck.Load() || int(m.subflows.Load())-len(m.halfOpen) >= r.maxSubflows {
		r.mib.Inc(MPJoinRejected)
		return nil, joinRejected, option.ReasonAdminProhibited, nil
	}
	if len(m.halfOpen) >= MaxHalfOpenJoins {
		evicted = m.halfOpen[0]
		m.halfOpen = append(m.halfOpen[:0], m.halfOpen[1:]...)
		r.mib.Inc(JoinHalfOpenEvicted)
	}
	s = newSubflow(r, t, Server, m)
	s.join = true
	s.localNonce, s.remoteNonce = nonce, j.Nonce
	s.localID, s.remoteID = r.addrID(m, t.Local.Addr()), j.AddrID
	s.peerBackup = j.Backup
	s.st = stateSynReceived
	m.subflows.Add(1)
	m.halfOpen = append(m.halfOpen, s)
	r.flows[t] = s
	s.forgetIfStuck()
	return s, joinAccepted, 0, evicted
}

// stillPending keeps, in order, the subflows still waiting for their third ACK.
func stillPending(l []*Subflow) []*Subflow {
	out := l[:0]
	for _, s := range l {
		if s.pending.Load() {
			out = append(out, s)
		}
	}
	clear(l[len(out):])
	return out
}

// Bounds on server handshakes waiting for their third ACK.
const (
	// MaxPendingHandshakes bounds those of new connections stack-wide, as
	// gVisor bounds its own SYN-RECEIVED endpoints before it turns to SYN
	// cookies.
	MaxPendingHandshakes = 1024
	// MaxHalfOpenJoins bounds them per connection. A genuine join
	// completes in one round trip; under a flood of R SYNs/s it survives
	// eviction for MaxHalfOpenJoins/R seconds (13 ms at 5 000/s).
	MaxHalfOpenJoins = 64
	// StaleHandshake is how long a pending handshake of a new connection
	// is kept, once the table is full, before a new SYN may take its place.
	StaleHandshake = 3 * time.Second
)

// forgetIfStuck forgets a server handshake that never completes (a lost
// peer, a SYN flood): it must not keep its context forever. Until then it
// counts as pending (see stopHandshakeTimerLocked).
func (s *Subflow) forgetIfStuck() {
	s.pending.Store(true)
	if s.join {
		s.meta.halfOpenN.Add(1)
	} else {
		s.reg.pending.Add(1)
	}
	s.hsTimer = time.AfterFunc(handshakeTimeout, func() {
		s.mu.Lock()
		stale := s.st == stateSynReceived
		s.mu.Unlock()
		if stale {
			s.Close()
		}
	})
}

func newNonce() (uint32, error) {
	k, err := option.NewKey()
	return uint32(k), err
}

// handshakeTimeout is how long a server subflow may wait for the third ACK.
const handshakeTimeout = 75 * time.Second

func (r *Registry) remove(s *Subflow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(s)
}

// forgetLocked drops s from the maps, once; the connection's token goes
// with its last subflow.
func (r *Registry) forgetLocked(s *Subflow) {
	if r.flows[s.tuple] == s {
		delete(r.flows, s.tuple)
	}
	for k, v := range r.dials {
		if v == s {
			delete(r.dials, k)
		}
	}
	if s.forgotten {
		return
	}
	s.forgotten = true
	if s.meta.subflows.Add(-1) <= 0 && r.tokens[s.meta.localToken] == s.meta {
		delete(r.tokens, s.meta.localToken)
	}
}
