package pm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"
)

// Flags say what an endpoint is used for, as in Linux's
// `ip mptcp endpoint add ADDR [port P] [signal] [subflow] [backup] [fullmesh]`.
type Flags uint8

const (
	// Subflow: a client opens an additional subflow from this address to
	// the peer's address of the initial subflow.
	Subflow Flags = 1 << iota
	// Signal: the address (and port, if the endpoint has one) is announced
	// to peers with ADD_ADDR once a connection is established.
	Signal
	// Backup: subflows from this address are backup paths (MP_JOIN B bit,
	// MP_PRIO when it changes).
	Backup
	// Fullmesh: a subflow is opened from this address to every address the
	// peer announced (and, on a client, to the initial one), instead of one
	// subflow per announced address from the address the routes pick.
	Fullmesh
	// Implicit marks an endpoint the manager made itself: an address that
	// was no endpoint but joined an address the peer announced needed an
	// ID (as Linux's "implicit" endpoints).
	Implicit
)

var flagNames = []struct {
	f    Flags
	name string
}{{Signal, "signal"}, {Subflow, "subflow"}, {Backup, "backup"}, {Fullmesh, "fullmesh"}, {Implicit, "implicit"}}

func (f Flags) String() string {
	s := ""
	for _, n := range flagNames {
		if f&n.f != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	return s
}

// Endpoint is one local address the path manager may use.
type Endpoint struct {
	Addr  netip.Addr
	Port  uint16 // Signal: announced with this port, and joins are accepted on it; 0: the connection's port
	ID    uint8  // address ID (RFC 8684 §3.2), 1-255, unique; 0 lets the manager pick one
	Flags Flags
}

func (e Endpoint) String() string {
	a := e.Addr.String()
	if e.Port != 0 {
		a = netip.AddrPortFrom(e.Addr, e.Port).String()
	}
	return fmt.Sprintf("%s id %d %s", a, e.ID, e.Flags)
}

// Limits bound what a connection may do, as `ip mptcp limits` does.
type Limits struct {
	// Subflows is the number of additional subflows a connection may have:
	// those it opens and those it accepts (Linux allows at most 8).
	Subflows int
	// AddAddrAccepted is how many addresses announced by the peer a
	// connection opens subflows to.
	AddAddrAccepted int
}

// MaxLimit is the largest value of either limit, as in Linux.
const MaxLimit = 8

// DefaultLimits use what the peer offers: 8 additional subflows, 8
// announced addresses (Linux's kernel defaults to 2 and 0; an application
// that embeds MPTCP wants announced paths used).
var DefaultLimits = Limits{Subflows: 8, AddAddrAccepted: 8}

// ErrJoinRejected is in the error of a SubflowClosed event when the peer
// refused the join (a reset during the MP_JOIN handshake): the manager does
// not try that subflow again.
var ErrJoinRejected = errors.New("join rejected by the peer")

// ErrClosedOnPurpose is in the error of a SubflowClosed event when the
// subflow was closed on purpose (DestroySubflow, an address removed by
// either side), not by a failure: the manager does not open it again.
var ErrClosedOnPurpose = errors.New("subflow closed on purpose")

// Re-creating a subflow whose path failed: the first attempt waits
// RecreateBackoff, each next one twice as long up to RecreateMaxBackoff,
// at most RecreateAttempts times in a row.
const (
	RecreateBackoff    = time.Second
	RecreateMaxBackoff = 8 * time.Second
	RecreateAttempts   = 12
)

// Manager is the built-in path manager, modelled on Linux's in-kernel one
// (`ip mptcp endpoint`, `ip mptcp limits`) and written only against the
// Handler API, as a userspace path manager would be:
//   - on an established connection it announces Signal endpoints, and a
//     client opens a subflow from each Subflow endpoint to the peer's
//     address of the initial subflow;
//   - it joins addresses the peer announces, within the limits;
//   - when the peer removes an address it stops using it;
//   - unlike Linux, when a subflow it keeps dies (its path failed) it opens
//     it again, with backoff and a bounded number of attempts, so that
//     traffic returns to the path when the path comes back;
//   - endpoints and limits may change at run time: new Signal endpoints
//     are announced, removed endpoints are withdrawn with REMOVE_ADDR (and
//     their subflows closed), a changed Backup flag is sent with MP_PRIO.
//
// It is safe for concurrent use.
type Manager struct {
	mu        sync.Mutex
	endpoints []Endpoint
	limits    Limits
	host      Host
	conns     map[Conn]*connState
	listening map[netip.AddrPort]bool
	backoff   time.Duration
}

// connState is what the manager keeps of one connection.
type connState struct {
	established bool
	closed      bool
	initLocal   netip.AddrPort
	initRemote  netip.AddrPort
	accepted    map[uint8]netip.AddrPort // addresses the peer announced that we use, by its ID
	paths       map[pathKey]*keep        // subflows the manager keeps up
}

// pathKey names a subflow by our address and the peer's address and port.
type pathKey struct {
	local  netip.Addr
	remote netip.AddrPort
}

// keep is one subflow the manager wants to exist.
type keep struct {
	localID  uint8
	remoteID uint8
	backup   bool
	attempts int // failed attempts since it was last established
	timer    *time.Timer
}

// New returns a manager over endpoints with limits. Endpoints with ID 0
// get the lowest free ID.
func New(endpoints []Endpoint, limits Limits) *Manager {
	m := &Manager{limits: limits, conns: make(map[Conn]*connState), listening: make(map[netip.AddrPort]bool), backoff: RecreateBackoff}
	for _, e := range endpoints {
		e.Addr = e.Addr.Unmap()
		if e.ID == 0 {
			e.ID = m.freeIDLocked()
		}
		m.endpoints = append(m.endpoints, e)
	}
	return m
}

// SetRecreateBackoff changes the first delay before a dead subflow is
// opened again (RecreateBackoff by default); for tests and impatient
// applications.
func (m *Manager) SetRecreateBackoff(d time.Duration) {
	m.mu.Lock()
	m.backoff = max(d, time.Millisecond)
	m.mu.Unlock()
}

func (m *Manager) freeIDLocked() uint8 {
	for id := 1; id < 256; id++ {
		used := false
		for _, e := range m.endpoints {
			if int(e.ID) == id {
				used = true
				break
			}
		}
		if !used {
			return uint8(id)
		}
	}
	return 0
}

// Attach is called by the stack once; it registers the endpoints' IDs and
// listens on the ports of Signal endpoints that have one.
func (m *Manager) Attach(h Host) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.host = h
	h.SetMaxSubflows(m.limits.Subflows)
	for _, e := range m.endpoints {
		h.SetAddrID(e.Addr, e.ID)
		if err := m.listenLocked(e); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) listenLocked(e Endpoint) error {
	if e.Flags&Signal == 0 || e.Port == 0 || m.host == nil {
		return nil
	}
	ap := netip.AddrPortFrom(e.Addr, e.Port)
	if m.listening[ap] {
		return nil
	}
	if err := m.host.ListenJoins(ap); err != nil {
		return fmt.Errorf("pm: endpoint %s: %w", e, err)
	}
	m.listening[ap] = true
	return nil
}

// Limits returns the manager's limits.
func (m *Manager) Limits() Limits {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limits
}

// SetLimits changes the limits; they apply to what connections do from now
// on (nothing already open is closed).
func (m *Manager) SetLimits(l Limits) error {
	if l.Subflows < 0 || l.Subflows > MaxLimit || l.AddAddrAccepted < 0 || l.AddAddrAccepted > MaxLimit {
		return fmt.Errorf("pm: limits must be 0-%d", MaxLimit)
	}
	m.mu.Lock()
	m.limits = l
	h := m.host
	m.mu.Unlock()
	if h != nil {
		h.SetMaxSubflows(l.Subflows)
	}
	return nil
}

// Endpoints returns a copy of the endpoints.
func (m *Manager) Endpoints() []Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Endpoint(nil), m.endpoints...)
}

// AddEndpoint adds an endpoint at run time and returns it with its ID. A
// Signal endpoint is announced on every established connection; a Subflow
// one is used by every established client connection.
func (m *Manager) AddEndpoint(e Endpoint) (Endpoint, error) {
	e.Addr = e.Addr.Unmap()
	if !e.Addr.IsValid() {
		return e, errors.New("pm: endpoint without an address")
	}
	m.mu.Lock()
	for _, o := range m.endpoints {
		if o.Addr == e.Addr {
			m.mu.Unlock()
			return e, fmt.Errorf("pm: %s is already an endpoint (id %d)", e.Addr, o.ID)
		}
		if e.ID != 0 && o.ID == e.ID {
			m.mu.Unlock()
			return e, fmt.Errorf("pm: id %d is already used by %s", e.ID, o.Addr)
		}
	}
	if e.ID == 0 {
		if e.ID = m.freeIDLocked(); e.ID == 0 {
			m.mu.Unlock()
			return e, errors.New("pm: no free address ID")
		}
	}
	if m.host != nil {
		if err := m.listenLocked(e); err != nil {
			m.mu.Unlock()
			return e, err
		}
		m.host.SetAddrID(e.Addr, e.ID)
	}
	m.endpoints = append(m.endpoints, e)
	var acts []func()
	for c, st := range m.conns {
		if st.established && !st.closed {
			acts = m.useEndpointLocked(acts, c, st, e)
		}
	}
	m.mu.Unlock()
	run(acts)
	return e, nil
}

// RemoveEndpoint removes the endpoint with the given ID at run time: every
// connection sends REMOVE_ADDR for it and closes its subflows from it.
func (m *Manager) RemoveEndpoint(id uint8) error {
	m.mu.Lock()
	i := m.indexLocked(id)
	if i < 0 {
		m.mu.Unlock()
		return fmt.Errorf("pm: no endpoint with id %d", id)
	}
	e := m.endpoints[i]
	m.endpoints = append(m.endpoints[:i], m.endpoints[i+1:]...)
	if m.host != nil {
		m.host.SetAddrID(e.Addr, 0)
		ap := netip.AddrPortFrom(e.Addr, e.Port)
		if m.listening[ap] {
			m.host.UnlistenJoins(ap)
			delete(m.listening, ap)
		}
	}
	var acts []func()
	for c, st := range m.conns {
		if st.closed {
			continue
		}
		for k, p := range st.paths {
			if k.local == e.Addr {
				p.stop()
				delete(st.paths, k)
			}
		}
		c := c
		ids := []uint8{e.ID}
		if st.initLocal.Addr() == e.Addr {
			ids = append(ids, 0) // the initial subflow's address is ID 0 on the wire
		}
		acts = append(acts, func() {
			for _, id := range ids {
				c.Remove(id)
			}
		})
	}
	m.mu.Unlock()
	run(acts)
	return nil
}

// SetBackup changes the Backup flag of the endpoint with the given ID at
// run time: every subflow from its address sends MP_PRIO.
func (m *Manager) SetBackup(id uint8, backup bool) error {
	m.mu.Lock()
	i := m.indexLocked(id)
	if i < 0 {
		m.mu.Unlock()
		return fmt.Errorf("pm: no endpoint with id %d", id)
	}
	if backup {
		m.endpoints[i].Flags |= Backup
	} else {
		m.endpoints[i].Flags &^= Backup
	}
	a := m.endpoints[i].Addr
	var acts []func()
	for c, st := range m.conns {
		if st.closed {
			continue
		}
		for k, p := range st.paths {
			if k.local == a {
				p.backup = backup
			}
		}
		c := c
		acts = append(acts, func() {
			for _, sf := range c.Subflows() {
				if sf.Local.Addr() == a {
					c.SetBackup(sf.Local, sf.Remote, backup)
				}
			}
		})
	}
	m.mu.Unlock()
	run(acts)
	return nil
}

func (m *Manager) indexLocked(id uint8) int {
	for i, e := range m.endpoints {
		if e.ID == id {
			return i
		}
	}
	return -1
}

func run(acts []func()) {
	for _, a := range acts {
		a()
	}
}

// HandleEvent implements Handler.
func (m *Manager) HandleEvent(c Conn, e Event) {
	m.mu.Lock()
	st := m.conns[c]
	if st == nil {
		if e.Kind == Closed {
			m.mu.Unlock()
			return
		}
		l, r := c.Initial()
		st = &connState{initLocal: l, initRemote: r, accepted: make(map[uint8]netip.AddrPort), paths: make(map[pathKey]*keep)}
		m.conns[c] = st
	}
	var acts []func()
	switch e.Kind {
	case Established:
		st.established = true
		if !c.Server() {
			// A client keeps the initial subflow up too: if it dies
			// while others live, it is opened again as a join from the
			// same address. (A server opens subflows only to addresses
			// the client announced: the client's port of the initial
			// subflow takes no joins.)
			st.paths[pathKey{st.initLocal.Addr(), st.initRemote}] = &keep{}
		}
		for _, ep := range m.endpoints {
			acts = m.useEndpointLocked(acts, c, st, ep)
		}
	case Announced:
		acts = m.peerAnnouncedLocked(acts, c, st, e)
	case Removed:
		delete(st.accepted, e.RemoteID)
		for k, p := range st.paths {
			if p.remoteID == e.RemoteID && (e.RemoteID != 0 || k.remote == st.initRemote) {
				p.stop()
				delete(st.paths, k)
			}
		}
	case SubflowEstablished:
		k := pathKey{e.Local.Addr(), e.Remote}
		if p := st.paths[k]; p != nil {
			if p.attempts > 0 {
				m.logf("subflow %s -> %s open again after %d attempts", k.local, k.remote, p.attempts)
			}
			p.attempts = 0
		}
	case SubflowClosed:
		k := pathKey{e.Local.Addr(), e.Remote}
		if p := st.paths[k]; p != nil && !st.closed {
			if errors.Is(e.Err, ErrClosedOnPurpose) || errors.Is(e.Err, io.EOF) {
				// Closed on purpose, by us or by the peer (a FIN): not a
				// failure to repair.
				delete(st.paths, k)
				break
			}
			if errors.Is(e.Err, ErrJoinRejected) {
				// The peer said no (its limits, or it does not know the
				// address): asking again would only be refused again.
				m.logf("subflow %s -> %s: %v", k.local, e.Remote, e.Err)
				delete(st.paths, k)
				break
			}
			acts = m.retryLocked(acts, c, st, k, p, e.Err)
		}
	case Closed:
		st.closed = true
		for _, p := range st.paths {
			p.stop()
		}
		delete(m.conns, c)
	}
	m.mu.Unlock()
	run(acts)
}

// useEndpointLocked applies endpoint e to an established connection.
func (m *Manager) useEndpointLocked(acts []func(), c Conn, st *connState, e Endpoint) []func() {
	if e.Flags&Signal != 0 && e.Addr != st.initLocal.Addr() {
		ap := netip.AddrPortFrom(e.Addr, e.Port)
		id := e.ID
		acts = append(acts, func() {
			if err := c.Announce(id, ap); err != nil && m.host != nil {
				m.host.Log("announce %s: %v", ap, err)
			}
		})
	}
	if c.Server() || e.Flags&(Subflow|Fullmesh) == 0 || e.Addr == st.initLocal.Addr() || e.Addr.Is4() != st.initRemote.Addr().Is4() {
		return acts
	}
	acts = m.openLocked(acts, c, st, e.Addr, e.ID, st.initRemote, 0, e.Flags&Backup != 0)
	if e.Flags&Fullmesh != 0 {
		for rid, ra := range st.accepted {
			acts = m.openLocked(acts, c, st, e.Addr, e.ID, ra, rid, e.Flags&Backup != 0)
		}
	}
	return acts
}

// peerAnnouncedLocked joins an address the peer announced, within the
// limits: from every Fullmesh endpoint of its family if there are any,
// else from the address our routes pick for it.
func (m *Manager) peerAnnouncedLocked(acts []func(), c Conn, st *connState, e Event) []func() {
	remote := e.Remote
	if remote.Port() == 0 {
		remote = netip.AddrPortFrom(remote.Addr(), st.initRemote.Port())
	}
	if _, dup := st.accepted[e.RemoteID]; dup {
		return acts // a retransmitted announcement
	}
	if len(st.accepted) >= m.limits.AddAddrAccepted {
		m.logf("peer address %s (id %d) not used: add_addr_accepted limit %d reached", remote, e.RemoteID, m.limits.AddAddrAccepted)
		return acts
	}
	st.accepted[e.RemoteID] = remote
	var full []Endpoint
	for _, ep := range m.endpoints {
		if ep.Flags&Fullmesh != 0 && ep.Addr.Is4() == remote.Addr().Is4() {
			full = append(full, ep)
		}
	}
	if len(full) > 0 {
		for _, ep := range full {
			acts = m.openLocked(acts, c, st, ep.Addr, ep.ID, remote, e.RemoteID, ep.Flags&Backup != 0)
		}
		return acts
	}
	local := st.initLocal.Addr()
	if m.host != nil {
		if a, ok := m.host.Route(remote.Addr()); ok {
			local = a
		}
	}
	if local.Is4() != remote.Addr().Is4() {
		m.logf("peer address %s (id %d) not used: no local address of its family", remote, e.RemoteID)
		return acts
	}
	id, backup := uint8(0), false
	if local != st.initLocal.Addr() {
		ep, ok := m.endpointOfLocked(local)
		if !ok {
			if ep.ID = m.freeIDLocked(); ep.ID == 0 {
				m.logf("peer address %s (id %d) not used: no free address ID for %s", remote, e.RemoteID, local)
				return acts
			}
			ep.Addr, ep.Flags = local, Implicit
			m.endpoints = append(m.endpoints, ep)
			if m.host != nil {
				m.host.SetAddrID(local, ep.ID)
			}
		}
		id, backup = ep.ID, ep.Flags&Backup != 0
	}
	return m.openLocked(acts, c, st, local, id, remote, e.RemoteID, backup)
}

func (m *Manager) endpointOfLocked(a netip.Addr) (Endpoint, bool) {
	for _, e := range m.endpoints {
		if e.Addr == a {
			return e, true
		}
	}
	return Endpoint{}, false
}

// openLocked starts a subflow from local to remote unless one exists or the
// subflow limit is reached.
func (m *Manager) openLocked(acts []func(), c Conn, st *connState, local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) []func() {
	k := pathKey{local, remote}
	if _, dup := st.paths[k]; dup {
		return acts
	}
	if extra := len(st.paths) - 1; extra >= m.limits.Subflows {
		m.logf("no subflow %s -> %s: subflows limit %d reached", local, remote, m.limits.Subflows)
		return acts
	}
	p := &keep{localID: localID, remoteID: remoteID, backup: backup}
	st.paths[k] = p
	return append(acts, m.create(c, k, p))
}

func (m *Manager) create(c Conn, k pathKey, p *keep) func() {
	id, backup := p.localID, p.backup
	return func() {
		if err := c.CreateSubflow(netip.AddrPortFrom(k.local, 0), id, k.remote, backup); err != nil {
			m.logf("subflow %s -> %s: %v", k.local, k.remote, err)
		}
	}
}

// retryLocked schedules the next attempt to open a subflow that died or
// failed to join, with exponential backoff, a bounded number of times.
func (m *Manager) retryLocked(acts []func(), c Conn, st *connState, k pathKey, p *keep, why error) []func() {
	if p.timer != nil {
		m.logf("subflow %s -> %s closed (%v); a new attempt is already scheduled", k.local, k.remote, why)
		return acts
	}
	if p.attempts >= RecreateAttempts {
		m.logf("subflow %s -> %s: given up after %d attempts", k.local, k.remote, p.attempts)
		delete(st.paths, k)
		return acts
	}
	d := min(m.backoff<<min(p.attempts, 10), max(RecreateMaxBackoff, m.backoff))
	p.attempts++
	m.logf("subflow %s -> %s closed (%v); attempt %d in %v", k.local, k.remote, why, p.attempts, d)
	p.timer = time.AfterFunc(d, func() {
		m.mu.Lock()
		if st.closed || st.paths[k] != p {
			m.mu.Unlock()
			return
		}
		p.timer = nil
		f := m.create(c, k, p)
		m.mu.Unlock()
		f()
	})
	return acts
}

func (p *keep) stop() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

func (m *Manager) logf(format string, args ...any) {
	if m.host != nil {
		m.host.Log(format, args...)
	}
}

var (
	_ Handler  = (*Manager)(nil)
	_ Attacher = (*Manager)(nil)
)
