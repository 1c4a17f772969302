package stack

import (
	"net/netip"
	"time"

	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// joinTimeout bounds the MP_JOIN handshake of one additional subflow.
const joinTimeout = 10 * time.Second

// openSubflows opens the additional subflows the path manager asks for,
// once the peer surely knows our key (its first DSS arrived; a server that
// has not processed our third ACK yet would refuse the joins), or after a
// second if it sends nothing.
func (c *Conn) openSubflows() {
	eps := c.s.pm.SubflowsFor(c.first.local.Addr(), c.first.remote.Addr())
	if len(eps) == 0 {
		return
	}
	deadline := time.Now().Add(time.Second)
	for !c.first.sf.FullyEstablished() && time.Now().Before(deadline) {
		select {
		case <-c.closing:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, e := range eps {
		go c.join(e)
	}
}

// join opens one additional subflow from endpoint e to the peer's address
// of the initial subflow, on e's link.
func (c *Conn) join(e pm.Endpoint) {
	remote := c.first.remote
	full, proto := toFull(remote)
	var wq waiter.Queue
	ep, terr := c.s.gs.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return
	}
	ok := false
	var sf *subflow.Subflow
	defer func() {
		if !ok {
			ep.Abort()
			ep.Close()
			if sf != nil {
				sf.Close()
			}
		}
	}()
	if nic, found := c.s.nicOf[e.Addr]; found {
		// Keep the subflow on its own link even where routes would pick
		// another one for the peer's address.
		ep.SocketOptions().SetBindToDevice(int32(nic))
	}
	localFull, _ := toFull(netip.AddrPortFrom(e.Addr, 0))
	if ep.Bind(localFull) != nil {
		return
	}
	bound, terr := ep.GetLocalAddress()
	if terr != nil {
		return
	}
	var err error
	sf, err = c.s.reg.Join(c.meta, netip.AddrPortFrom(e.Addr, bound.Port), remote, e.Flags&pm.Backup != 0)
	if err != nil {
		return
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	terr = ep.Connect(full)
	timeout := time.NewTimer(joinTimeout)
	defer timeout.Stop()
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-notify:
		case <-timeout.C:
		case <-c.closing:
		}
		terr = ep.LastError()
	}
	wq.EventUnregister(&entry)
	if terr != nil || tcp.EndpointState(ep.State()) != tcp.StateEstablished {
		return
	}
	select {
	case <-sf.Ready():
	case <-timeout.C:
		return
	case <-c.closing:
		return
	}
	if failed, _ := sf.Failed(); failed {
		return
	}
	c.first.sf.MarkFullyEstablished()
	ok = c.addPath(sf, ep, &wq)
}

// attachJoin gives a server subflow that joined a connection to it.
func (s *Stack) attachJoin(sf *subflow.Subflow, ep tcpip.Endpoint, wq *waiter.Queue) {
	s.mu.Lock()
	c := s.metas[sf.Meta()]
	s.mu.Unlock()
	if c == nil || !c.addPath(sf, ep, wq) {
		sf.Close()
		ep.Abort()
		ep.Close()
	}
}

// addPath adds an established subflow to the connection and starts it.
func (c *Conn) addPath(sf *subflow.Subflow, ep tcpip.Endpoint, wq *waiter.Queue) bool {
	c.pmu.Lock()
	if c.pathsClosed {
		c.pmu.Unlock()
		return false
	}
	p := c.newPathLocked(sf, ep, wq)
	c.pmu.Unlock()
	sf.Adopt()
	c.startPath(p)
	return true
}
