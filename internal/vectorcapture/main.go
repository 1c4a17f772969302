// Command vectorcapture records MPTCP options sent by the running Linux
// kernel, as test vectors for package option.
//
// It needs root. It creates a throw-away network namespace
// (umptcp-vec-<pid>), opens a TUN device in it (kernel side 10.211.0.1/24,
// extra kernel addresses .3 and .4, fd00:211::1/64) and plays a scripted
// MPTCP peer at 10.211.0.2 / fd00:211::2 by writing hand-built IP packets
// into the TUN, against kernel MPTCP sockets (IPPROTO_MPTCP) inside the
// namespace. All traffic stays in that namespace, which is always deleted
// at the end.
//
// Every option area the kernel sent that is worth keeping is written to
// <out>/<name>.hex: '#' comment lines ("# key: value" metadata: what the
// segment is, kernel version, keys, sequence numbers, payload) followed by
// the hex of the TCP option bytes (everything after the 20-byte TCP
// header).
//
// Usage (from the module root):
//
//	sudo go run ./internal/vectorcapture -out option/testdata/kernel
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umptcp/umptcp/option"
)

const (
	tunName = "umptcp0"
	// Fixed keys for our side so the vectors can be checked offline
	// (HMACs need both keys). They are test values, nothing secret.
	ourKey      uint64 = 0x0123456789abcdef
	ourJoinNon  uint32 = 0x5eed1234
	mptcpInfoSz        = 128
)

var (
	kernAddr  = netip.MustParseAddr("10.211.0.1")
	peerAddr  = netip.MustParseAddr("10.211.0.2")
	kernAddr6 = netip.MustParseAddr("fd00:211::1")
	peerAddr6 = netip.MustParseAddr("fd00:211::2")
)

var (
	outDir  string
	nsName  string
	kernVer string
	wrote   []string
)

func main() {
	flag.StringVar(&outDir, "out", "option/testdata/kernel", "directory for the .hex files")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	if os.Geteuid() != 0 {
		log.Fatal("vectorcapture needs root (netns, TUN)")
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	kernVer = "Linux " + unix.ByteSliceToString(uts.Release[:])
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		log.Fatal(err)
	}

	nsName = fmt.Sprintf("umptcp-vec-%d", os.Getpid())
	if err := run("ip", "netns", "add", nsName); err != nil {
		log.Fatal(err)
	}
	// Delete the namespace however we leave.
	cleanup := func() {
		if err := run("ip", "netns", "del", nsName); err != nil {
			log.Printf("deleting netns %s: %v", nsName, err)
		}
	}
	// A closed stdout/stderr pipe (| head) must not kill us before the
	// namespace is gone: SIGPIPE would terminate without running cleanup.
	signal.Ignore(syscall.SIGPIPE)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sig
		cleanup()
		os.Exit(1)
	}()
	err := capture()
	cleanup()
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %d files to %s", len(wrote), outDir)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func nsRun(args ...string) error {
	return run(append([]string{"ip", "netns", "exec", nsName}, args...)...)
}

// capture does all socket and TUN work on one OS thread moved into the
// namespace. The thread is never unlocked, so the runtime discards it when
// main exits instead of reusing it elsewhere.
func capture() error {
	runtime.LockOSThread()
	nsfd, err := unix.Open("/var/run/netns/"+nsName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(nsfd)
	if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	tun, err := openTUN()
	if err != nil {
		return err
	}
	defer unix.Close(tun)
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "10.211.0.1/24", "dev", tunName},
		{"ip", "addr", "add", "10.211.0.3/24", "dev", tunName},
		{"ip", "addr", "add", "10.211.0.4/24", "dev", tunName},
		{"ip", "addr", "add", "fd00:211::1/64", "dev", tunName, "nodad"},
		{"ip", "link", "set", tunName, "up"},
		{"sysctl", "-w", "net.mptcp.enabled=1"},
		{"ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"},
	} {
		if err := nsRun(c...); err != nil {
			return err
		}
	}
	t := &tunDev{fd: tun}
	for _, csum := range []bool{false, true} {
		v := "0"
		if csum {
			v = "1"
		}
		if err := nsRun("sysctl", "-w", "net.mptcp.checksum_enabled="+v); err != nil {
			return err
		}
		if err := passive(t, csum); err != nil {
			return fmt.Errorf("passive (csum=%v): %w", csum, err)
		}
		if err := active(t, csum); err != nil {
			return fmt.Errorf("active (csum=%v): %w", csum, err)
		}
	}
	if err := nsRun("sysctl", "-w", "net.mptcp.checksum_enabled=0"); err != nil {
		return err
	}
	if err := active6(t); err != nil {
		return fmt.Errorf("active IPv6: %w", err)
	}
	return nil
}

func openTUN() (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(tunName)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// --- packets -------------------------------------------------------------

const (
	fFIN = 0x01
	fSYN = 0x02
	fRST = 0x04
	fPSH = 0x08
	fACK = 0x10
)

type pkt struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	opts     []byte
	payload  []byte
	set      option.Set
	optErr   error
}

func (p *pkt) String() string {
	return fmt.Sprintf("%v->%v flags=%s seq=%d ack=%d len=%d opts=%x",
		p.src, p.dst, flagStr(p.flags), p.seq, p.ack, len(p.payload), p.opts)
}

func flagStr(f uint8) string {
	var s []string
	for _, x := range []struct {
		b uint8
		n string
	}{{fSYN, "SYN"}, {fACK, "ACK"}, {fFIN, "FIN"}, {fRST, "RST"}, {fPSH, "PSH"}} {
		if f&x.b != 0 {
			s = append(s, x.n)
		}
	}
	return strings.Join(s, "|")
}

func decode(b []byte) (*pkt, bool) {
	var src, dst netip.Addr
	var seg []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(b[2:]))
		if b[9] != unix.IPPROTO_TCP || tot > len(b) || ihl < 20 || tot < ihl {
			return nil, false
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		seg = b[ihl:tot]
	case len(b) >= 40 && b[0]>>4 == 6:
		pl := int(binary.BigEndian.Uint16(b[4:]))
		if b[6] != unix.IPPROTO_TCP || 40+pl > len(b) {
			return nil, false
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		seg = b[40 : 40+pl]
	default:
		return nil, false
	}
	if len(seg) < 20 {
		return nil, false
	}
	off := int(seg[12]>>4) * 4
	if off < 20 || off > len(seg) {
		return nil, false
	}
	p := &pkt{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(seg[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(seg[2:])),
		seq:     binary.BigEndian.Uint32(seg[4:]),
		ack:     binary.BigEndian.Uint32(seg[8:]),
		flags:   seg[13],
		opts:    append([]byte(nil), seg[20:off]...),
		payload: append([]byte(nil), seg[off:]...),
	}
	p.optErr = option.ParseTCPOptions(p.opts, &p.set)
	return p, true
}

func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var s option.Sum
	s.Add(src.AsSlice())
	s.Add(dst.AsSlice())
	var tail [8]byte
	if src.Is4() {
		tail[1] = unix.IPPROTO_TCP
		binary.BigEndian.PutUint16(tail[2:], uint16(len(seg)))
		s.Add(tail[:4])
	} else {
		binary.BigEndian.PutUint32(tail[:], uint32(len(seg)))
		tail[7] = unix.IPPROTO_TCP
		s.Add(tail[:])
	}
	s.Add(seg)
	return ^s.Value()
}

func build(src, dst netip.AddrPort, seq, ack uint32, flags uint8, opts, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append([]byte{1}, opts...) // NOP padding in front
	}
	seg := make([]byte, 20+len(opts)+len(payload))
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], seq)
	binary.BigEndian.PutUint32(seg[8:], ack)
	seg[12] = byte((20+len(opts))/4) << 4
	seg[13] = flags
	binary.BigEndian.PutUint16(seg[14:], 65535)
	copy(seg[20:], opts)
	copy(seg[20+len(opts):], payload)
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(src.Addr(), dst.Addr(), seg))
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(seg))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(seg)))
		ip[6] = 0x40 // DF
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		var s option.Sum
		s.Add(ip)
		binary.BigEndian.PutUint16(ip[10:], ^s.Value())
		return append(ip, seg...)
	}
	ip := make([]byte, 40, 40+len(seg))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
	ip[6] = unix.IPPROTO_TCP
	ip[7] = 64
	s16, d16 := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	return append(ip, seg...)
}

// --- TUN I/O ---------------------------------------------------------------

type tunDev struct {
	fd      int
	pending []*pkt // received but not yet consumed by expect
}

func (t *tunDev) write(b []byte) error {
	_, err := unix.Write(t.fd, b)
	return err
}

// expect returns the first TCP packet (queued or new) for which match is
// true, waiting up to d. Non-matching packets stay queued.
func (t *tunDev) expect(what string, d time.Duration, match func(*pkt) bool) (*pkt, error) {
	deadline := time.Now().Add(d)
	for {
		for i, p := range t.pending {
			if match(p) {
				t.pending = append(t.pending[:i], t.pending[i+1:]...)
				log.Printf("got %s: %v", what, p)
				return p, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("timeout waiting for %s (queued: %v)", what, t.pending)
		}
		fds := []unix.PollFd{{Fd: int32(t.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, err
		}
		buf := make([]byte, 65536)
		for {
			n, err := unix.Read(t.fd, buf)
			if err != nil {
				break
			}
			if p, ok := decode(buf[:n]); ok {
				t.pending = append(t.pending, p)
			}
		}
	}
}

func (t *tunDev) drain() { t.pending = nil }

// --- scripted peer ---------------------------------------------------------

type conn struct {
	t              *tunDev
	us, them       netip.AddrPort
	sndNxt, rcvNxt uint32
	isn, kernISN   uint32
}

func (c *conn) send(flags uint8, opts, payload []byte) error {
	b := build(c.us, c.them, c.sndNxt, c.rcvNxt, flags, opts, payload)
	c.sndNxt += uint32(len(payload))
	if flags&(fSYN|fFIN) != 0 {
		c.sndNxt++
	}
	return c.t.write(b)
}

func (c *conn) from(p *pkt) bool { return p.src == c.them && p.dst == c.us }

func (c *conn) expect(what string, match func(*pkt) bool) (*pkt, error) {
	return c.t.expect(what, 3*time.Second, func(p *pkt) bool { return c.from(p) && match(p) })
}

// consume advances rcvNxt past p's payload (and FIN).
func (c *conn) consume(p *pkt) {
	end := p.seq + uint32(len(p.payload))
	if p.flags&fFIN != 0 {
		end++
	}
	if int32(end-c.rcvNxt) > 0 {
		c.rcvNxt = end
	}
}

func mss() []byte { return []byte{2, 4, 0x05, 0xb4} }

// --- output -----------------------------------------------------------------

type meta [][2]string

func save(name, what string, p *pkt, m meta) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# what: %s\n", what)
	fmt.Fprintf(&b, "# kernel: %s\n", kernVer)
	fmt.Fprintf(&b, "# captured-by: internal/vectorcapture (%s)\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "# tcp-flags: %s\n", flagStr(p.flags))
	fmt.Fprintf(&b, "# src: %s\n# dst: %s\n", p.src, p.dst)
	fmt.Fprintf(&b, "# tcp-seq: %d\n# tcp-ack: %d\n", p.seq, p.ack)
	fmt.Fprintf(&b, "# our-key: %016x\n", ourKey)
	for _, kv := range m {
		fmt.Fprintf(&b, "# %s: %s\n", kv[0], kv[1])
	}
	if len(p.payload) > 0 {
		fmt.Fprintf(&b, "# payload: %x\n", p.payload)
	}
	if p.optErr != nil {
		fmt.Fprintf(&b, "# option-parse-error-at-capture: %v\n", p.optErr)
	}
	fmt.Fprintf(&b, "%x\n", p.opts)
	path := filepath.Join(outDir, name+".hex")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	wrote = append(wrote, path)
	log.Printf("saved %s", path)
	return nil
}

func hexs(v any) string {
	switch x := v.(type) {
	case uint64:
		return fmt.Sprintf("%016x", x)
	case uint32:
		return fmt.Sprintf("%08x", x)
	}
	return fmt.Sprint(v)
}

// --- kernel sockets ------------------------------------------------------

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func mptcpSocket(v6 bool) (int, error) {
	fam := unix.AF_INET
	if v6 {
		fam = unix.AF_INET6
	}
	return unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
}

// mptcpInfo reads struct mptcp_info (include/uapi/linux/mptcp.h): token at
// offset 12, write_seq 16, snd_una 24, rcv_nxt 32, csum_enabled 42.
type mptcpInfo struct {
	token                   uint32
	writeSeq, sndUna, rcvNx uint64
	csum                    uint8
}

func getInfo(fd int) (mptcpInfo, error) {
	var buf [mptcpInfoSz]byte
	l := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_MPTCP, 1, /* MPTCP_INFO */
		uintptr(unsafePointer(&buf[0])), uintptr(unsafePointer(&l)), 0)
	if e != 0 {
		return mptcpInfo{}, e
	}
	return mptcpInfo{
		token:    binary.NativeEndian.Uint32(buf[12:]),
		writeSeq: binary.NativeEndian.Uint64(buf[16:]),
		sndUna:   binary.NativeEndian.Uint64(buf[24:]),
		rcvNx:    binary.NativeEndian.Uint64(buf[32:]),
		csum:     buf[42],
	}, nil
}

func readAll(fd int, want int, d time.Duration) ([]byte, error) {
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(d)
	for len(got) < want && time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			got = append(got, buf[:n]...)
			continue
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return got, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) < want {
		return got, fmt.Errorf("kernel socket received %d of %d bytes", len(got), want)
	}
	return got, nil
}

func suffix(csum bool) string {
	if csum {
		return "-csum"
	}
	return ""
}

func mpcFlags(csum bool) uint8 {
	if csum {
		return option.FlagChecksum | option.FlagHMACSHA256
	}
	return option.FlagHMACSHA256
}

// dssOut builds our DSS: 64-bit data ACK and, with payload, a 64-bit
// mapping for it (with the §3.3.1 checksum when csum).
func dssOut(dataAck uint64, dsn uint64, ssn uint32, payload []byte, csum bool) []byte {
	d := option.DSS{HasDataAck: true, DataAck64: true, DataAck: dataAck}
	if len(payload) > 0 {
		d.HasMapping, d.DSN64, d.DSN, d.SSN, d.DataLen = true, true, dsn, ssn, uint16(len(payload))
		if csum {
			var s option.Sum
			s.Add(payload)
			d.HasChecksum = true
			d.Checksum = option.DSSChecksum(dsn, ssn, d.DataLen, s.Value())
		}
	}
	return d.Append(nil)
}
