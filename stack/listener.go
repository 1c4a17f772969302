package stack

import (
	"net"
	"net/netip"
	"sync"

	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
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
}

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
		addr: net.TCPAddrFromAddrPort(fromFull(local))}
	s.reg.Listen(l.port)
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		l.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.ErrClosed}
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	return l, nil
}

// Accept waits for the next connection; it returns a *Conn.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptConn() }

// AcceptConn is Accept with the concrete type.
func (l *Listener) AcceptConn() (*Conn, error) {
	ep, wq, terr := l.ep.Accept(nil)
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
		l.wq.EventRegister(&entry)
		for {
			ep, wq, terr = l.ep.Accept(nil)
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				break
			}
			select {
			case <-l.cancel:
				l.wq.EventUnregister(&entry)
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
			case <-notify:
			}
		}
		l.wq.EventUnregister(&entry)
	}
	if terr != nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: wrapf("%s", terr)}
	}
	tc := gonet.NewTCPConn(wq, ep)
	local := tc.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := tc.RemoteAddr().(*net.TCPAddr).AddrPort()
	t := subflow.Tuple{Local: unmapAP(local), Remote: unmapAP(remote)}
	sf := l.s.reg.Lookup(t)
	c := newConn(l.s, tc, ep, sf)
	if !l.s.track(c) {
		c.abort()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	c.start()
	return c, nil
}

// Close stops listening. Accepted connections are not affected.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.s.reg.Unlisten(l.port)
		close(l.cancel)
		l.ep.Close()
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
