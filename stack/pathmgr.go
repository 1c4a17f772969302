package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/subflow"
)

// The path manager sees each connection through pm.Conn (pmConn below) and
// gets its events (pm.Event) in order on a goroutine of the connection's,
// started only while events are pending, so that an idle connection costs
// nothing. What the protocol itself prescribes happens here, whatever path
// manager runs: the ADD_ADDR echo (in the option layer), retransmitting
// our announcements until echoed, and closing the subflows of an address
// the peer removed.

// addAddrRTO is the first retransmission interval of an ADD_ADDR the peer
// has not echoed; it doubles each time, for maxAddAddrTries sends (Linux
// waits add_addr_timeout, 2 minutes, and sends at most 4).
const (
	addAddrRTO      = time.Second
	maxAddAddrTries = 5
)

// connEvent is an event for the path manager, or a peer's signal that is
// first acted on here (on the event goroutine, never the packet path).
type connEvent struct {
	ev  pm.Event
	sig *subflow.Signal
}

// announcement is one of our addresses announced on the connection.
type announcement struct {
	addr   netip.AddrPort
	tries  int
	echoed bool
	timer  *time.Timer
}

// pmConn is a connection as its path manager sees it.
type pmConn struct{ c *Conn }

var _ pm.Conn = (*pmConn)(nil)

// PathManager returns the connection's path-manager interface: announce
// and remove addresses, create and destroy subflows, change priorities, as
// Linux's userspace path manager does over netlink.
func (c *Conn) PathManager() pm.Conn { return c.pmc }

// emit queues an event for the path manager.
func (c *Conn) emit(e pm.Event) { c.queueEvent(connEvent{ev: e}) }

// maxQueuedSignals bounds the peer's signals waiting for the path manager
// on one connection. Our own events (subflows opened and closed) are
// bounded by the subflows and always queue.
const maxQueuedSignals = 256

func (c *Conn) countDroppedSignal(s *subflow.Signal) {
	mib := c.s.reg.MIB()
	switch s.Kind {
	case subflow.PeerAnnounced:
		mib.Inc(subflow.AddAddrDrop)
	case subflow.PeerRemoved:
		mib.Inc(subflow.RmAddrDrop)
	default:
		mib.Inc(subflow.SignalDrop)
	}
}

func (c *Conn) queueEvent(e connEvent) {
	if c.pmc == nil { // plain TCP: no path manager
		return
	}
	c.evMu.Lock()
	if c.evClosed {
		c.evMu.Unlock()
		return
	}
	if e.sig != nil && len(c.evQ)+len(c.evHeld) >= maxQueuedSignals {
		// A storm of the peer's signals (REMOVE_ADDR and MP_PRIO need no
		// HMAC) faster than the path manager takes them: what does not
		// fit is dropped and counted, as Linux drops what its PM cannot
		// take, so a remote party cannot grow the queue without bound.
		c.evMu.Unlock()
		c.countDroppedSignal(e.sig)
		return
	}
	switch {
	case e.sig == nil && e.ev.Kind == pm.Closed:
		c.evClosed = true
	case e.sig == nil && e.ev.Kind == pm.Established:
		// What the peer signalled before we saw the connection fully
		// established follows the Established event, as in Linux.
		c.evEstablished = true
		c.evQ = append(c.evQ, e)
		c.evQ = append(c.evQ, c.evHeld...)
		c.evHeld = nil
		e = connEvent{}
	case e.sig != nil && !c.evEstablished:
		c.evHeld = append(c.evHeld, e)
		c.evMu.Unlock()
		return
	}
	if e != (connEvent{}) {
		c.evQ = append(c.evQ, e)
	}
	if c.evRunning {
		c.evMu.Unlock()
		return
	}
	c.evRunning = true
	c.evMu.Unlock()
	go c.drainEvents()
}

func (c *Conn) drainEvents() {
	for {
		c.evMu.Lock()
		if len(c.evQ) == 0 {
			c.evRunning = false
			c.evQ = nil
			c.evMu.Unlock()
			return
		}
		e := c.evQ[0]
		c.evQ = c.evQ[1:]
		c.evMu.Unlock()
		if e.sig != nil {
			ev, ok := c.onSignal(e.sig)
			if !ok {
				continue
			}
			e.ev = ev
		}
		c.s.pmh.HandleEvent(c.pmc, e.ev)
	}
}

// onSignal acts on a peer's signal and turns it into the path manager's
// event.
func (c *Conn) onSignal(s *subflow.Signal) (pm.Event, bool) {
	switch s.Kind {
	case subflow.PeerAnnounced:
		return pm.Event{Kind: pm.Announced, Remote: s.Addr, RemoteID: s.ID}, true
	case subflow.PeerEchoed:
		c.annMu.Lock()
		if a := c.ann[s.ID]; a != nil && !a.echoed {
			a.echoed = true
			if a.timer != nil {
				a.timer.Stop()
			}
		}
		c.annMu.Unlock()
		return pm.Event{}, false
	case subflow.PeerRemoved:
		// §3.4.2: the subflows using a removed address are closed, by
		// the protocol, whatever the path manager thinks; it learns of
		// each removal.
		for _, id := range s.IDs {
			c.dropPaths(func(p *path) bool { _, r := p.sf.AddrIDs(); return r == id }, "the peer removed its address")
			c.s.pmh.HandleEvent(c.pmc, pm.Event{Kind: pm.Removed, RemoteID: id}) // one event per ID, in order
		}
		return pm.Event{}, false
	case subflow.PeerPriority:
		if p := c.pathOf(s.Subflow); p != nil {
			return p.event(pm.PriorityChanged, nil), true
		}
	}
	return pm.Event{}, false
}

func (c *Conn) pathOf(sf *subflow.Subflow) *path {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for _, p := range c.paths {
		if p.sf == sf {
			return p
		}
	}
	return nil
}

// event describes p for the path manager.
func (p *path) event(k pm.EventKind, err error) pm.Event {
	e := pm.Event{Kind: k, Local: p.local, Remote: p.remote, Err: err}
	if p.sf != nil {
		e.LocalID, e.RemoteID = p.sf.AddrIDs()
		e.Backup = p.sf.Backup()
	}
	return e
}

// dropPaths resets the live subflows that match (RST with MP_TCPRST);
// their unacknowledged data goes out on the others. It returns how many.
// An address removal never takes a connection's last subflow: with nothing
// left to carry data or the next join's token the connection would only
// die, which a REMOVE_ADDR does not ask for (Linux keeps such a
// connection too); the path manager may still destroy it explicitly.
//
// What survives is counted when the removal is decided, under pmu, and a
// subflow being reset (closeWhy set) no longer counts: its reader notices
// the reset (and sets ended) only later, so a REMOVE_ADDR naming every
// address, one ID after the other, would otherwise find "another" subflow
// each time and leave none.
func (c *Conn) dropPaths(match func(p *path) bool, why string) int {
	c.pmu.Lock()
	others := 0
	var drop []*path
	for _, p := range c.paths {
		if p.ended.Load() || p.sf == nil || p.closeWhy.Load() != nil {
			continue
		}
		if match(p) {
			drop = append(drop, p)
		} else {
			others++
		}
	}
	if others == 0 {
		c.pmu.Unlock()
		if len(drop) > 0 {
			c.s.pmLog("not closing the last subflow although %s", why)
		}
		return 0
	}
	for _, p := range drop {
		p.onPurpose.Store(true)
		p.closeWhy.Store(&why)
	}
	c.pmu.Unlock()
	for _, p := range drop {
		c.s.reg.MIB().Inc(subflow.RmSubflow)
		p.ep.Abort()
	}
	return len(drop)
}

// startPM hands the connection to the path manager: Created, then
// Established once the peer surely knows our key.
func (c *Conn) startPM() {
	c.pmc = &pmConn{c: c}
	c.meta.SetSignalFunc(func(s subflow.Signal) { c.queueEvent(connEvent{sig: &s}) })
	c.emit(c.first.event(pm.Created, nil))
	if c.role == subflow.Server { // the third ACK brought the keys
		c.emit(c.first.event(pm.Established, nil))
		return
	}
	go func() {
		if c.waitFullyEstablished() {
			c.emit(c.first.event(pm.Established, nil))
		}
	}()
}

// stopPM ends the announcements and tells the path manager the connection
// is gone.
func (c *Conn) stopPM(err error) {
	c.annMu.Lock()
	for _, a := range c.ann {
		if a.timer != nil {
			a.timer.Stop()
		}
	}
	c.annMu.Unlock()
	c.emit(pm.Event{Kind: pm.Closed, Local: c.first.local, Remote: c.first.remote, Err: err})
}

var errConnGone = errors.New("umptcp: the connection is closed")

func (pc *pmConn) live() error {
	c := pc.c
	select {
	case <-c.closing:
		return errConnGone
	default:
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.pathsClosed {
		return errConnGone
	}
	return nil
}

func (pc *pmConn) Token() uint32 { return pc.c.meta.LocalToken() }

func (pc *pmConn) Server() bool { return pc.c.role == subflow.Server }

func (pc *pmConn) Initial() (local, remote netip.AddrPort) {
	return pc.c.first.local, pc.c.first.remote
}

// anyPath returns a live subflow to carry a signal, preferring one that
// does not match avoid.
func (c *Conn) anyPath(avoid func(p *path) bool) *path {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	var fallback *path
	for _, p := range c.paths {
		if p.ended.Load() || p.sf == nil || p.isStale.Load() {
			continue
		}
		if avoid != nil && avoid(p) {
			if fallback == nil {
				fallback = p
			}
			continue
		}
		return p
	}
	return fallback
}

func (pc *pmConn) Announce(id uint8, addr netip.AddrPort) error {
	if err := pc.live(); err != nil {
		return err
	}
	c := pc.c
	c.annMu.Lock()
	if c.ann == nil {
		c.ann = make(map[uint8]*announcement)
	}
	if a := c.ann[id]; a != nil && a.timer != nil {
		a.timer.Stop()
	}
	a := &announcement{addr: addr}
	c.ann[id] = a
	c.annMu.Unlock()
	if !c.sendAnnouncement(id, a) {
		return fmt.Errorf("umptcp: announce %s: no subflow can carry ADD_ADDR", addr)
	}
	return nil
}

// sendAnnouncement sends ADD_ADDR and arms its retransmission.
func (c *Conn) sendAnnouncement(id uint8, a *announcement) bool {
	p := c.anyPath(nil)
	sent := p != nil && p.sf.SendAddAddr(id, a.addr)
	c.annMu.Lock()
	defer c.annMu.Unlock()
	if c.ann[id] != a || a.echoed {
		return sent
	}
	a.tries++
	if a.tries < maxAddAddrTries {
		a.timer = time.AfterFunc(addAddrRTO<<(a.tries-1), func() {
			c.annMu.Lock()
			again := c.ann[id] == a && !a.echoed
			c.annMu.Unlock()
			if again && c.pmc.live() == nil {
				c.sendAnnouncement(id, a)
			}
		})
	}
	return sent
}

func (pc *pmConn) Remove(id uint8) error {
	if err := pc.live(); err != nil {
		return err
	}
	c := pc.c
	c.annMu.Lock()
	if a := c.ann[id]; a != nil {
		if a.timer != nil {
			a.timer.Stop()
		}
		delete(c.ann, id)
	}
	c.annMu.Unlock()
	uses := func(p *path) bool { l, _ := p.sf.AddrIDs(); return l == id }
	// The signal goes first, on a subflow that stays if there is one.
	p := c.anyPath(uses)
	if p == nil || !p.sf.SendRemoveAddr([]uint8{id}) {
		return fmt.Errorf("umptcp: remove address %d: no subflow can carry REMOVE_ADDR", id)
	}
	c.dropPaths(uses, "we removed the address")
	return nil
}

func (pc *pmConn) CreateSubflow(local netip.AddrPort, localID uint8, remote netip.AddrPort, backup bool) error {
	if err := pc.live(); err != nil {
		return err
	}
	c := pc.c
	if local.Port() != 0 {
		return errors.New("umptcp: create subflow: a local port cannot be chosen")
	}
	if _, ok := c.s.nicOf[local.Addr()]; !ok {
		return fmt.Errorf("umptcp: create subflow: %s is not an address of this stack", local.Addr())
	}
	if local.Addr().Is4() != remote.Addr().Is4() {
		return fmt.Errorf("umptcp: create subflow: %s and %s are of different families", local.Addr(), remote.Addr())
	}
	go func() {
		if c.role == subflow.Client && !c.waitFullyEstablished() {
			return
		}
		c.join(local.Addr(), localID, remote, backup)
	}()
	return nil
}

func (pc *pmConn) find(local, remote netip.AddrPort) *path {
	c := pc.c
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for _, p := range c.paths {
		if p.ended.Load() || p.sf == nil || p.remote != remote {
			continue
		}
		if p.local == local || (local.Port() == 0 && p.local.Addr() == local.Addr()) {
			return p
		}
	}
	return nil
}

func (pc *pmConn) DestroySubflow(local, remote netip.AddrPort) error {
	if err := pc.live(); err != nil {
		return err
	}
	p := pc.find(local, remote)
	if p == nil {
		return fmt.Errorf("umptcp: no subflow %s -> %s", local, remote)
	}
	why := "destroyed by the path manager"
	p.onPurpose.Store(true)
	p.closeWhy.Store(&why)
	p.ep.Abort()
	return nil
}

func (pc *pmConn) SetBackup(local, remote netip.AddrPort, backup bool) error {
	if err := pc.live(); err != nil {
		return err
	}
	p := pc.find(local, remote)
	if p == nil {
		return fmt.Errorf("umptcp: no subflow %s -> %s", local, remote)
	}
	p.sf.SetBackup(backup)
	pc.c.poke()
	return nil
}

func (pc *pmConn) Subflows() []pm.SubflowInfo {
	c := pc.c
	c.pmu.Lock()
	paths := append([]*path(nil), c.paths...)
	c.pmu.Unlock()
	var out []pm.SubflowInfo
	for _, p := range paths {
		if p.ended.Load() || p.sf == nil {
			continue
		}
		l, r := p.sf.AddrIDs()
		out = append(out, pm.SubflowInfo{Local: p.local, Remote: p.remote, LocalID: l, RemoteID: r, Backup: p.sf.Backup(), Initial: p == c.first})
	}
	return out
}

// stackHost is what the stack offers its path manager.
type stackHost struct{ s *Stack }

var _ pm.Host = stackHost{}

func (h stackHost) ListenJoins(addr netip.AddrPort) error {
	s := h.s
	s.mu.Lock()
	if s.joinLns[addr] != nil {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	l, err := s.Listen("tcp", addr.String())
	if err != nil {
		return err
	}
	l.JoinsOnly()
	s.mu.Lock()
	s.joinLns[addr] = l
	s.mu.Unlock()
	return nil
}

func (h stackHost) UnlistenJoins(addr netip.AddrPort) {
	s := h.s
	s.mu.Lock()
	l := s.joinLns[addr]
	delete(s.joinLns, addr)
	s.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

func (h stackHost) SetAddrID(a netip.Addr, id uint8) { h.s.reg.SetAddrID(a, id) }

func (h stackHost) SetMaxSubflows(n int) { h.s.reg.SetMaxSubflows(n + 1) }

func (h stackHost) Route(remote netip.Addr) (netip.Addr, bool) {
	for _, p := range h.s.prefixes {
		if p.Contains(remote) {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func (h stackHost) Log(format string, args ...any) { h.s.pmLog(format, args...) }

func (s *Stack) pmLog(format string, args ...any) {
	if s.logf != nil {
		s.logf("pm: "+format, args...)
	}
}

// pmState is the path-manager part of a Conn.
type pmState struct {
	pmc       *pmConn
	evMu      sync.Mutex
	evQ       []connEvent
	evRunning bool
	evClosed  bool
	// Signals wait in evHeld until Established is queued.
	evEstablished bool
	evHeld        []connEvent
	annMu         sync.Mutex
	ann           map[uint8]*announcement
}
