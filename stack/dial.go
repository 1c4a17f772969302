package stack

import (
	"context"
	"net"
	"net/netip"

	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Dial connects to address ("ip:port"; network "tcp", "tcp4" or "tcp6")
// and offers MPTCP. If the peer does not answer with MP_CAPABLE the
// connection is plain TCP (see Conn.MultipathTCP).
func (s *Stack) Dial(network, address string) (*Conn, error) {
	return s.DialContext(context.Background(), network, address)
}

// DialContext is Dial with a context that bounds the connection attempt.
func (s *Stack) DialContext(ctx context.Context, network, address string) (*Conn, error) {
	remote, err := parseAddr(network, address, false)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	full, proto := toFull(remote)
	var wq waiter.Queue
	ep, terr := s.gs.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: wrapf("new endpoint: %s", terr)}
	}
	fail := func(err error) (*Conn, error) {
		ep.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(remote), Err: err}
	}
	// Bind first so the subflow is known by port before its SYN leaves.
	if terr := ep.Bind(tcpip.FullAddress{}); terr != nil {
		return fail(wrapf("bind: %s", terr))
	}
	local, terr := ep.GetLocalAddress()
	if terr != nil {
		return fail(wrapf("local address: %s", terr))
	}
	sf, err := s.reg.Dial(local.Port, remote)
	if err != nil {
		return fail(err)
	}

	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	terr = ep.Connect(full)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			wq.EventUnregister(&entry)
			sf.Close()
			return fail(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	wq.EventUnregister(&entry)
	if terr != nil {
		sf.Close()
		return fail(wrapf("connect: %s", terr))
	}
	select {
	case <-sf.Established():
	default:
		// The SYN-ACK gVisor accepted had no MP_CAPABLE we could read.
		sf.Fallback("handshake completed without MP_CAPABLE")
	}
	c := newConn(s, subflow.Client, ep, &wq, sf)
	if !s.track(c) {
		c.abort()
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.ErrClosed}
	}
	c.start()
	return c, nil
}

// parseAddr parses "ip:port" (or ":port" when listening) for network.
func parseAddr(network, address string, listen bool) (netip.AddrPort, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return netip.AddrPort{}, wrapf("unsupported network %q", network)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	pn, err := net.LookupPort("tcp", port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var a netip.Addr
	switch {
	case host == "" && listen:
		if network == "tcp4" {
			a = netip.IPv4Unspecified()
		} else {
			a = netip.IPv6Unspecified()
		}
	case host == "localhost":
		return netip.AddrPort{}, wrapf("the userspace stack has no loopback; use an address of one of its links")
	default:
		a, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, wrapf("%q is not an IP address (the stack does not resolve names)", host)
		}
		a = a.Unmap()
	}
	if network == "tcp4" && !a.Is4() || network == "tcp6" && a.Is4() {
		return netip.AddrPort{}, wrapf("address %s does not match network %s", a, network)
	}
	if !listen && (a.IsUnspecified() || pn == 0) {
		return netip.AddrPort{}, wrapf("cannot dial %s", address)
	}
	return netip.AddrPortFrom(a, uint16(pn)), nil
}
