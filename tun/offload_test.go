package tun

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// captureDispatcher keeps a copy of every packet delivered to it.
type captureDispatcher struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (c *captureDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pkts = append(c.pkts, pkt.ToView().AsSlice())
}

func (*captureDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (c *captureDispatcher) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.pkts...)
}

// tcpSegment builds an IPv4 or IPv6 TCP segment with complete checksums.
func tcpSegment(v6 bool, seq uint32, flags header.TCPFlags, opts, payload []byte) []byte {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, ipLen+tcpLen+len(payload))
	var src, dst tcpip.Address
	if v6 {
		src = tcpip.AddrFrom16([16]byte{0xfd, 0x77, 15: 1})
		dst = tcpip.AddrFrom16([16]byte{0xfd, 0x77, 15: 2})
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen + len(payload)), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: src, DstAddr: dst})
	} else {
		src = tcpip.AddrFrom4([4]byte{10, 77, 0, 1})
		dst = tcpip.AddrFrom4([4]byte{10, 77, 0, 2})
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), ID: 7, Flags: header.IPv4FlagDontFragment, TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	th := header.TCP(b[ipLen:])
	th.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 5201, SeqNum: seq, AckNum: 99, DataOffset: uint8(tcpLen),
		Flags: flags, WindowSize: 512})
	copy(b[ipLen+header.TCPMinimumSize:], opts)
	copy(b[ipLen+tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	th.SetChecksum(^checksum.Checksum(b[ipLen:], sum))
	return b
}

func packetList(t *testing.T, raw ...[]byte) stack.PacketBufferList {
	t.Helper()
	var l stack.PacketBufferList
	for _, r := range raw {
		l.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(r)}))
	}
	return l
}

// seqpacketPair stands in for a TUN fd: one message per write, as TUN.
func seqpacketPair(t *testing.T) (ours, theirs int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.SetNonblock(fds[0], true))
	t.Cleanup(func() { unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func readMessages(t *testing.T, fd int, want int) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 70000)
	for len(out) < want && time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 100); n <= 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		require.NoError(t, err)
		out = append(out, append([]byte(nil), buf[:n]...))
	}
	return out
}

// TestOffloadMergeAndCut writes runs of segments through the endpoint and
// checks what reaches the "TUN": runs of one flow merged into one
// super-segment with a GSO header, the rest written as they are; and that
// cutting each super-segment again gives back the original segments byte
// for byte (checksums included).
func TestOffloadMergeAndCut(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		ours, theirs := seqpacketPair(t)
		e := newOffloadEndpoint(ours, 1500, true)
		const mss = 1400
		opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
		rng := rand.New(rand.NewPCG(1, 2))
		var segs [][]byte
		seq := uint32(1000)
		for i := 0; i < 10; i++ {
			n := mss
			if i == 9 {
				n = 333 // a short last one still belongs to the run
			}
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			f := header.TCPFlagAck
			if i == 9 {
				f |= header.TCPFlagPsh
			}
			segs = append(segs, tcpSegment(v6, seq, f, opts, p))
			seq += uint32(n)
		}
		otherOpts := append([]byte(nil), opts...)
		otherOpts[7] = 9 // a new timestamp: a new run
		tail := tcpSegment(v6, seq, header.TCPFlagAck, otherOpts, make([]byte, mss))
		syn := tcpSegment(v6, 1, header.TCPFlagSyn, nil, nil)
		all := append(append([][]byte{}, segs...), tail, syn)
		n, err := e.WritePackets(packetList(t, all...))
		require.Nil(t, err)
		require.Equal(t, len(all), n)

		msgs := readMessages(t, theirs, 3)
		require.Len(t, msgs, 3, "v6=%v: one super-segment, the segment with other options, the SYN", v6)
		var h vnetHdr
		h.decode(msgs[0])
		wantType := uint8(vnetGSOTCPv4)
		if v6 {
			wantType = vnetGSOTCPv6
		}
		require.Equal(t, wantType, h.gsoType)
		require.Equal(t, uint16(mss), h.gsoSize)
		require.Equal(t, uint8(vnetFlagNeedsCsum), h.flags)

		var d captureDispatcher
		cutSuperSegment(&d, msgs[0][virtioNetHdrLen:], int(h.gsoSize))
		got := d.got()
		require.Len(t, got, len(segs))
		for i := range segs {
			if v6 {
				require.Equal(t, segs[i], got[i], "v6 segment %d", i)
				continue
			}
			// IPv4 IDs of the pieces count up from the first (as the
			// kernel's segmentation numbers them); all else is equal.
			a, b := append([]byte(nil), segs[i]...), append([]byte(nil), got[i]...)
			require.Equal(t, uint16(7+i), header.IPv4(b).ID())
			for _, x := range [][]byte{a, b} {
				header.IPv4(x).SetID(0)
				header.IPv4(x).SetChecksum(0)
			}
			require.Equal(t, a, b, "segment %d", i)
			require.True(t, header.IPv4(got[i]).IsChecksumValid())
		}
		h.decode(msgs[1])
		require.Equal(t, uint8(vnetGSONone), h.gsoType)
		require.Equal(t, tail, msgs[1][virtioNetHdrLen:])
		require.Equal(t, syn, msgs[2][virtioNetHdrLen:])
		st := e.Stats()
		require.Equal(t, uint64(1), st.WriteSuper)
		require.Equal(t, uint64(len(all)), st.WriteSegments)
		require.Equal(t, uint64(3), st.WriteSyscalls)
		e.closeWriter()
	}
}

// TestOffloadReader feeds the endpoint's reader what a TUN with offloads
// hands out: a super-segment, a packet with a partial checksum, a plain
// packet; the stack must see MTU-sized packets with valid checksums.
func TestOffloadReader(t *testing.T) {
	ours, theirs := seqpacketPair(t)
	e := newOffloadEndpoint(ours, 1500, true)
	defer e.closeWriter()
	var d captureDispatcher
	e.Attach(&d)

	payload := bytes.Repeat([]byte("umptcp"), 1000) // 6000 bytes
	whole := tcpSegment(false, 5, header.TCPFlagAck|header.TCPFlagPsh, nil, payload)
	super := append(make([]byte, virtioNetHdrLen), whole...)
	(&vnetHdr{flags: vnetFlagNeedsCsum, gsoType: vnetGSOTCPv4, hdrLen: 40, gsoSize: 1448, csumStart: 20, csumOffset: 16}).encode(super)

	partial := tcpSegment(false, 1, header.TCPFlagAck, nil, []byte("hello"))
	want := append([]byte(nil), partial...)
	ip := header.IPv4(partial)
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(partial)-20))
	binary.BigEndian.PutUint16(partial[20+16:], pseudo)
	partialMsg := append(make([]byte, virtioNetHdrLen), partial...)
	(&vnetHdr{flags: vnetFlagNeedsCsum, csumStart: 20, csumOffset: 16}).encode(partialMsg)

	plain := append(make([]byte, virtioNetHdrLen), tcpSegment(true, 9, header.TCPFlagAck, nil, []byte("v6"))...)
	for _, m := range [][]byte{super, partialMsg, plain} {
		_, err := unix.Write(theirs, m)
		require.NoError(t, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(d.got()) < 7 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := d.got()
	require.Len(t, got, 7, "5 pieces of 6000 bytes at 1448, the partial-checksum packet, the plain one")
	total := 0
	for i, p := range got[:5] {
		ip := header.IPv4(p)
		require.True(t, ip.IsChecksumValid(), "piece %d", i)
		th := header.TCP(p[20:])
		n := len(p) - 40
		total += n
		require.LessOrEqual(t, n, 1448)
		require.Equal(t, uint32(5+1448*i), th.SequenceNumber())
		require.Equal(t, i == 4, th.Flags()&header.TCPFlagPsh != 0, "PSH only on the last piece")
		require.True(t, th.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(p[40:], 0), uint16(n)), "piece %d", i)
	}
	require.Equal(t, len(payload), total)
	require.Equal(t, want, got[5], "the partial checksum is completed")
	require.Equal(t, plain[virtioNetHdrLen:], got[6])
	e.Attach(nil) // stops the reader
}

// FuzzCutSuperSegment: whatever a TUN hands out, cutting never panics and
// never delivers more payload than it was given.
func FuzzCutSuperSegment(f *testing.F) {
	f.Add(tcpSegment(false, 1, header.TCPFlagAck, nil, make([]byte, 3000)), uint16(1448))
	f.Add(tcpSegment(true, 1, header.TCPFlagAck|header.TCPFlagFin, []byte{1, 1, 1, 0}, make([]byte, 100)), uint16(10))
	f.Add([]byte{0x45, 0, 0, 20}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, mss uint16) {
		var d captureDispatcher
		cutSuperSegment(&d, b, int(mss))
		total := 0
		for _, p := range d.got() {
			total += len(p)
		}
		if len(d.got()) > len(b)+1 {
			t.Fatalf("%d packets from %d bytes", len(d.got()), len(b))
		}
	})
}
