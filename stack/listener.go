package stack

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Listener accepts MPTCP connections, and plain TCP ones from peers that do
// not offer MPTCP. It is a net.Listener.
type Listener struct {
	s      *Stack
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	port   uint16
	addr   net.Addr
	cancel chan struct{}
	once   sync.Once

	conns     chan *Conn // established, not yet accepted
	loopDone  chan struct{}
	joinsOnly atomic.Bool
}

// acceptQueue is how many established connections wait for Accept.
const acceptQueue = 128

var _ net.Listener = (*Listener)(nil)

// Listen listens on address (":port" or "ip:port"). With no IP (or an
// unspecified one) and network "tcp", both IPv4 and IPv6 are accepted.
func (s *Stack) Listen(network, address string) (*Listener, error) {
	ap, err := parseAddr(network, address, true)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	full, proto := toFull(ap)
	var wq waiter.Queue
	ep, terr := s.gs.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: wrapf("new endpoint: %s", terr)}
	}
	if proto == header.IPv6ProtocolNumber {
		ep.SocketOptions().SetV6Only(network == "tcp6")
	}
	ep.SocketOptions().SetReuseAddress(true)
	fail := func(what string, terr tcpip.Error) (*Listener, error) {
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: wrapf("%s: %s", what, terr)}
	}
	if terr := ep.Bind(full); terr != nil {
		return fail("bind", terr)
	}
	if terr := ep.Listen(128); terr != nil {
		return fail("listen", terr)
	}
	local, _ := ep.GetLocalAddress()
	l := &Listener{s: s, ep: ep, wq: &wq, port: local.Port, cancel: make(chan struct{}),
		addr: net.TCPAddrFromAddrPort(fromFull(local)), conns: make(chan *Conn, acceptQueue), loopDone: make(chan struct{})}
	s.reg.Listen(l.port)
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		l.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.ErrClosed}
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	go l.acceptLoop()
	return l, nil
}

// Accept waits for the next connection; it returns a *Conn.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptConn() }

// AcceptConn is Accept with the concrete type.
func (l *Listener) AcceptConn() (*Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.cancel:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// acceptLoop takes every completed handshake from gVisor: new connections
// go to the accept queue, joins (MP_JOIN subflows) to their connection,
// even while the application is not calling Accept.
func (l *Listener) acceptLoop() {
	defer close(l.loopDone)
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		ep, wq, terr := l.ep.Accept(nil)
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-l.cancel:
				return
			case <-notify:
			}
			continue
		}
		if terr != nil {
			return // the listener is closed
		}
		l.dispatch(ep, wq)
	}
}

func (l *Listener) dispatch(ep tcpip.Endpoint, wq *waiter.Queue) {
	local, _ := ep.GetLocalAddress()
	remote, _ := ep.GetRemoteAddress()
	t := subflow.Tuple{Local: fromFull(local), Remote: fromFull(remote)}
	sf := l.s.reg.Lookup(t)
	if sf != nil && sf.IsJoin() {
		l.s.attachJoin(sf, ep, wq)
		return
	}
	if l.joinsOnly.Load() {
		if sf != nil {
			l.s.reg.MIB().Inc(subflow.MismatchPortSynRx)
			sf.Close()
		}
		ep.Abort()
		ep.Close()
		return
	}
	c := newConn(l.s, subflow.Server, ep, wq, sf)
	if !l.s.track(c) {
		c.abort()
		return
	}
	c.start()
	select {
	case l.conns <- c:
	default:
		c.abort() // the accept queue is full, as a full backlog
	}
}

// JoinsOnly stops accepting new connections (they are reset) while joins
// (MP_JOIN subflows) to the connections already accepted are still taken:
// for a server that serves a fixed set of connections. Close ends both.
func (l *Listener) JoinsOnly() {
	l.joinsOnly.Store(true)
	l.s.reg.JoinsOnly(l.port)
}

// Close stops listening. Accepted connections are not affected.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.s.reg.Unlisten(l.port)
		close(l.cancel)
		l.ep.Close()
		<-l.loopDone
		for done := false; !done; {
			select {
			case c := <-l.conns:
				c.abort() // never accepted
			default:
				done = true
			}
		}
		l.s.mu.Lock()
		delete(l.s.lns, l)
		l.s.mu.Unlock()
	})
	return nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
