package tun

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The TUN device's offloads (IFF_VNET_HDR + TUNSETOFFLOAD) let one read or
// write carry a TCP "super-segment" of up to 64 KiB, which the kernel
// segments (TSO) or has coalesced (it hands us its own TSO segments
// unsplit). One syscall then moves dozens of segments instead of one, and
// the kernel's own TCP/MPTCP processes one skb for them all.
//
// This endpoint keeps gVisor (and the MPTCP option layer above it) on
// ordinary MTU-sized packets:
//   - reading, a super-segment is cut into MSS-sized segments with complete
//     checksums before delivery;
//   - writing, packets go to a queue; a writer goroutine takes what has
//     accumulated and merges runs of consecutive segments of one TCP flow
//     whose headers agree (same options byte for byte, contiguous sequence
//     numbers, equal sizes) into one super-segment. A DSS option repeated
//     on every piece stays valid: a mapping covers the bytes it names,
//     whichever segment carries it (RFC 8684 §3.3.1), and identical
//     options are exactly what the kernel's segmentation would copy.

const (
	virtioNetHdrLen = 10

	vnetFlagNeedsCsum = 1
	vnetFlagDataValid = 2 // the kernel verified the checksum

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4

	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04

	// maxSuperSegment bounds a merged packet (the IPv4 total length).
	maxSuperSegment = 65535
	// maxMergeSegments bounds how many segments one merged packet holds.
	maxMergeSegments = 64
	// writeQueueLimit bounds the packets waiting for the writer; beyond
	// it packets are dropped (as a full qdisc would).
	writeQueueLimit = 4096
)

// vnetHdr is struct virtio_net_hdr (host byte order, as TUN uses by default).
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.LittleEndian.Uint16(b[2:])
	h.gsoSize = binary.LittleEndian.Uint16(b[4:])
	h.csumStart = binary.LittleEndian.Uint16(b[6:])
	h.csumOffset = binary.LittleEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
}

// OffloadStats counts what the offload endpoint did.
type OffloadStats struct {
	ReadSuper     uint64 // super-segments read and cut
	ReadSegments  uint64 // packets delivered to the stack
	WriteSuper    uint64 // merged packets written
	WriteSegments uint64 // packets the stack wrote (merged or not)
	WriteSyscalls uint64
	WriteDropped  uint64 // queue full or write error
}

// offloadEndpoint is a stack.LinkEndpoint over a TUN fd opened with
// IFF_VNET_HDR (vnet true) or without (plain packets, no merging or
// cutting; the same queue and writer).
type offloadEndpoint struct {
	fd   int
	vnet bool
	mtu  atomic.Uint32

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	readerStop int // eventfd waking the reader to stop; -1 when no reader
	readerDone chan struct{}
	onClose    func()

	wmu     sync.Mutex
	wcond   sync.Cond
	queue   []*stack.PacketBuffer
	wclosed bool
	wdone   chan struct{}

	stats struct {
		readSuper, readSegs, writeSuper, writeSegs, writeCalls, writeDrops atomic.Uint64
	}
}

func newOffloadEndpoint(fd int, mtu uint32, vnet bool) *offloadEndpoint {
	e := &offloadEndpoint{fd: fd, vnet: vnet, readerStop: -1, wdone: make(chan struct{})}
	e.mtu.Store(mtu)
	e.wcond.L = &e.wmu
	go e.writer()
	return e
}

// enableOffload turns on the TUN's checksum and TSO offloads. The fd must
// have been created with IFF_VNET_HDR.
func enableOffload(fd int) error {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6)
}

func (e *offloadEndpoint) Stats() OffloadStats {
	return OffloadStats{
		ReadSuper: e.stats.readSuper.Load(), ReadSegments: e.stats.readSegs.Load(),
		WriteSuper: e.stats.writeSuper.Load(), WriteSegments: e.stats.writeSegs.Load(),
		WriteSyscalls: e.stats.writeCalls.Load(), WriteDropped: e.stats.writeDrops.Load(),
	}
}

func (e *offloadEndpoint) MTU() uint32                                { return e.mtu.Load() }
func (e *offloadEndpoint) SetMTU(mtu uint32)                          { e.mtu.Store(mtu) }
func (*offloadEndpoint) MaxHeaderLength() uint16                      { return 0 }
func (*offloadEndpoint) LinkAddress() tcpip.LinkAddress               { return "" }
func (*offloadEndpoint) SetLinkAddress(tcpip.LinkAddress)             {}
func (*offloadEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (*offloadEndpoint) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (*offloadEndpoint) AddHeader(*stack.PacketBuffer)                {}
func (*offloadEndpoint) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (e *offloadEndpoint) SetOnCloseAction(f func())                  { e.mu.Lock(); e.onClose = f; e.mu.Unlock() }
func (e *offloadEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}
func (e *offloadEndpoint) Wait() {}
func (e *offloadEndpoint) closeWriter() {
	e.wmu.Lock()
	e.wclosed = true
	e.wcond.Broadcast()
	e.wmu.Unlock()
	<-e.wdone
}

// Close implements stack.LinkEndpoint: it stops the reader. The writer
// lives until the Device closes, so another stack can use the device.
func (e *offloadEndpoint) Close() {
	e.Attach(nil)
	e.mu.Lock()
	f := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

// Attach starts (d != nil) or stops and waits for (d == nil) the reader.
func (e *offloadEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	stop, done := e.readerStop, e.readerDone
	e.dispatcher = d
	e.readerStop, e.readerDone = -1, nil
	e.mu.Unlock()
	if stop >= 0 {
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		unix.Write(stop, one[:])
		<-done
		unix.Close(stop)
	}
	if d == nil {
		return
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return // cannot happen short of fd exhaustion; the link stays silent
	}
	done = make(chan struct{})
	e.mu.Lock()
	e.readerStop, e.readerDone = efd, done
	e.mu.Unlock()
	go e.reader(d, efd, done)
}

// reader reads packets until stop is signalled or the fd fails.
func (e *offloadEndpoint) reader(d stack.NetworkDispatcher, stop int, done chan struct{}) {
	defer close(done)
	buf := make([]byte, virtioNetHdrLen+maxSuperSegment)
	fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}, {Fd: int32(stop), Events: unix.POLLIN}}
	for {
		n, err := unix.Read(e.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				fds[0].Revents, fds[1].Revents = 0, 0
				if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
					return
				}
				if fds[1].Revents != 0 {
					return
				}
				continue
			}
			return // EBADFD and friends: the device is gone
		}
		pkt := buf[:n]
		if !e.vnet {
			deliverBytes(d, pkt, false)
			e.stats.readSegs.Add(1)
			continue
		}
		if n < virtioNetHdrLen {
			continue
		}
		var h vnetHdr
		h.decode(pkt)
		pkt = pkt[virtioNetHdrLen:]
		switch {
		case h.gsoType&^0x80 == vnetGSOTCPv4 || h.gsoType&^0x80 == vnetGSOTCPv6:
			e.stats.readSuper.Add(1)
			e.stats.readSegs.Add(uint64(cutSuperSegment(d, pkt, int(h.gsoSize))))
		default:
			// A checksum the kernel left for us to finish, or one it
			// checked itself, is valid: the packet is marked so, and the
			// option layer does not sum its payload again.
			valid := h.flags&(vnetFlagNeedsCsum|vnetFlagDataValid) != 0
			if h.flags&vnetFlagNeedsCsum != 0 {
				completeChecksum(pkt, int(h.csumStart), int(h.csumOffset))
			}
			deliverBytes(d, pkt, valid)
			e.stats.readSegs.Add(1)
		}
	}
}

// deliverBytes hands one IP packet (copied) to the stack; valid says its
// transport checksum is known to be right (pkt.RXChecksumValidated). The
// NIC sets that flag again from its capabilities before gVisor reads it, so
// it only spares the layers between this endpoint and the NIC (the option
// layer) a second sum.
func deliverBytes(d stack.NetworkDispatcher, b []byte, valid bool) {
	if len(b) == 0 {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(b) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	v := buffer.NewViewSize(len(b))
	copy(v.AsSlice(), b)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	pkt.RXChecksumValidated = valid
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// completeChecksum finishes a checksum the kernel left partial: the field
// at start+off holds the pseudo-header sum; the sum runs from start to the
// end of the packet.
func completeChecksum(b []byte, start, off int) {
	if start+off+2 > len(b) || start >= len(b) {
		return
	}
	binary.BigEndian.PutUint16(b[start+off:], ^checksum.Checksum(b[start:], 0))
}

// tcpHeaders splits an IP packet carrying TCP into its IP header length,
// TCP header length and whether it is IPv6; ok is false for anything else
// (IP options and IPv6 extension headers included: such packets are left
// alone).
func tcpHeaders(b []byte) (ipLen, tcpLen int, v6, ok bool) {
	if len(b) < header.IPv4MinimumSize {
		return 0, 0, false, false
	}
	switch header.IPVersion(b) {
	case header.IPv4Version:
		ip := header.IPv4(b)
		if ip.HeaderLength() != header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 {
			return 0, 0, false, false
		}
		ipLen = header.IPv4MinimumSize
	case header.IPv6Version:
		if len(b) < header.IPv6MinimumSize || header.IPv6(b).NextHeader() != uint8(header.TCPProtocolNumber) {
			return 0, 0, false, false
		}
		ipLen, v6 = header.IPv6MinimumSize, true
	default:
		return 0, 0, false, false
	}
	if len(b) < ipLen+header.TCPMinimumSize {
		return 0, 0, false, false
	}
	tcpLen = int(header.TCP(b[ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || len(b) < ipLen+tcpLen {
		return 0, 0, false, false
	}
	return ipLen, tcpLen, v6, true
}

// cutSuperSegment delivers a TCP super-segment as segments of at most mss
// payload bytes, each with its own complete IP and TCP checksums. Only the
// last keeps FIN and PSH, only the first CWR (as the kernel's segmentation
// does). It returns how many packets it delivered.
func cutSuperSegment(d stack.NetworkDispatcher, b []byte, mss int) int {
	ipLen, tcpLen, v6, ok := tcpHeaders(b)
	if !ok || mss <= 0 {
		deliverBytes(d, b, false) // not something we can cut: let the stack judge it
		return 1
	}
	hl := ipLen + tcpLen
	payload := b[hl:]
	if v6 {
		payload = b[hl:min(len(b), header.IPv6MinimumSize+int(header.IPv6(b).PayloadLength()))]
	} else if tot := int(header.IPv4(b).TotalLength()); tot >= hl && tot <= len(b) {
		payload = b[hl:tot]
	}
	proto := header.IPv4ProtocolNumber
	if v6 {
		proto = header.IPv6ProtocolNumber
	}
	tcp0 := header.TCP(b[ipLen:hl])
	flags := tcp0.Flags()
	seq := tcp0.SequenceNumber()
	count := 0
	for off := 0; off < len(payload) || (off == 0 && len(payload) == 0); {
		n := min(mss, len(payload)-off)
		last := off+n >= len(payload)
		v := buffer.NewViewSize(hl + n)
		s := v.AsSlice()
		copy(s, b[:hl])
		copy(s[hl:], payload[off:off+n])
		th := header.TCP(s[ipLen:hl])
		th.SetSequenceNumber(seq + uint32(off))
		f := flags
		if !last {
			f &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if off > 0 {
			f &^= header.TCPFlagCwr
		}
		th.SetFlags(uint8(f))
		var src, dst tcpip.Address
		if v6 {
			ip := header.IPv6(s)
			ip.SetPayloadLength(uint16(tcpLen + n))
			src, dst = ip.SourceAddress(), ip.DestinationAddress()
		} else {
			ip := header.IPv4(s)
			ip.SetTotalLength(uint16(hl + n))
			ip.SetID(ip.ID() + uint16(count))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			src, dst = ip.SourceAddress(), ip.DestinationAddress()
		}
		th.SetChecksum(0)
		sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+n))
		sum = checksum.Checksum(s[ipLen:], sum)
		th.SetChecksum(^sum)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		pkt.RXChecksumValidated = true // computed just now, from the kernel's own segment
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
		count++
		off += n
		if n == 0 {
			break
		}
	}
	return count
}

// WritePackets queues the packets for the writer goroutine.
func (e *offloadEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.wclosed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, p := range pkts.AsSlice() {
		if len(e.queue) >= writeQueueLimit {
			e.stats.writeDrops.Add(1)
			continue
		}
		p.IncRef()
		e.queue = append(e.queue, p)
		n++
	}
	e.wcond.Signal()
	if n == 0 && pkts.Len() > 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return pkts.Len(), nil
}

// writer writes what WritePackets queued, merging where it can.
func (e *offloadEndpoint) writer() {
	defer close(e.wdone)
	var batch []*stack.PacketBuffer
	w := newMerger(e)
	for {
		e.wmu.Lock()
		for len(e.queue) == 0 && !e.wclosed {
			e.wcond.Wait()
		}
		if len(e.queue) == 0 && e.wclosed {
			e.wmu.Unlock()
			return
		}
		batch, e.queue = e.queue, batch[:0]
		e.wmu.Unlock()
		w.writeBatch(batch)
		for i, p := range batch {
			p.DecRef()
			batch[i] = nil
		}
	}
}

// merger builds and writes (merged) packets; its buffers are reused.
type merger struct {
	e      *offloadEndpoint
	hdr    []byte // vnet header + IP + TCP headers of the packet being built
	iov    [][]byte
	flat   []byte // the current packet's first bytes, flattened for parsing
	segs   int
	mss    int
	nextSq uint32
	ipLen  int
	tcpLen int
	v6     bool
	paylen int
	open   bool
	lastF  header.TCPFlags
}

func newMerger(e *offloadEndpoint) *merger {
	return &merger{e: e, hdr: make([]byte, 0, virtioNetHdrLen+120), flat: make([]byte, 0, 120)}
}

// writeBatch writes pkts in order, merging runs of one flow's segments.
func (m *merger) writeBatch(pkts []*stack.PacketBuffer) {
	for _, p := range pkts {
		m.e.stats.writeSegs.Add(1)
		slices := p.AsSlices()
		if !m.e.vnet {
			m.writev(slices)
			continue
		}
		// Flatten the first bytes (the headers) for parsing.
		m.flat = m.flat[:0]
		for _, s := range slices {
			m.flat = append(m.flat, s[:min(len(s), cap(m.flat)-len(m.flat))]...)
			if len(m.flat) == cap(m.flat) {
				break
			}
		}
		ipLen, tcpLen, v6, ok := tcpHeaders(m.flat)
		if !ok {
			m.flush()
			m.writePlain(slices)
			continue
		}
		hl := ipLen + tcpLen
		size := p.Size()
		if m.open && m.fits(ipLen, tcpLen, v6, size-hl) {
			m.add(slices, hl, size-hl)
			continue
		}
		m.flush()
		f := header.TCP(m.flat[ipLen:hl]).Flags()
		if size-hl == 0 || f&(header.TCPFlagSyn|header.TCPFlagFin|header.TCPFlagRst|header.TCPFlagUrg|header.TCPFlagEce|header.TCPFlagCwr) != 0 {
			m.writePlain(slices)
			continue
		}
		m.start(slices, ipLen, tcpLen, v6, size-hl)
	}
	m.flush()
}

// fits reports whether the packet whose headers are in m.flat continues
// the open merged packet.
func (m *merger) fits(ipLen, tcpLen int, v6 bool, n int) bool {
	if ipLen != m.ipLen || tcpLen != m.tcpLen || v6 != m.v6 || n == 0 || n > m.mss ||
		m.segs >= maxMergeSegments || m.ipLen+m.tcpLen+m.paylen+n > maxSuperSegment {
		return false
	}
	if m.lastF&header.TCPFlagPsh != 0 || m.paylen%m.mss != 0 {
		return false // the previous segment was short or pushed: a run ends there
	}
	hdr := m.hdr[virtioNetHdrLen:]
	b := m.flat
	th, nh := header.TCP(b[ipLen:]), header.TCP(hdr[ipLen:])
	if th.SequenceNumber() != m.nextSq || th.AckNumber() != nh.AckNumber() || th.WindowSize() != nh.WindowSize() ||
		th.SourcePort() != nh.SourcePort() || th.DestinationPort() != nh.DestinationPort() {
		return false
	}
	f := th.Flags()
	if f&^(header.TCPFlagAck|header.TCPFlagPsh) != 0 || f&header.TCPFlagAck == 0 {
		return false
	}
	if string(b[ipLen+header.TCPMinimumSize:ipLen+tcpLen]) != string(hdr[ipLen+header.TCPMinimumSize:ipLen+tcpLen]) {
		return false // options differ (a new DATA_ACK, timestamp or mapping)
	}
	if v6 {
		a, c := header.IPv6(b), header.IPv6(hdr)
		at, al := a.TOS()
		ct, cl := c.TOS()
		return at == ct && al == cl && a.HopLimit() == c.HopLimit() && a.SourceAddress() == c.SourceAddress() &&
			a.DestinationAddress() == c.DestinationAddress()
	}
	a, c := header.IPv4(b), header.IPv4(hdr)
	at, _ := a.TOS()
	ct, _ := c.TOS()
	return at == ct && a.TTL() == c.TTL() && a.Flags() == c.Flags() && a.SourceAddress() == c.SourceAddress() &&
		a.DestinationAddress() == c.DestinationAddress()
}

// start opens a merged packet with this segment.
func (m *merger) start(slices [][]byte, ipLen, tcpLen int, v6 bool, n int) {
	hl := ipLen + tcpLen
	m.hdr = append(m.hdr[:0], noVnetHdr[:]...) // filled in by flush
	m.hdr = append(m.hdr, m.flat[:hl]...)
	m.iov = append(m.iov[:0], nil) // slot 0: the headers, set by flush
	m.ipLen, m.tcpLen, m.v6 = ipLen, tcpLen, v6
	m.mss, m.paylen, m.segs, m.open = n, 0, 0, true
	th := header.TCP(m.flat[ipLen:hl])
	m.nextSq = th.SequenceNumber()
	m.add(slices, hl, n)
}

// add appends a segment's payload (the bytes after hl) to the open packet.
func (m *merger) add(slices [][]byte, hl, n int) {
	skip := hl
	for _, s := range slices {
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		m.iov = append(m.iov, s[skip:])
		skip = 0
	}
	m.lastF = header.TCP(m.flat[m.ipLen : m.ipLen+m.tcpLen]).Flags()
	m.paylen += n
	m.segs++
	m.nextSq += uint32(n)
}

// flush writes the open packet: as it is when it holds one segment, as a
// super-segment for the kernel to cut otherwise.
func (m *merger) flush() {
	if !m.open {
		return
	}
	m.open = false
	hdr := m.hdr
	ip := hdr[virtioNetHdrLen:]
	hl := m.ipLen + m.tcpLen
	var h vnetHdr
	if m.segs > 1 {
		th := header.TCP(ip[m.ipLen:hl])
		if m.lastF&header.TCPFlagPsh != 0 {
			th.SetFlags(uint8(th.Flags() | header.TCPFlagPsh))
		}
		var src, dst tcpip.Address
		if m.v6 {
			v := header.IPv6(ip)
			v.SetPayloadLength(uint16(m.tcpLen + m.paylen))
			src, dst = v.SourceAddress(), v.DestinationAddress()
			h.gsoType = vnetGSOTCPv6
		} else {
			v := header.IPv4(ip)
			v.SetTotalLength(uint16(hl + m.paylen))
			v.SetChecksum(0)
			v.SetChecksum(^v.CalculateChecksum())
			src, dst = v.SourceAddress(), v.DestinationAddress()
			h.gsoType = vnetGSOTCPv4
		}
		// The kernel completes the checksum of each piece from the
		// pseudo-header sum left in the field (CHECKSUM_PARTIAL).
		th.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(m.tcpLen+m.paylen)))
		h.flags = vnetFlagNeedsCsum
		h.hdrLen = uint16(hl)
		h.gsoSize = uint16(m.mss)
		h.csumStart = uint16(m.ipLen)
		h.csumOffset = 16
		m.e.stats.writeSuper.Add(1)
	}
	h.encode(hdr)
	m.iov[0] = hdr
	m.writev(m.iov)
}

// noVnetHdr is the header of a packet written as it is.
var noVnetHdr [virtioNetHdrLen]byte

// writePlain writes one packet unchanged (behind an empty vnet header).
func (m *merger) writePlain(slices [][]byte) {
	m.iov = append(m.iov[:0], noVnetHdr[:])
	m.iov = append(m.iov, slices...)
	m.writev(m.iov)
}

func (m *merger) writev(iov [][]byte) {
	m.e.stats.writeCalls.Add(1)
	for tries := 0; tries < 100; tries++ {
		_, err := unix.Writev(m.e.fd, iov)
		switch {
		case err == nil:
			return
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			fds := []unix.PollFd{{Fd: int32(m.e.fd), Events: unix.POLLOUT}}
			unix.Poll(fds, 10)
			continue
		}
		break
	}
	m.e.stats.writeDrops.Add(1)
}
