package kernelsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umptcp/umptcp/internal/netns"
)

// Listen listens inside ns with the kernel's MPTCP (IPPROTO_MPTCP) when
// mptcp is true, with plain TCP (MPTCP explicitly off) otherwise. Go falls
// back to plain TCP silently when the namespace has MPTCP disabled; check
// accepted connections with MultipathTCP.
func Listen(ns *netns.NS, network, addr string, mptcp bool) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(mptcp)
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	return ln, err
}

// Dial connects from inside ns, with the kernel's MPTCP when mptcp is true,
// with plain TCP otherwise.
func Dial(ctx context.Context, ns *netns.NS, network, addr string, mptcp bool) (net.Conn, error) {
	var d net.Dialer
	d.SetMultipathTCP(mptcp)
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// MultipathTCP reports whether a connection made by Listen or Dial still
// uses MPTCP (false when it fell back to TCP or never asked for MPTCP).
func MultipathTCP(c net.Conn) (bool, error) {
	m, ok := c.(interface{ MultipathTCP() (bool, error) })
	if !ok {
		return false, fmt.Errorf("kernelsock: %T has no MultipathTCP method", c)
	}
	return m.MultipathTCP()
}

// Info is the part of the kernel's struct mptcp_info (linux/mptcp.h, read
// with getsockopt(SOL_MPTCP, MPTCP_INFO)) that umptcp's tests and
// benchmarks use.
type Info struct {
	Subflows    uint8  // additional subflows (the initial one not counted)
	SubflowsMax uint8  // the path manager's limit
	Flags       uint32 // Flag* bits
	Token       uint32 // the local connection token
	WriteSeq    uint64 // next data sequence number to write
	SndUna      uint64 // oldest unacknowledged data sequence number
	RcvNxt      uint64 // next data sequence number expected
	CsumEnabled bool   // DSS checksums negotiated (kernel 5.14+)
}

// Bits of Info.Flags (MPTCP_INFO_FLAG_*).
const (
	FlagFallback          = 1 << 0
	FlagRemoteKeyReceived = 1 << 1
)

// mptcpInfoOpt is MPTCP_INFO, the getsockopt option at level SOL_MPTCP.
const mptcpInfoOpt = 1

// Offsets of the fields of struct mptcp_info this package reads.
const (
	offSubflows    = 0
	offSubflowsMax = 3
	offFlags       = 8
	offToken       = 12
	offWriteSeq    = 16
	offSndUna      = 24
	offRcvNxt      = 32
	offCsumEnabled = 42
	mptcpInfoMin   = offCsumEnabled + 1
)

// MPTCPInfo reads MPTCP_INFO from a kernel socket. It fails with EOPNOTSUPP
// or ENOPROTOOPT once the connection fell back to TCP.
func MPTCPInfo(c net.Conn) (Info, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Info{}, fmt.Errorf("kernelsock: %T is not a kernel socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Info{}, err
	}
	var buf [256]byte
	var n int
	var serr error
	err = raw.Control(func(fd uintptr) {
		n, serr = getsockopt(int(fd), unix.SOL_MPTCP, mptcpInfoOpt, buf[:])
	})
	if err = errors.Join(err, serr); err != nil {
		return Info{}, fmt.Errorf("kernelsock: getsockopt MPTCP_INFO: %w", err)
	}
	if n < mptcpInfoMin {
		return Info{}, fmt.Errorf("kernelsock: MPTCP_INFO has %d bytes, want >= %d", n, mptcpInfoMin)
	}
	le := binary.NativeEndian
	return Info{
		Subflows:    buf[offSubflows],
		SubflowsMax: buf[offSubflowsMax],
		Flags:       le.Uint32(buf[offFlags:]),
		Token:       le.Uint32(buf[offToken:]),
		WriteSeq:    le.Uint64(buf[offWriteSeq:]),
		SndUna:      le.Uint64(buf[offSndUna:]),
		RcvNxt:      le.Uint64(buf[offRcvNxt:]),
		CsumEnabled: buf[offCsumEnabled] != 0,
	}, nil
}

// getsockopt is getsockopt(2) into buf; it returns the length the kernel
// wrote.
func getsockopt(fd, level, opt int, buf []byte) (int, error) {
	l := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(l), nil
}

// Disconnect calls connect(2) with an AF_UNSPEC address on a kernel
// socket: the disconnect of POSIX, which on an MPTCP socket makes Linux
// abort the connection with MP_FASTCLOSE (mptcp_disconnect). The socket
// stays open (Close it afterwards).
func Disconnect(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("kernelsock: %T is not a kernel socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var unspec [unix.SizeofSockaddrInet6]byte // sa_family 0: AF_UNSPEC
	var serr error
	err = raw.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&unspec[0])), uintptr(len(unspec)))
		if errno != 0 {
			serr = errno
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("kernelsock: connect AF_UNSPEC: %w", err)
	}
	return nil
}
