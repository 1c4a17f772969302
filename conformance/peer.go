package conformance

import (
	"context"
	"net"

	"github.com/umptcp/umptcp/internal/kernelsock"
	"github.com/umptcp/umptcp/internal/netns"
)

// The kernel peers: sockets made inside a namespace, and the kernel's view
// of them. The work is done by internal/kernelsock (shared with `umptcp
// bench`); these names are the ones the tests use.

// ListenMPTCP listens inside ns with the kernel's MPTCP (IPPROTO_MPTCP).
// Go falls back to plain TCP silently when the namespace has MPTCP disabled;
// check the accepted connections with KernelMultipathTCP.
func ListenMPTCP(ns *netns.NS, network, addr string) (net.Listener, error) {
	return kernelsock.Listen(ns, network, addr, true)
}

// ListenTCP listens inside ns with plain TCP (MPTCP explicitly off).
func ListenTCP(ns *netns.NS, network, addr string) (net.Listener, error) {
	return kernelsock.Listen(ns, network, addr, false)
}

// DialMPTCP connects from inside ns with the kernel's MPTCP.
func DialMPTCP(ctx context.Context, ns *netns.NS, network, addr string) (net.Conn, error) {
	return kernelsock.Dial(ctx, ns, network, addr, true)
}

// DialTCP connects from inside ns with plain TCP (MPTCP explicitly off).
func DialTCP(ctx context.Context, ns *netns.NS, network, addr string) (net.Conn, error) {
	return kernelsock.Dial(ctx, ns, network, addr, false)
}

// KernelMultipathTCP reports whether a connection made by this package's
// kernel peers still uses MPTCP (false when it fell back to TCP or never
// asked for MPTCP).
func KernelMultipathTCP(c net.Conn) (bool, error) {
	return kernelsock.MultipathTCP(c)
}

// KernelDisconnect is connect(AF_UNSPEC) on a kernel socket made by this
// package: on MPTCP, Linux aborts the connection with MP_FASTCLOSE.
func KernelDisconnect(c net.Conn) error { return kernelsock.Disconnect(c) }

// MPTCPInfo is the part of the kernel's struct mptcp_info (linux/mptcp.h,
// read with getsockopt(SOL_MPTCP, MPTCP_INFO)) the tests use.
type MPTCPInfo = kernelsock.Info

// Bits of MPTCPInfo.Flags (MPTCP_INFO_FLAG_*).
const (
	MPTCPInfoFlagFallback          = kernelsock.FlagFallback
	MPTCPInfoFlagRemoteKeyReceived = kernelsock.FlagRemoteKeyReceived
)

// KernelMPTCPInfo reads MPTCP_INFO from a kernel socket made by this
// package. It fails with EOPNOTSUPP or ENOPROTOOPT once the connection fell
// back to TCP.
func KernelMPTCPInfo(c net.Conn) (MPTCPInfo, error) {
	return kernelsock.MPTCPInfo(c)
}
