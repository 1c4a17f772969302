package stack

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/umptcp/umptcp/internal/reasm"
	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn is one connection: MPTCP over one or more subflows, or plain TCP
// after fallback. It is a net.Conn; CloseWrite half-closes (DATA_FIN),
// MultipathTCP and Stats tell what the connection is doing.
//
// The application's bytes go into a send buffer indexed by DSN; one sender
// goroutine hands them to subflows as the scheduler decides and keeps them
// until the peer's DATA_ACK covers them, so that another subflow can send
// them again. Each subflow has a reader goroutine that puts what arrives
// into the receive buffer at its DSN (data-level reassembly).
//
// Lock order: wmu, then rmu, then pmu; none is held while calling into
// gVisor (which may call back into the subflow layer on the same goroutine).
type Conn struct {
	s    *Stack
	meta *subflow.Meta // nil on a plain-TCP connection
	role subflow.Role

	mptcp         bool
	fallbackWhy   string
	first         *path        // the initial subflow; the only one without MPTCP
	local, remote *net.TCPAddr // kept: gVisor forgets them once the endpoint closes

	// subflows, guarded by pmu
	pmu         sync.Mutex
	paths       []*path
	nextID      int
	pathsClosed bool // the connection is being torn down: no new subflows
	reinjected  uint64

	// receive side, guarded by rmu
	rmu       sync.Mutex
	rcond     sync.Cond
	ring      *reasm.Ring // allocated with the first data
	eof       bool        // the peer's DATA_FIN was reached
	rerr      error       // terminal receive error
	rclosed   bool        // Close was called: data is discarded
	rdeadline time.Time
	rtimer    *time.Timer
	bytesRecv uint64

	// send side, guarded by wmu
	wmu       sync.Mutex
	wcond     sync.Cond
	sbuf      sendBuf
	wclosed   bool
	werr      error // terminal send error
	wdeadline time.Time
	wtimer    *time.Timer
	bytesSent uint64
	sched     scheduler.Scheduler // replaced by SetScheduler; read by the sender

	wake       chan struct{} // pokes the sender goroutine
	closing    chan struct{} // closed by Close
	closeOnce  sync.Once
	aborted    chan struct{} // closed when the stack resets the connection
	abortOnce  sync.Once
	readerDone chan struct{} // plain TCP: nothing to read for us
	done       chan struct{} // closed when the connection is gone

	pmState // events for the path manager, our announcements
}

var _ net.Conn = (*Conn)(nil)

// newConn makes the connection of an established initial subflow.
func newConn(s *Stack, role subflow.Role, ep tcpip.Endpoint, wq *waiter.Queue, sf *subflow.Subflow) *Conn {
	c := &Conn{s: s, role: role, wake: make(chan struct{}, 1), closing: make(chan struct{}), aborted: make(chan struct{}),
		readerDone: make(chan struct{}), done: make(chan struct{})}
	c.rcond.L = &c.rmu
	c.wcond.L = &c.wmu
	switch {
	case sf == nil:
		c.fallbackWhy = "peer did not offer MPTCP"
	default:
		c.mptcp, c.fallbackWhy = sf.MPTCP()
		sf.Adopt()
	}
	if !c.mptcp && sf != nil {
		sf.Close() // plain TCP: the layer can forget the tuple
		sf = nil
	}
	c.first = c.newPathLocked(sf, ep, wq)
	c.local = net.TCPAddrFromAddrPort(c.first.local)
	c.remote = net.TCPAddrFromAddrPort(c.first.remote)
	if c.mptcp {
		c.meta = sf.Meta()
		c.sbuf = newSendBuf(c.meta.LocalIDSN()+1, s.sndBuf)
		c.sched = s.newScheduler()
		c.s.bindMeta(c.meta, c)
		c.watchPeerFastclose()
		c.meta.OnProtocolError(c.protocolReset)
	}
	return c
}

func (c *Conn) newPathLocked(sf *subflow.Subflow, ep tcpip.Endpoint, wq *waiter.Queue) *path {
	p := newPath(c.nextID, sf, ep, wq)
	c.nextID++
	c.paths = append(c.paths, p)
	return p
}

func (c *Conn) start() {
	if !c.mptcp {
		close(c.readerDone)
		return
	}
	c.startPath(c.first)
	c.startPM()
	go c.run()
}

// startPath starts the reader of p and lets its endpoint wake the sender.
func (c *Conn) startPath(p *path) {
	p.wake = waiter.NewFunctionEntry(waiter.WritableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { c.poke() })
	p.wq.EventRegister(&p.wake)
	go c.readLoop(p)
	c.poke()
}

// poke wakes the sender goroutine.
func (c *Conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// MultipathTCP reports whether the connection uses MPTCP; false means it
// fell back to plain TCP (the peer did not offer or accept MP_CAPABLE).
func (c *Conn) MultipathTCP() bool {
	fb, _ := c.fellBack()
	return c.mptcp && !fb
}

// FallbackReason says why the connection is plain TCP ("" when MPTCP).
func (c *Conn) FallbackReason() string {
	if fb, why := c.fellBack(); fb {
		return why
	}
	if c.mptcp {
		return ""
	}
	return c.fallbackWhy
}

// LocalAddr returns the local address of the initial subflow.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address of the initial subflow.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetScheduler replaces the connection's scheduler (see package
// scheduler); it takes effect for the next bytes sent.
func (c *Conn) SetScheduler(s scheduler.Scheduler) {
	if s == nil || !c.mptcp {
		return
	}
	c.wmu.Lock()
	c.sched = s
	c.wmu.Unlock()
	c.poke()
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read; a zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if !c.mptcp {
		return c.first.tc.SetReadDeadline(t)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rdeadline = t
	c.rtimer = rearm(c.rtimer, t, &c.rmu, &c.rcond)
	c.rcond.Broadcast()
	return nil
}

// SetWriteDeadline bounds Write; a zero time means none.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if !c.mptcp {
		return c.first.tc.SetWriteDeadline(t)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wdeadline = t
	c.wtimer = rearm(c.wtimer, t, &c.wmu, &c.wcond)
	c.wcond.Broadcast()
	return nil
}

// rearm replaces a deadline timer: at t, waiters on cond wake up to see
// that their deadline passed.
func rearm(old *time.Timer, t time.Time, mu *sync.Mutex, cond *sync.Cond) *time.Timer {
	if old != nil {
		old.Stop()
	}
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
}

// SubflowStats describes one subflow.
type SubflowStats struct {
	ID            int
	Local, Remote netip.AddrPort
	BytesSent     uint64 // payload bytes put on the wire, retransmissions included
	BytesReceived uint64 // payload bytes that arrived, duplicates included
	RTT           time.Duration
	Backup        bool   // used only when no other subflow can send
	Join          bool   // opened with MP_JOIN (false: the initial subflow)
	State         string // "active", "stale" (repeated timeouts), "closed"

	// PeerResetReason names the MP_TCPRST reason (RFC 8684 §3.6) of the
	// peer's reset of the subflow, ResetReason that of ours ("" when no
	// such reset): "unspecified", "MPTCP-specific error", "lack of
	// resources", "administratively prohibited", "too much outstanding
	// data", "unacceptable performance", "middlebox interference".
	PeerResetReason, ResetReason string
}

// ConnStats describes a connection.
type ConnStats struct {
	MPTCP          bool
	FallbackReason string
	Checksum       bool // DSS checksums in use
	Subflows       []SubflowStats
	BytesSent      uint64 // application bytes written
	BytesReceived  uint64 // application bytes read
	Reinjected     uint64 // bytes sent again on another subflow
}

// Stats returns a snapshot of the connection's state. Subflows lists
// every subflow the connection has had, closed ones included.
func (c *Conn) Stats() ConnStats {
	st := ConnStats{MPTCP: c.mptcp, FallbackReason: c.FallbackReason()}
	if c.meta != nil {
		st.Checksum = c.meta.Checksum()
	}
	c.wmu.Lock()
	st.BytesSent = c.bytesSent
	c.wmu.Unlock()
	c.rmu.Lock()
	st.BytesReceived = c.bytesRecv
	c.rmu.Unlock()
	c.pmu.Lock()
	paths := append([]*path(nil), c.paths...)
	st.Reinjected = c.reinjected
	c.pmu.Unlock()
	for _, p := range paths {
		ss := SubflowStats{ID: p.id, Local: p.local, Remote: p.remote, State: "active"}
		var info tcpip.TCPInfoOption
		if p.ep.GetSockOpt(&info) == nil {
			ss.RTT = info.RTT
		}
		if p.sf != nil {
			k := p.sf.Counters()
			ss.BytesSent, ss.BytesReceived = k.BytesOut, k.BytesIn
			ss.Backup = p.sf.Backup()
			ss.Join = p.sf.IsJoin()
			ss.PeerResetReason, ss.ResetReason = resetReasons(p.sf)
		}
		switch {
		case p.ended.Load():
			ss.State = "closed"
		case p.isStale.Load():
			ss.State = "stale"
		}
		st.Subflows = append(st.Subflows, ss)
	}
	return st
}

// SubflowCounters returns the option layer's counters of each subflow
// (malformed options seen, pure ACKs sent, DATA_FINs, ...).
func (c *Conn) SubflowCounters() []subflow.Counters {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	var out []subflow.Counters
	for _, p := range c.paths {
		if p.sf != nil {
			out = append(out, p.sf.Counters())
		}
	}
	return out
}

// SetBackup turns the subflow with the given ID (see SubflowStats) into a
// backup path or back, and tells the peer (MP_PRIO): a backup subflow
// carries data only when no other one can.
func (c *Conn) SetBackup(id int, backup bool) error {
	c.pmu.Lock()
	var p *path
	for _, q := range c.paths {
		if q.id == id {
			p = q
		}
	}
	c.pmu.Unlock()
	if p == nil || p.sf == nil {
		return wrapf("no MPTCP subflow with ID %d", id)
	}
	p.sf.SetBackup(backup)
	c.poke()
	return nil
}

// Done is closed when the connection has ended completely: after Close,
// once the DATA_FIN and FIN exchanges finished (or timed out).
func (c *Conn) Done() <-chan struct{} { return c.done }
