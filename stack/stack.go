package stack

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Link is one network path of the stack: a network-layer link endpoint (a
// TUN device, an in-process emulated link, or any gVisor link endpoint that
// carries raw IP packets) and the stack's addresses on it. Each address's
// prefix becomes an on-link route.
type Link struct {
	Endpoint gvstack.LinkEndpoint
	Addrs    []netip.Prefix
	// Backup makes the subflows this stack opens from the link's
	// addresses backup paths (MP_JOIN B bit): they carry data only when no
	// other subflow can.
	Backup bool
}

// Config configures a Stack.
type Config struct {
	// Links are the stack's network paths; at least one.
	Links []Link
	// Checksum asks peers for DSS checksums (RFC 8684 §3.3.1). They are
	// used when either side asks.
	Checksum bool
	// ReceiveBuffer is the connection-level receive buffer in bytes
	// (default 4 MiB). A full buffer closes the subflows' windows.
	ReceiveBuffer int
	// SendBuffer is the connection-level send buffer in bytes (default
	// 4 MiB): written data stays in it until the peer's DATA_ACK covers
	// it, so that another subflow can send it again. Write blocks when it
	// is full.
	SendBuffer int

	// Scheduler names the scheduler of new connections (see
	// scheduler.Names; "" is the default, lowest RTT first).
	// NewScheduler, when set, is used instead; Conn.SetScheduler changes
	// one connection's.
	Scheduler    string
	NewScheduler func() scheduler.Scheduler

	// Endpoints are the path manager's local addresses (see package pm).
	// Nil means every address of every link, flagged pm.Subflow (and
	// pm.Backup on a Backup link): a client opens one additional subflow
	// from each address other than the initial subflow's, to the peer's
	// address of the initial subflow.
	Endpoints []pm.Endpoint
	// Limits bound the additional subflows of a connection, opened or
	// accepted, and the peer's addresses it uses (nil: pm.DefaultLimits).
	Limits *pm.Limits
	// PathManager, when set, replaces the built-in path manager (made
	// from Endpoints and Limits): it gets every connection's events and
	// decides which subflows and announcements there are (see package
	// pm). If it implements pm.Attacher it is attached to the stack.
	PathManager pm.Handler

	// SubflowTimeout is how long a subflow may make no progress
	// (repeated retransmission timeouts) before it is reset, while
	// another subflow of the connection works: its path has failed, and
	// the path manager opens it again when the path comes back. 0 means
	// 15 s; negative never resets (a connection's last working subflow
	// is never reset for this).
	SubflowTimeout time.Duration

	// Logf, when set, receives what the path manager did or could not do
	// (verbose output).
	Logf func(format string, args ...any)
}

const (
	defaultReceiveBuffer = 4 << 20
	defaultSendBuffer    = 4 << 20
)

// Stack is a userspace TCP/IP stack that speaks MPTCP.
type Stack struct {
	gs           *gvstack.Stack
	reg          *subflow.Registry
	layers       []*subflow.Layer
	rcvBuf       int
	sndBuf       int
	pmh          pm.Handler  // the path manager
	builtin      *pm.Manager // the built-in one, if it is pmh
	nicOf        map[netip.Addr]tcpip.NICID
	prefixes     []netip.Prefix // our addresses with their on-link prefixes
	logf         func(format string, args ...any)
	sfTimeout    time.Duration
	newScheduler func() scheduler.Scheduler

	mu    sync.Mutex
	conns map[*Conn]struct{}
	lns   map[*Listener]struct{}
	// joinLns accept joins on the ports of signal endpoints.
	joinLns map[netip.AddrPort]*Listener
	metas   map[*subflow.Meta]*Conn // MPTCP connections, for joins
	done    bool
}

// New creates a stack over cfg.Links.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Links) == 0 {
		return nil, errors.New("umptcp: stack needs at least one link")
	}
	gs := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	s := &Stack{gs: gs, reg: subflow.NewRegistry(cfg.Checksum), rcvBuf: cfg.ReceiveBuffer, sndBuf: cfg.SendBuffer,
		nicOf: make(map[netip.Addr]tcpip.NICID), logf: cfg.Logf, joinLns: make(map[netip.AddrPort]*Listener),
		conns: make(map[*Conn]struct{}), lns: make(map[*Listener]struct{}), metas: make(map[*subflow.Meta]*Conn)}
	if s.rcvBuf <= 0 {
		s.rcvBuf = defaultReceiveBuffer
	}
	if s.sndBuf <= 0 {
		s.sndBuf = defaultSendBuffer
	}
	if err := tuneTCP(gs, s.rcvBuf); err != nil {
		gs.Close()
		return nil, err
	}
	switch {
	case cfg.NewScheduler != nil:
		s.newScheduler = cfg.NewScheduler
	default:
		if _, err := scheduler.New(cfg.Scheduler); err != nil && cfg.Scheduler != "" {
			gs.Close()
			return nil, wrapf("%v", err)
		}
		name := cfg.Scheduler
		s.newScheduler = func() scheduler.Scheduler {
			if name == "" {
				return scheduler.NewMinRTT()
			}
			sc, _ := scheduler.New(name)
			return sc
		}
	}
	// The registry and the path manager are set up before any link is
	// attached: the links start delivering packets at once.
	var endpoints []pm.Endpoint
	var local []netip.Addr
	for i, l := range cfg.Links {
		if l.Endpoint == nil {
			gs.Close()
			return nil, wrapf("link %d has no endpoint", i)
		}
		for _, p := range l.Addrs {
			a := p.Addr().Unmap()
			s.nicOf[a] = tcpip.NICID(i + 1)
			s.prefixes = append(s.prefixes, netip.PrefixFrom(a, p.Bits()))
			local = append(local, a)
			flags := pm.Subflow
			if l.Backup {
				flags |= pm.Backup
			}
			endpoints = append(endpoints, pm.Endpoint{Addr: a, ID: uint8(len(endpoints) + 1), Flags: flags})
		}
	}
	if cfg.Endpoints != nil {
		endpoints = cfg.Endpoints
	}
	limits := pm.DefaultLimits
	if cfg.Limits != nil {
		limits = *cfg.Limits
	}
	if err := pm.CheckEndpoints(endpoints); err != nil {
		gs.Close()
		return nil, wrapf("%v", err)
	}
	for _, e := range endpoints {
		if _, ok := s.nicOf[e.Addr.Unmap()]; !ok {
			gs.Close()
			return nil, wrapf("endpoint %s is not an address of any link", e.Addr)
		}
	}
	s.pmh = cfg.PathManager
	if s.pmh == nil {
		s.builtin = pm.New(endpoints, limits)
		s.pmh = s.builtin
	}
	s.sfTimeout = cfg.SubflowTimeout
	if s.sfTimeout == 0 {
		s.sfTimeout = defaultSubflowTimeout
	}
	s.reg.SetMaxSubflows(limits.Subflows + 1)
	multi := len(cfg.Links) > 1
	if !multi {
		local = nil
	}
	ids := make(map[netip.Addr]uint8)
	if s.builtin != nil {
		for _, e := range s.builtin.Endpoints() {
			ids[e.Addr] = e.ID
		}
	}
	s.reg.SetAddresses(ids, local)
	if multi {
		// The weak host model: a packet to any of our addresses is
		// accepted on any link (a peer may reach the address of the
		// initial subflow over another path), and a subflow bound to one
		// link may use the address of another. gVisor does this with
		// forwarding on; the option layer drops every packet that is not
		// for one of our addresses, so nothing is ever forwarded.
		for _, proto := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
			if err := gs.SetForwardingDefaultAndAllNICs(proto, true); err != nil {
				gs.Close()
				return nil, wrapf("forwarding: %s", err)
			}
		}
	}

	var routes, defaults []tcpip.Route
	for i, l := range cfg.Links {
		nic := tcpip.NICID(i + 1)
		layer := subflow.NewLayer(l.Endpoint, s.reg)
		s.layers = append(s.layers, layer)
		if err := gs.CreateNIC(nic, layer); err != nil {
			gs.Close()
			return nil, wrapf("link %d: create NIC: %s", i, err)
		}
		for _, p := range l.Addrs {
			proto := header.IPv4ProtocolNumber
			if p.Addr().Is6() && !p.Addr().Is4In6() {
				proto = header.IPv6ProtocolNumber
			}
			a := p.Addr().Unmap()
			pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.AsSlice()), PrefixLen: p.Bits()}}
			if err := gs.AddProtocolAddress(nic, pa, gvstack.AddressProperties{}); err != nil {
				gs.Close()
				return nil, wrapf("link %d: address %s: %s", i, p, err)
			}
			routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: nic})
			// A default route per link and family, in link order: the
			// first link's is used unless a subflow is bound to another
			// link's address.
			empty := header.IPv4EmptySubnet
			if a.Is6() {
				empty = header.IPv6EmptySubnet
			}
			defaults = append(defaults, tcpip.Route{Destination: empty, NIC: nic})
		}
	}
	gs.SetRouteTable(append(routes, defaults...))
	if a, ok := s.pmh.(pm.Attacher); ok {
		if err := a.Attach(stackHost{s}); err != nil {
			s.Close()
			return nil, wrapf("path manager: %v", err)
		}
	}
	return s, nil
}

// defaultSubflowTimeout: see Config.SubflowTimeout.
const defaultSubflowTimeout = 15 * time.Second

// PathManager returns the built-in path manager, through which endpoints
// and limits change at run time (nil when Config.PathManager replaced it).
func (s *Stack) PathManager() *pm.Manager { return s.builtin }

func (s *Stack) bindMeta(m *subflow.Meta, c *Conn) {
	s.mu.Lock()
	s.metas[m] = c
	s.mu.Unlock()
}

func (s *Stack) unbindMeta(m *subflow.Meta) {
	s.mu.Lock()
	delete(s.metas, m)
	s.mu.Unlock()
}

// tuneTCP turns on what a fast subflow needs: SACK (which also makes pure
// ACKs that carry only a new DATA_ACK harmless to the peer's loss
// detection), CUBIC with HyStart (as Linux: it leaves slow start before the
// overshoot that gVisor's Reno recovers from only by timeouts), and a
// receive buffer of twice the connection's: gVisor advertises about half
// its buffer, and that window is the data-level window the peer sees
// (§3.3.4), so it must cover the connection's reassembly ring. With
// gVisor's auto-tuned 1 MiB a subflow's window covered only the fast path's
// flight, and a slow path never got data (head-of-line blocking at the
// data level). The buffer is a limit, not an allocation.
func tuneTCP(gs *gvstack.Stack, connRcvBuf int) error {
	sack := tcpip.TCPSACKEnabled(true)
	rcvMax := max(2*connRcvBuf, 1<<20)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: rcvMax, Max: rcvMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	cc := tcpip.CongestionControlOption("cubic")
	for _, o := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &cc} {
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return wrapf("tcp option %T: %s", o, err)
		}
	}
	return nil
}

// Close resets every connection of the stack, closes its listeners and
// releases the stack. Close connections first for a graceful end.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	lns := make([]*Listener, 0, len(s.lns))
	for l := range s.lns {
		lns = append(lns, l)
	}
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, l := range lns {
		l.Close()
	}
	for _, c := range conns {
		c.abort()
	}
	for _, l := range s.layers {
		l.Detach()
	}
	s.gs.Close()
	s.gs.Wait()
	return nil
}

func (s *Stack) track(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Stack) untrack(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Netstack returns the underlying gVisor stack, for plain TCP or UDP next to
// MPTCP (benchmarks use it for the gVisor TCP baseline).
func (s *Stack) Netstack() *gvstack.Stack { return s.gs }

func toFull(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := header.IPv4ProtocolNumber
	if a.Is6() {
		proto = header.IPv6ProtocolNumber
	}
	var addr tcpip.Address
	if a.IsValid() && !a.IsUnspecified() {
		addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return tcpip.FullAddress{Addr: addr, Port: ap.Port()}, proto
}

func fromFull(f tcpip.FullAddress) netip.AddrPort {
	a, _ := netip.AddrFromSlice(f.Addr.AsSlice())
	return netip.AddrPortFrom(a.Unmap(), f.Port)
}

// MIB returns the stack's MPTCP counters by their Linux names
// (MPTcpExtAddAddr, MPTcpExtMPJoinSynRx, ...), as `nstat` prints the
// kernel's.
func (s *Stack) MIB() map[string]uint64 { return s.reg.MIB().Snapshot() }
