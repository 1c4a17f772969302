package stack

import (
	"fmt"
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

// waitFullyEstablished waits until the peer surely knows our key (its first
// DSS arrived on the initial subflow; a server that has not processed our
// third ACK yet would refuse joins and ignore announcements), or a second
// if it sends nothing. It reports false if the connection closed.
func (c *Conn) waitFullyEstablished() bool {
	deadline := time.Now().Add(time.Second)
	for !c.first.sf.FullyEstablished() && time.Now().Before(deadline) {
		select {
		case <-c.closing:
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// join opens one additional subflow from our address local (ID localID)
// to remote, on local's link, and reports the outcome to the path manager:
// SubflowEstablished (from addPath) or SubflowClosed.
func (c *Conn) join(local netip.Addr, localID uint8, remote netip.AddrPort, backup bool) {
	err := c.tryJoin(local, localID, remote, backup)
	if err != nil {
		c.emit(pm.Event{Kind: pm.SubflowClosed, Local: netip.AddrPortFrom(local, 0), Remote: remote, LocalID: localID, Backup: backup, Err: err})
	}
}

func (c *Conn) tryJoin(local netip.Addr, localID uint8, remote netip.AddrPort, backup bool) (err error) {
	full, proto := toFull(remote)
	var wq waiter.Queue
	ep, terr := c.s.gs.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return wrapf("join: new endpoint: %s", terr)
	}
	var sf *subflow.Subflow
	defer func() {
		if err != nil {
			ep.Abort()
			ep.Close()
			if sf != nil {
				sf.Close()
			}
		}
	}()
	if nic, found := c.s.nicOf[local]; found {
		// Keep the subflow on its own link even where routes would pick
		// another one for the peer's address.
		ep.SocketOptions().SetBindToDevice(int32(nic))
	}
	localFull, _ := toFull(netip.AddrPortFrom(local, 0))
	if terr := ep.Bind(localFull); terr != nil {
		return wrapf("join: bind %s: %s", local, terr)
	}
	bound, terr := ep.GetLocalAddress()
	if terr != nil {
		return wrapf("join: %s", terr)
	}
	sf, err = c.s.reg.Join(c.meta, netip.AddrPortFrom(local, bound.Port), remote, localID, backup)
	if err != nil {
		return wrapf("join: %w", err)
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
	switch terr.(type) {
	case nil:
	case *tcpip.ErrConnectionRefused, *tcpip.ErrConnectionReset:
		// The peer answered with a reset: it does not take this join.
		why := "reset"
		if r, ok := sf.PeerResetReason(); ok {
			why = fmt.Sprintf("reset, MP_TCPRST reason %d", r)
		}
		return fmt.Errorf("umptcp: join %s -> %s: %w (%s)", local, remote, pm.ErrJoinRejected, why)
	default:
		return wrapf("join %s -> %s: %s", local, remote, terr)
	}
	if tcp.EndpointState(ep.State()) != tcp.StateEstablished {
		return wrapf("join %s -> %s: no answer within %v", local, remote, joinTimeout)
	}
	select {
	case <-sf.Ready():
	case <-timeout.C:
		return wrapf("join %s -> %s: the peer did not acknowledge the third ACK", local, remote)
	case <-c.closing:
		return wrapf("join %s -> %s: connection closed", local, remote)
	}
	if failed, why := sf.Failed(); failed {
		return fmt.Errorf("umptcp: join %s -> %s: %w (%s)", local, remote, pm.ErrJoinRejected, why)
	}
	c.first.sf.MarkFullyEstablished()
	if !c.addPath(sf, ep, &wq) {
		return wrapf("join %s -> %s: connection closed", local, remote)
	}
	return nil
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
	again := false
	t := sf.Tuple()
	for _, q := range c.paths {
		again = again || (q.ended.Load() && q.local.Addr() == t.Local.Addr() && q.remote == t.Remote)
	}
	p := c.newPathLocked(sf, ep, wq)
	c.pmu.Unlock()
	if again {
		c.s.reg.MIB().Inc(subflow.SubflowRecreate)
	}
	sf.Adopt()
	c.startPath(p)
	c.emit(p.event(pm.SubflowEstablished, nil))
	return true
}
