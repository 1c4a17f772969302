package subflow

import (
	"errors"
	"net/netip"
	"sync"
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
	tokens    map[uint32]*Meta

	// Checksum is this side's wish for DSS checksums (MP_CAPABLE flag A).
	checksum bool
}

type dialKey struct {
	localPort uint16
	remote    netip.AddrPort
}

// NewRegistry returns an empty registry. checksum says whether this side
// asks for DSS checksums.
func NewRegistry(checksum bool) *Registry {
	return &Registry{
		flows:     make(map[Tuple]*Subflow),
		dials:     make(map[dialKey]*Subflow),
		listening: make(map[uint16]bool),
		tokens:    make(map[uint32]*Meta),
		checksum:  checksum,
	}
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
	r.dials[dialKey{localPort, remote}] = s
	return s, nil
}

// Listen makes SYNs with MP_CAPABLE to port get an MPTCP answer.
func (r *Registry) Listen(port uint16) {
	r.mu.Lock()
	r.listening[port] = true
	r.mu.Unlock()
}

// Unlisten undoes Listen and forgets the server subflows on port that no
// connection adopted (handshakes gVisor completed but nobody accepted).
func (r *Registry) Unlisten(port uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.listening, port)
	for t, s := range r.flows {
		if s.role == Server && t.Local.Port() == port && !s.adopted.Load() {
			delete(r.flows, t)
			if r.tokens[s.meta.localToken] == s.meta {
				delete(r.tokens, s.meta.localToken)
			}
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
	r.flows[t] = s
	return s
}

// acceptSYN creates the server subflow for a SYN with MP_CAPABLE v1 to a
// listening port.
func (r *Registry) acceptSYN(t Tuple, peerWantsChecksum bool) *Subflow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.flows[t]; s != nil {
		return s // a retransmitted SYN
	}
	if !r.listening[t.Local.Port()] {
		return nil
	}
	m, err := r.newMetaLocked()
	if err != nil {
		return nil // answered as plain TCP: fallback
	}
	if peerWantsChecksum {
		m.checksum.Store(true)
	}
	s := newSubflow(r, t, Server, m)
	s.st = stateSynReceived
	r.flows[t] = s
	// A handshake that never completes (a lost peer, a SYN flood) must not
	// keep its context forever.
	s.hsTimer = time.AfterFunc(handshakeTimeout, func() {
		s.mu.Lock()
		stale := s.st == stateSynReceived
		s.mu.Unlock()
		if stale {
			s.Close()
		}
	})
	return s
}

// handshakeTimeout is how long a server subflow may wait for the third ACK.
const handshakeTimeout = 75 * time.Second

func (r *Registry) remove(s *Subflow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flows[s.tuple] == s {
		delete(r.flows, s.tuple)
	}
	for k, v := range r.dials {
		if v == s {
			delete(r.dials, k)
		}
	}
	if s.meta != nil && r.tokens[s.meta.localToken] == s.meta {
		delete(r.tokens, s.meta.localToken)
	}
}
