package stack

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// Conn is one connection: MPTCP, or plain TCP after fallback. It is a
// net.Conn; CloseWrite half-closes (DATA_FIN), MultipathTCP and Stats tell
// what the connection is doing.
//
// Lock order: wmu before rmu; neither is held while calling into gVisor
// (which may call back into the subflow layer on this goroutine).
type Conn struct {
	s    *Stack
	tc   *gonet.TCPConn
	ep   tcpip.Endpoint   // the subflow's endpoint, under tc
	sf   *subflow.Subflow // nil when the peer never offered MPTCP
	meta *subflow.Meta

	mptcp         bool
	fallbackWhy   string
	local, remote *net.TCPAddr // kept: gVisor forgets them once the endpoint closes

	// receive side, guarded by rmu
	rmu       sync.Mutex
	rcond     sync.Cond
	rbuf      []byte // in-order data the application has not read: rbuf[rhead:]
	rhead     int
	rcvNxt    uint64 // next DSN expected
	eof       bool   // the peer's DATA_FIN was reached
	rerr      error  // terminal receive error
	rclosed   bool   // Close was called: data is discarded
	rdeadline time.Time
	rtimer    *time.Timer
	bytesRecv uint64

	// send side, guarded by wmu
	wmu       sync.Mutex
	sndNxt    uint64 // DSN of the next byte written
	wclosed   bool
	bytesSent uint64

	closing    chan struct{} // closed by Close
	closeOnce  sync.Once
	readerDone chan struct{}
	done       chan struct{} // closed when the connection is gone
}

var _ net.Conn = (*Conn)(nil)

func newConn(s *Stack, tc *gonet.TCPConn, ep tcpip.Endpoint, sf *subflow.Subflow) *Conn {
	c := &Conn{s: s, tc: tc, ep: ep, sf: sf, closing: make(chan struct{}), readerDone: make(chan struct{}), done: make(chan struct{})}
	c.rcond.L = &c.rmu
	c.local, _ = tc.LocalAddr().(*net.TCPAddr)
	c.remote, _ = tc.RemoteAddr().(*net.TCPAddr)
	if c.local == nil {
		c.local = &net.TCPAddr{}
	}
	if c.remote == nil {
		c.remote = &net.TCPAddr{}
	}
	switch {
	case sf == nil:
		c.fallbackWhy = "peer did not offer MPTCP"
	default:
		c.mptcp, c.fallbackWhy = sf.MPTCP()
	}
	if sf != nil {
		sf.Adopt()
	}
	if c.mptcp {
		c.meta = sf.Meta()
		c.rcvNxt = c.meta.RemoteIDSN() + 1
		c.sndNxt = c.meta.LocalIDSN() + 1
	} else if sf != nil {
		sf.Close() // plain TCP: the layer can forget the tuple
	}
	return c
}

func (c *Conn) start() {
	if !c.mptcp {
		close(c.readerDone)
		return
	}
	go c.readLoop()
	go c.controlLoop()
}

// MultipathTCP reports whether the connection uses MPTCP; false means it
// fell back to plain TCP (the peer did not offer or accept MP_CAPABLE).
func (c *Conn) MultipathTCP() bool { return c.mptcp }

// FallbackReason says why the connection is plain TCP ("" when MPTCP).
func (c *Conn) FallbackReason() string {
	if c.mptcp {
		return ""
	}
	return c.fallbackWhy
}

// LocalAddr returns the local address of the (first) subflow.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address of the (first) subflow.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read; a zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if !c.mptcp {
		return c.tc.SetReadDeadline(t)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rdeadline = t
	if c.rtimer != nil {
		c.rtimer.Stop()
		c.rtimer = nil
	}
	if !t.IsZero() {
		c.rtimer = time.AfterFunc(time.Until(t), func() {
			c.rmu.Lock()
			c.rcond.Broadcast()
			c.rmu.Unlock()
		})
	}
	c.rcond.Broadcast()
	return nil
}

// SetWriteDeadline bounds Write; a zero time means none.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// SubflowStats describes one subflow.
type SubflowStats struct {
	Local, Remote netip.AddrPort
	BytesSent     uint64 // payload bytes put on the wire, retransmissions included
	BytesReceived uint64 // payload bytes that arrived, duplicates included
	RTT           time.Duration
}

// ConnStats describes a connection.
type ConnStats struct {
	MPTCP          bool
	FallbackReason string
	Checksum       bool // DSS checksums in use
	Subflows       []SubflowStats
	BytesSent      uint64 // application bytes written
	BytesReceived  uint64 // application bytes read
}

// Stats returns a snapshot of the connection's state.
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
	ss := SubflowStats{
		Local:  unmapAP(c.local.AddrPort()),
		Remote: unmapAP(c.remote.AddrPort()),
	}
	var info tcpip.TCPInfoOption
	if c.ep.GetSockOpt(&info) == nil {
		ss.RTT = info.RTT
	}
	if c.sf != nil {
		k := c.sf.Counters()
		ss.BytesSent, ss.BytesReceived = k.BytesOut, k.BytesIn
	}
	st.Subflows = []SubflowStats{ss}
	return st
}

// SubflowCounters returns the option layer's counters of each subflow
// (malformed options seen, pure ACKs sent, DATA_FINs, ...).
func (c *Conn) SubflowCounters() []subflow.Counters {
	if c.sf == nil {
		return nil
	}
	return []subflow.Counters{c.sf.Counters()}
}

// Done is closed when the connection has ended completely: after Close,
// once the DATA_FIN and FIN exchanges finished (or timed out).
func (c *Conn) Done() <-chan struct{} { return c.done }
