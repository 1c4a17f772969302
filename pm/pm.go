package pm

import (
	"net/netip"
)

// Flags say what an endpoint is used for, as in Linux's
// `ip mptcp endpoint add ADDR [subflow] [signal] [backup]`.
type Flags uint8

const (
	// Subflow: a client opens an additional subflow from this address to
	// the peer's address of the initial subflow.
	Subflow Flags = 1 << iota
	// Signal: the address is announced to peers with ADD_ADDR (not yet
	// implemented: accepted and kept for the path manager to come).
	Signal
	// Backup: subflows from this address are backup paths (MP_JOIN B bit).
	Backup
)

// Endpoint is one local address the path manager may use.
type Endpoint struct {
	Addr  netip.Addr
	ID    uint8 // address ID (RFC 8684 §3.2); 1-255, unique; 0 is reserved for the initial subflow's address
	Flags Flags
}

// Limits bound what a connection may do, as `ip mptcp limits` does.
type Limits struct {
	// Subflows is the number of additional subflows a connection may have:
	// those a client opens and those a server accepts (Linux allows at
	// most 8).
	Subflows int
}

// DefaultLimits allow every endpoint to be used: 8 additional subflows.
var DefaultLimits = Limits{Subflows: 8}

// Manager decides which subflows a connection opens and accepts. It is
// immutable once made and safe for concurrent use.
type Manager struct {
	endpoints []Endpoint
	limits    Limits
}

// New returns a manager over endpoints with limits.
func New(endpoints []Endpoint, limits Limits) *Manager {
	return &Manager{endpoints: append([]Endpoint(nil), endpoints...), limits: limits}
}

// Limits returns the manager's limits.
func (m *Manager) Limits() Limits { return m.limits }

// Endpoints returns a copy of the endpoints.
func (m *Manager) Endpoints() []Endpoint { return append([]Endpoint(nil), m.endpoints...) }

// AddrIDs maps each endpoint's address to its ID.
func (m *Manager) AddrIDs() map[netip.Addr]uint8 {
	ids := make(map[netip.Addr]uint8, len(m.endpoints))
	for _, e := range m.endpoints {
		ids[e.Addr] = e.ID
	}
	return ids
}

// SubflowsFor returns the endpoints a client connection whose initial
// subflow goes from local to remote opens additional subflows from: every
// Subflow endpoint of remote's address family other than local, up to
// Limits.Subflows, in order. Like Linux, each joins the peer's address of
// the initial subflow.
func (m *Manager) SubflowsFor(local, remote netip.Addr) []Endpoint {
	var out []Endpoint
	for _, e := range m.endpoints {
		if len(out) >= m.limits.Subflows {
			break
		}
		if e.Flags&Subflow == 0 || e.Addr == local || e.Addr.Is4() != remote.Is4() {
			continue
		}
		out = append(out, e)
	}
	return out
}
