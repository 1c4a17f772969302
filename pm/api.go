package pm

import (
	"net/netip"
)

// EventKind says what happened on a connection. The set is Linux's
// userspace path-manager events (MPTCP_EVENT_* of the mptcp_pm netlink
// family).
type EventKind uint8

const (
	// Created: a connection exists (its initial subflow is established).
	Created EventKind = iota + 1
	// Established: MPTCP is fully established: both sides know both keys,
	// so subflows may join and addresses may be announced.
	Established
	// Closed: the connection is gone; no events follow.
	Closed
	// Announced: the peer announced address RemoteID at Remote (ADD_ADDR;
	// Remote's port is 0 when the peer gave none: the initial subflow's
	// port is meant).
	Announced
	// Removed: the peer removed its address RemoteID (REMOVE_ADDR).
	Removed
	// SubflowEstablished: a subflow joined (Local, Remote, IDs, Backup).
	SubflowEstablished
	// SubflowClosed: a subflow ended, or one we opened failed to join;
	// Err says why.
	SubflowClosed
	// PriorityChanged: a subflow's backup state changed (Backup).
	PriorityChanged
)

var eventNames = [...]string{Created: "created", Established: "established", Closed: "closed", Announced: "announced",
	Removed: "removed", SubflowEstablished: "sf_established", SubflowClosed: "sf_closed", PriorityChanged: "sf_priority"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "unknown"
}

// Event is one thing that happened on a connection.
type Event struct {
	Kind              EventKind
	Local, Remote     netip.AddrPort // the subflow's, or the announced address (Announced)
	LocalID, RemoteID uint8
	Backup            bool
	Err               error // SubflowClosed, Closed: why, if not a normal close
}

// SubflowInfo describes one live subflow of a connection.
type SubflowInfo struct {
	Local, Remote     netip.AddrPort
	LocalID, RemoteID uint8
	Backup            bool
	Initial           bool // the subflow the connection began with
}

// Conn is what a path manager may do with one connection: the commands of
// Linux's userspace path manager (announce, remove, subflow create and
// destroy, set flags), addressed to the connection itself instead of a
// token. Every method is safe to call from any goroutine, also after the
// connection closed (it then returns an error).
type Conn interface {
	// Token is our token of the connection (RFC 8684 §3.1).
	Token() uint32
	// Server reports whether the connection was accepted, not dialed.
	Server() bool
	// Initial is the initial subflow's addresses (our address has ID 0).
	Initial() (local, remote netip.AddrPort)
	// Announce sends ADD_ADDR for our address id at addr (with addr's
	// port if it is not 0), retransmitted until the peer echoes it.
	Announce(id uint8, addr netip.AddrPort) error
	// Remove sends REMOVE_ADDR for our address id and closes our subflows
	// that use it.
	Remove(id uint8) error
	// CreateSubflow starts a join from local (our address id localID; a
	// port of 0 picks one) to remote. It returns at once; the outcome is
	// a SubflowEstablished or SubflowClosed event.
	CreateSubflow(local netip.AddrPort, localID uint8, remote netip.AddrPort, backup bool) error
	// DestroySubflow closes the subflow between local and remote (RST with
	// MP_TCPRST); its unacknowledged data goes out on the others.
	DestroySubflow(local, remote netip.AddrPort) error
	// SetBackup changes our backup wish for the subflow between local and
	// remote and tells the peer with MP_PRIO.
	SetBackup(local, remote netip.AddrPort, backup bool) error
	// Subflows lists the live subflows.
	Subflows() []SubflowInfo
}

// Handler is a path manager: it receives each connection's events, one at
// a time and in order, on a goroutine of the connection's (never on the
// packet path), and acts through the Conn's commands. It must not block
// for long: the connection's next event waits.
type Handler interface {
	HandleEvent(c Conn, e Event)
}

// Host is what a path manager may ask of the stack it runs in.
type Host interface {
	// ListenJoins accepts joins (MP_JOIN SYNs) on our address and port,
	// as a signal endpoint with a port needs; new connections to it are
	// refused.
	ListenJoins(addr netip.AddrPort) error
	// UnlistenJoins undoes ListenJoins.
	UnlistenJoins(addr netip.AddrPort)
	// SetAddrID makes id our address ID of a for joins from now on (0:
	// forget it).
	SetAddrID(a netip.Addr, id uint8)
	// SetMaxSubflows bounds the additional subflows a connection accepts
	// from the peer.
	SetMaxSubflows(n int)
	// Route returns our address that packets to remote leave from.
	Route(remote netip.Addr) (netip.Addr, bool)
	// Log reports something the path manager did or could not do, for
	// verbose output.
	Log(format string, args ...any)
}

// Attacher is implemented by a Handler that needs its Host: the stack calls
// Attach once, before the first event.
type Attacher interface {
	Attach(h Host) error
}
