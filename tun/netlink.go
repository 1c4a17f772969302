package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rtnl is a minimal NETLINK_ROUTE client. The socket belongs to the network
// namespace of the thread that created it.
type rtnl struct {
	fd  int
	seq uint32
}

func newRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink SO_RCVTIMEO: %w", err)
	}
	return &rtnl{fd: fd, seq: uint32(time.Now().UnixNano())}, nil
}

func (r *rtnl) close() { unix.Close(r.fd) }

// ifIndex returns the index of interface name (SIOCGIFINDEX on the netlink
// socket, so it resolves in the socket's namespace).
func (r *rtnl) ifIndex(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(r.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFINDEX %q: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// attr appends a route attribute to b.
func attr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(l))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return b[:]
}

// do sends one request and waits for its acknowledgement.
func (r *rtnl) do(typ, flags uint16, body []byte) error {
	r.seq++
	seq := r.seq
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	msg = append(msg, body...)
	hdr := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	hdr.Len = uint32(len(msg))
	hdr.Type = typ
	hdr.Flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK | flags
	hdr.Seq = seq
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 1<<16)
	for range 64 {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EWOULDBLOCK {
				return fmt.Errorf("netlink: no answer within 5s")
			}
			return fmt.Errorf("netlink recv: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("netlink: malformed message (len %d of %d)", l, len(b))
			}
			mtyp := binary.NativeEndian.Uint16(b[4:6])
			mseq := binary.NativeEndian.Uint32(b[8:12])
			data := b[unix.SizeofNlMsghdr:l]
			b = b[min(nlAlign(l), len(b)):]
			if mseq != seq || mtyp != unix.NLMSG_ERROR {
				continue
			}
			if len(data) < 4 {
				return fmt.Errorf("netlink: short error message")
			}
			if code := int32(binary.NativeEndian.Uint32(data[:4])); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
	return fmt.Errorf("netlink: no acknowledgement for request %d", seq)
}

// setLink sets the MTU (if mtu > 0) and the up/down state of interface idx.
func (r *rtnl) setLink(idx int, mtu int, up bool) error {
	var info unix.IfInfomsg
	info.Family = unix.AF_UNSPEC
	info.Index = int32(idx)
	info.Change = unix.IFF_UP
	if up {
		info.Flags = unix.IFF_UP
	}
	body := unsafe.Slice((*byte)(unsafe.Pointer(&info)), unix.SizeofIfInfomsg)
	b := append([]byte(nil), body...)
	if mtu > 0 {
		b = attr(b, unix.IFLA_MTU, u32(uint32(mtu)))
	}
	return r.do(unix.RTM_NEWLINK, 0, b)
}

// addAddr assigns p to interface idx. IPv6 addresses are added with
// IFA_F_NODAD so they are usable at once.
func (r *rtnl) addAddr(idx int, p netip.Prefix) error {
	var m unix.IfAddrmsg
	m.Family = unix.AF_INET
	if p.Addr().Is6() {
		m.Family = unix.AF_INET6
		m.Flags = unix.IFA_F_NODAD
	}
	m.Prefixlen = uint8(p.Bits())
	m.Scope = unix.RT_SCOPE_UNIVERSE
	m.Index = uint32(idx)
	body := unsafe.Slice((*byte)(unsafe.Pointer(&m)), unix.SizeofIfAddrmsg)
	b := append([]byte(nil), body...)
	a := p.Addr().AsSlice()
	b = attr(b, unix.IFA_LOCAL, a)
	b = attr(b, unix.IFA_ADDRESS, a)
	if p.Addr().Is6() {
		b = attr(b, unix.IFA_FLAGS, u32(unix.IFA_F_NODAD))
	}
	return r.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, b)
}
