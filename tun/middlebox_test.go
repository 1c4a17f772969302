package tun

import (
	"bytes"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestParseStripWhere(t *testing.T) {
	for _, w := range []StripWhere{StripNone, StripSYN, StripData, StripAll} {
		got, err := ParseStripWhere(w.String())
		require.NoError(t, err)
		require.Equal(t, w, got)
	}
	for in, want := range map[string]StripWhere{"none": StripNone, "SYN": StripSYN, " data ": StripData, "All": StripAll} {
		got, err := ParseStripWhere(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "syns", "1", "handshake"} {
		_, err := ParseStripWhere(in)
		require.ErrorContains(t, err, "want none, syn, data or all", in)
	}
	require.Equal(t, "StripWhere(9)", StripWhere(9).String())
	require.False(t, StripWhere(9).applies(true))
	require.False(t, StripWhere(9).applies(false))
}

// optPart is a piece of a TCP option list; mptcp parts become NOPs when
// stripped.
type optPart struct {
	b     []byte
	mptcp bool
}

func mp(b ...byte) optPart    { return optPart{b, true} }
func other(b ...byte) optPart { return optPart{b, false} }

// optList joins parts into an option list as sent and as a stripping
// middlebox should leave it.
func optList(parts ...optPart) (sent, stripped []byte) {
	for _, p := range parts {
		sent = append(sent, p.b...)
		if p.mptcp {
			stripped = append(stripped, bytes.Repeat([]byte{header.TCPOptionNOP}, len(p.b))...)
		} else {
			stripped = append(stripped, p.b...)
		}
	}
	return sent, stripped
}

var (
	optMSS     = other(2, 4, 0x05, 0xb4)
	optSACKOK  = other(4, 2)
	optTS      = other(8, 10, 1, 2, 3, 4, 5, 6, 7, 8)
	optNOPNOP  = other(1, 1)
	optNOPWS   = other(1, 3, 3, 7)
	mpcSYN     = mp(30, 4, 0x01, 0x81)                                                         // MP_CAPABLE v1, checksums, HMAC-SHA256
	mpcSYNACK  = mp(30, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8)                                // + the listener's key
	mpcACK     = mp(30, 20, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16) // + both keys
	dssMapping = mp(30, 20, 0x20, 0x05, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0, 1, 0x03, 0xe8, 0xab, 0xcd)
	dssEmpty   = mp(30, 4, 0x20, 0)
	addAddr    = mp(30, 8, 0x31, 2, 10, 0, 0, 9) // ADD_ADDR echo, IPv4
)

// rawSeg is a segment for the raw-packet tests.
type rawSeg struct {
	name        string
	sent, strip []byte // the packet, and the packet a stripping middlebox delivers
	syn, mptcp  bool
}

func makeSeg(name string, v6 bool, flags header.TCPFlags, payload []byte, parts ...optPart) rawSeg {
	sent, stripped := optList(parts...)
	s := rawSeg{name: name, sent: tcpSegment(v6, 1000, flags, sent, payload), strip: tcpSegment(v6, 1000, flags, stripped, payload),
		syn: flags&header.TCPFlagSyn != 0}
	for _, p := range parts {
		s.mptcp = s.mptcp || p.mptcp
	}
	return s
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*7 + seed
	}
	return b
}

// rawSegments is a handshake and data of an MPTCP connection, plus
// segments a stripping middlebox must leave alone.
func rawSegments(v6 bool) []rawSeg {
	syn, ack := header.TCPFlagSyn, header.TCPFlagAck
	segs := []rawSeg{
		makeSeg("SYN MP_CAPABLE", v6, syn, nil, optMSS, optSACKOK, optTS, optNOPWS, mpcSYN),
		makeSeg("SYN-ACK MP_CAPABLE", v6, syn|ack, nil, optMSS, optSACKOK, optTS, other(1), other(3, 3, 7), mpcSYNACK),
		makeSeg("ACK MP_CAPABLE", v6, ack, nil, optNOPNOP, optTS, mpcACK),
		makeSeg("data DSS+TS", v6, ack|header.TCPFlagPsh, pattern(1000, 1), optNOPNOP, optTS, dssMapping),
		makeSeg("data DSS+ADD_ADDR", v6, ack, pattern(700, 2), dssEmpty, optNOPNOP, optTS, addAddr),
		makeSeg("data TS only", v6, ack, pattern(500, 3), optNOPNOP, optTS),
		makeSeg("FIN DSS", v6, ack|header.TCPFlagFin, nil, optNOPNOP, optTS, dssEmpty),
		// Malformed lists: a middlebox cannot tell what these bytes are.
		makeSeg("kind 30 length 0", v6, ack, pattern(100, 4), optNOPNOP, optTS, other(30, 0, 0, 0)),
		makeSeg("kind 30 length 1", v6, syn, nil, optMSS, other(30, 1, 1, 1)),
		makeSeg("kind 30 past the end", v6, ack, pattern(10, 5), optNOPNOP, optTS, other(30, 12, 0, 0)),
		makeSeg("DSS then malformed", v6, ack, pattern(10, 6), other(30, 4, 0x20, 0), other(5, 30, 0, 0)),
		makeSeg("kind 30 after EOL", v6, ack, pattern(10, 7), optNOPNOP, optTS, other(0, 30, 2, 0)),
	}
	return segs
}

// withIPv4Options inserts 4 bytes of IPv4 options (NOP, NOP, NOP, EOL)
// into an IPv4 packet: the TCP segment and its checksum stay as they are.
func withIPv4Options(b []byte) []byte {
	out := append(append(append([]byte(nil), b[:header.IPv4MinimumSize]...), 1, 1, 1, 0), b[header.IPv4MinimumSize:]...)
	ip := header.IPv4(out)
	ip.SetHeaderLength(header.IPv4MinimumSize + 4)
	ip.SetTotalLength(uint16(len(out)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return out
}

// tcpOf splits an IP packet into its TCP segment and the checksum's
// addresses, with gVisor's own accessors (independently of parseTCP).
func tcpOf(t testing.TB, b []byte) (th header.TCP, src, dst tcpip.Address) {
	t.Helper()
	th, src, dst, ok := tcpPart(b)
	require.True(t, ok, "not a TCP segment: % x", b[:min(len(b), 60)])
	return th, src, dst
}

func tcpPart(b []byte) (th header.TCP, src, dst tcpip.Address, ok bool) {
	switch {
	case len(b) >= header.IPv4MinimumSize && header.IPVersion(b) == header.IPv4Version:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.TCPProtocolNumber) {
			return nil, src, dst, false
		}
		th = header.TCP(b[ip.HeaderLength():ip.TotalLength()])
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	case len(b) >= header.IPv6MinimumSize && header.IPVersion(b) == header.IPv6Version:
		ip := header.IPv6(b)
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) || header.IPv6MinimumSize+int(ip.PayloadLength()) > len(b) {
			return nil, src, dst, false
		}
		th = header.TCP(b[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())])
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	default:
		return nil, src, dst, false
	}
	if len(th) < header.TCPMinimumSize || int(th.DataOffset()) < header.TCPMinimumSize || int(th.DataOffset()) > len(th) {
		return nil, src, dst, false
	}
	return th, src, dst, true
}

// tcpChecksumValid checks the TCP checksum of packet b with gVisor's code.
func tcpChecksumValid(b []byte) bool {
	th, src, dst, ok := tcpPart(b)
	if !ok {
		return false
	}
	payload := th[th.DataOffset():]
	return th.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload)))
}

func requireTCPChecksum(t testing.TB, b []byte, msgAndArgs ...any) {
	t.Helper()
	tcpOf(t, b)
	require.True(t, tcpChecksumValid(b), msgAndArgs...)
}

// withoutTCPChecksum returns a copy of b with the TCP checksum zeroed, to
// compare packets whose checksums may differ only in representation
// (0x0000 and 0xffff).
func withoutTCPChecksum(t testing.TB, b []byte) []byte {
	t.Helper()
	c := append([]byte(nil), b...)
	th, _, _ := tcpOf(t, c)
	th.SetChecksum(0)
	return c
}

// sendRaw writes packets into a (one WritePackets call) and returns what
// arrives at the far end, in order.
func sendRaw(t *testing.T, a *Endpoint, d *captureDispatcher, raw ...[]byte) [][]byte {
	t.Helper()
	before := len(d.got())
	l := packetList(t, raw...)
	n, err := a.WritePackets(l)
	l.DecRef()
	require.Nil(t, err)
	require.Equal(t, len(raw), n)
	deadline := time.Now().Add(5 * time.Second)
	for len(d.got()) < before+len(raw) {
		require.True(t, time.Now().Before(deadline), "delivered %d of %d packets", len(d.got())-before, len(raw))
		time.Sleep(time.Millisecond)
	}
	return d.got()[before:]
}

func TestStripMPTCPRaw(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		segs := rawSegments(v6)
		if !v6 {
			s := makeSeg("IPv4 options, data DSS", false, header.TCPFlagAck, pattern(300, 8), optNOPNOP, optTS, dssMapping)
			s.sent, s.strip = withIPv4Options(s.sent), withIPv4Options(s.strip)
			segs = append(segs, s)
		}
		for _, w := range []StripWhere{StripNone, StripSYN, StripData, StripAll} {
			t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6]+"/"+w.String(), func(t *testing.T) {
				a, b := NewPipe(LinkParams{StripMPTCP: w}, LinkParams{StripMPTCP: StripAll})
				defer closePipe(a, b)
				d := &captureDispatcher{}
				b.Attach(d)
				var raw [][]byte
				for _, s := range segs {
					raw = append(raw, s.sent)
				}
				got := sendRaw(t, a, d, raw...)
				stripped := 0
				for i, s := range segs {
					want := s.sent
					if w.applies(s.syn) && s.mptcp {
						want = s.strip
						stripped++
					}
					require.Equal(t, withoutTCPChecksum(t, want), withoutTCPChecksum(t, got[i]), "%s", s.name)
					requireTCPChecksum(t, got[i], "%s", s.name)
				}
				st := a.Stats()
				require.EqualValues(t, stripped, st.Stripped)
				require.Zero(t, st.Corrupted)
				require.EqualValues(t, len(segs), st.DeliveredPackets)
				require.Zero(t, b.Stats().Stripped, "the other direction saw no packet")
			})
		}
	}
}

func TestStripMPTCPLeavesOthers(t *testing.T) {
	// Non-TCP packets, IPv4 fragments and truncated segments pass as they
	// are, even when their bytes look like MPTCP options.
	a, b := NewPipe(LinkParams{StripMPTCP: StripAll, CorruptSegments: 100}, LinkParams{})
	defer closePipe(a, b)
	d := &captureDispatcher{}
	b.Attach(d)
	seg := makeSeg("", false, header.TCPFlagAck, pattern(64, 9), optNOPNOP, optTS, dssMapping).sent
	udp := append([]byte(nil), seg...)
	header.IPv4(udp).SetChecksum(0)
	udp[9] = uint8(header.UDPProtocolNumber)
	header.IPv4(udp).SetChecksum(^header.IPv4(udp).CalculateChecksum())
	frag := append([]byte(nil), seg...)
	header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
	header.IPv4(frag).SetChecksum(0)
	header.IPv4(frag).SetChecksum(^header.IPv4(frag).CalculateChecksum())
	short := append([]byte(nil), seg...)
	header.IPv4(short).SetTotalLength(header.IPv4MinimumSize + 30) // ends inside the options
	v6ext := makeSeg("", true, header.TCPFlagAck, pattern(64, 9), optNOPNOP, optTS, dssMapping).sent
	header.IPv6(v6ext).SetNextHeader(uint8(header.IPv6HopByHopOptionsExtHdrIdentifier))
	raw := [][]byte{udp, frag, short, v6ext}
	got := sendRaw(t, a, d, raw...)
	for i := range raw {
		require.Equal(t, raw[i], got[i], "packet %d", i)
	}
	require.Zero(t, a.Stats().Stripped)
	require.Zero(t, a.Stats().Corrupted)
}

func TestStripMPTCPSharedStorage(t *testing.T) {
	// The sender's packet (gVisor keeps its payload for retransmission) is
	// not written to: the middlebox rewrites a copy.
	a, b := NewPipe(LinkParams{StripMPTCP: StripAll, CorruptSegments: 1}, LinkParams{})
	defer closePipe(a, b)
	d := &captureDispatcher{}
	b.Attach(d)
	s := makeSeg("", false, header.TCPFlagAck, pattern(1000, 1), optNOPNOP, optTS, dssMapping)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(s.sent)})
	defer pkt.DecRef()
	var l stack.PacketBufferList
	l.PushBack(pkt.IncRef())
	_, err := a.WritePackets(l)
	l.DecRef()
	require.Nil(t, err)
	d.waitLen(t, 1)
	require.NotEqual(t, s.sent, d.got()[0])
	v := pkt.ToView()
	defer v.Release()
	require.Equal(t, s.sent, v.AsSlice(), "the sender's packet changed")
	require.EqualValues(t, 1, a.Stats().Stripped)
	require.EqualValues(t, 1, a.Stats().Corrupted)
}

func (c *captureDispatcher) waitLen(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.got()) < n {
		require.True(t, time.Now().Before(deadline), "delivered %d of %d packets", len(c.got()), n)
		time.Sleep(time.Millisecond)
	}
}

// requireCorrupted checks that got is want with the payload bytes
// [at, at+n) XORed with 0x5a, and a valid TCP checksum.
func requireCorrupted(t *testing.T, want, got []byte, at, n int, msg string) {
	t.Helper()
	th, _, _ := tcpOf(t, want)
	off := len(want) - len(th) + int(th.DataOffset()) // payload offset in the packet
	exp := withoutTCPChecksum(t, want)
	for i := off + at; i < off+at+n; i++ {
		exp[i] ^= 0x5a
	}
	require.Equal(t, exp, withoutTCPChecksum(t, got), msg)
	requireTCPChecksum(t, got, msg)
}

func TestCorruptRaw(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			a, b := NewPipe(LinkParams{CorruptAfter: 2500, CorruptSegments: 3}, LinkParams{})
			defer closePipe(a, b)
			d := &captureDispatcher{}
			b.Attach(d)
			ack := header.TCPFlagAck
			data := func(n int, seed byte) []byte {
				return makeSeg("", v6, ack, pattern(n, seed), optNOPNOP, optTS, dssMapping).sent
			}
			pure := makeSeg("", v6, ack, nil, optNOPNOP, optTS, dssMapping).sent
			raw := [][]byte{
				data(1000, 1), data(1000, 2), pure, data(1000, 3), // 3000 bytes pass untouched
				data(1000, 4), pure, data(3, 5), data(1, 6), // then 3 with payload are rewritten
				data(1000, 7), // and no more
			}
			got := sendRaw(t, a, d, raw...)
			for _, i := range []int{0, 1, 2, 3, 5, 8} {
				require.Equal(t, raw[i], got[i], "packet %d", i)
			}
			requireCorrupted(t, raw[4], got[4], 500, 4, "1000-byte payload: 4 bytes in the middle")
			requireCorrupted(t, raw[6], got[6], 0, 3, "3-byte payload: all of it")
			requireCorrupted(t, raw[7], got[7], 0, 1, "1-byte payload")
			st := a.Stats()
			require.EqualValues(t, 3, st.Corrupted)
			require.Zero(t, st.Stripped)
		})
	}
}

func TestCorruptChangesSum(t *testing.T) {
	// XORing 00 00 5a 5a gives 5a 5a 00 00: the same one's-complement
	// sum, which neither TCP's checksum nor MPTCP's DSS checksum could
	// detect. The middlebox then leaves the last byte alone.
	payload := make([]byte, 100)
	copy(payload[50:], []byte{0, 0, 0x5a, 0x5a})
	seg := makeSeg("", false, header.TCPFlagAck, payload, optNOPNOP, optTS).sent
	s, ok := parseTCP(seg, len(seg))
	require.True(t, ok)
	b := append([]byte(nil), seg...)
	require.True(t, corruptPayload(b, s))
	requireCorrupted(t, seg, b, 50, 3, "three bytes changed")
	require.NotEqual(t, checksum.Checksum(seg[s.payload:], 0), checksum.Checksum(b[s.payload:], 0))
}

func TestCorruptDuplicate(t *testing.T) {
	// A duplicated packet is a copy of the rewritten one; it counts once.
	a, b := NewPipe(LinkParams{CorruptSegments: 1, StripMPTCP: StripData, Duplicate: 1}, LinkParams{})
	defer closePipe(a, b)
	d := &captureDispatcher{}
	b.Attach(d)
	s := makeSeg("", true, header.TCPFlagAck, pattern(1200, 3), optNOPNOP, optTS, dssMapping)
	sendRaw(t, a, d, s.sent)
	d.waitLen(t, 2)
	got := d.got()
	require.Equal(t, got[0], got[1])
	requireCorrupted(t, s.strip, got[0], 600, 4, "stripped and corrupted")
	st := a.Stats()
	require.EqualValues(t, 1, st.Stripped)
	require.EqualValues(t, 1, st.Corrupted)
	require.EqualValues(t, 1, st.Duplicated)
}

func TestMiddleboxRuntimeSwitch(t *testing.T) {
	a, b := NewPipe(LinkParams{}, LinkParams{})
	defer closePipe(a, b)
	d := &captureDispatcher{}
	b.Attach(d)
	s := makeSeg("", false, header.TCPFlagAck, pattern(1000, 1), optNOPNOP, optTS, dssMapping)
	syn := makeSeg("", false, header.TCPFlagSyn, nil, optMSS, mpcSYN)
	one := func(raw []byte) []byte { t.Helper(); return sendRaw(t, a, d, raw)[0] }

	require.Equal(t, s.sent, one(s.sent))
	a.SetParams(LinkParams{StripMPTCP: StripData})
	require.Equal(t, s.strip, one(s.sent))
	require.Equal(t, syn.sent, one(syn.sent))
	a.SetParams(LinkParams{StripMPTCP: StripSYN})
	require.Equal(t, s.sent, one(s.sent))
	require.Equal(t, withoutTCPChecksum(t, syn.strip), withoutTCPChecksum(t, one(syn.sent)))
	a.SetParams(LinkParams{})
	require.Equal(t, syn.sent, one(syn.sent))
	require.EqualValues(t, 2, a.Stats().Stripped)

	// Corruption starts when set, and counts from then on.
	a.SetParams(LinkParams{CorruptSegments: 1})
	requireCorrupted(t, s.sent, one(s.sent), 500, 4, "first segment after arming")
	require.Equal(t, s.sent, one(s.sent), "budget used up")
	// Other parameters changing (a blackhole toggled) do not re-arm it.
	a.SetParams(LinkParams{CorruptSegments: 1, Blackhole: true})
	a.SetParams(LinkParams{CorruptSegments: 1})
	require.Equal(t, s.sent, one(s.sent), "re-armed by an unrelated change")
	// New corruption parameters re-arm it: 1000 bytes pass, then one
	// segment is rewritten.
	a.SetParams(LinkParams{CorruptSegments: 1, CorruptAfter: 1000})
	require.Equal(t, s.sent, one(s.sent))
	requireCorrupted(t, s.sent, one(s.sent), 500, 4, "after 1000 bytes")
	require.Equal(t, s.sent, one(s.sent))
	require.EqualValues(t, 2, a.Stats().Corrupted)
}

func TestMiddleboxPartialChecksum(t *testing.T) {
	// A packet whose checksum field holds only the pseudo-header sum
	// (CHECKSUM_PARTIAL, as a GSO sender leaves it) leaves the link with a
	// complete checksum when the middlebox rewrites it; so does one a
	// receiving NIC vouched for (it may be partial too).
	for _, mode := range []string{"NeedsCsum", "RXChecksumValidated"} {
		t.Run(mode, func(t *testing.T) {
			a, b := NewPipe(LinkParams{StripMPTCP: StripAll}, LinkParams{})
			defer closePipe(a, b)
			d := &captureDispatcher{}
			b.Attach(d)
			s := makeSeg("", false, header.TCPFlagAck, pattern(1000, 1), optNOPNOP, optTS, dssMapping)
			partial := append([]byte(nil), s.sent...)
			th, src, dst := tcpOf(t, partial)
			th.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(th))))
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(partial)})
			pkt.NetworkProtocolNumber = ipv4.ProtocolNumber
			if mode == "NeedsCsum" {
				pkt.GSOOptions = stack.GSO{NeedsCsum: true, CsumOffset: 16, L3HdrLen: header.IPv4MinimumSize}
			} else {
				pkt.RXChecksumValidated = true
			}
			var l stack.PacketBufferList
			l.PushBack(pkt)
			_, err := a.WritePackets(l)
			l.DecRef()
			require.Nil(t, err)
			d.waitLen(t, 1)
			got := d.got()[0]
			require.Equal(t, withoutTCPChecksum(t, s.strip), withoutTCPChecksum(t, got))
			requireTCPChecksum(t, got)
		})
	}
}

// optionMarker wraps the link endpoint of a plain gVisor stack so that its
// TCP looks like MPTCP on the wire: every segment it sends gets a 4-byte
// MPTCP option (an empty DSS) in front of its other options, which the
// receiving gVisor skips as unknown. Its MTU is 4 bytes smaller to make
// room. It counts what it marked, and what it receives: segments still
// carrying kind 30, and bad checksums.
type optionMarker struct {
	nested.Endpoint

	mu sync.Mutex
	n  markerCounts
}

type markerCounts struct {
	markedSYN, markedData int // segments sent with the option (SYN, not SYN)
	unmarked              int // TCP segments sent without it (no room)
	rxSYN, rxData         int // segments received
	rxSYN30, rxData30     int // ... still carrying kind 30
	rxBadChecksum         int
}

func newOptionMarker(ep stack.LinkEndpoint) *optionMarker {
	m := &optionMarker{}
	m.Endpoint.Init(ep, m)
	return m
}

func (m *optionMarker) counts() markerCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// MTU implements stack.LinkEndpoint.
func (m *optionMarker) MTU() uint32 { return m.Endpoint.MTU() - 4 }

// WritePackets implements stack.LinkEndpoint.
func (m *optionMarker) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var l stack.PacketBufferList
	for _, p := range pkts.AsSlice() {
		v := p.ToView()
		b := m.mark(v.AsSlice())
		v.Release()
		q := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		q.NetworkProtocolNumber = p.NetworkProtocolNumber
		l.PushBack(q)
	}
	n, err := m.Endpoint.WritePackets(l)
	l.DecRef()
	return n, err
}

func (m *optionMarker) mark(b []byte) []byte {
	ipLen, tcpLen, v6, ok := tcpHeaders(b)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !ok || tcpLen+4 > 60 {
		if ok {
			m.n.unmarked++
		}
		return append([]byte(nil), b...)
	}
	at := ipLen + header.TCPMinimumSize
	out := append(append(append(make([]byte, 0, len(b)+4), b[:at]...), 30, 4, 0x20, 0), b[at:]...)
	th := header.TCP(out[ipLen:])
	th.SetDataOffset(uint8(tcpLen + 4))
	var src, dst tcpip.Address
	if v6 {
		ip := header.IPv6(out)
		ip.SetPayloadLength(ip.PayloadLength() + 4)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(out)
		ip.SetTotalLength(ip.TotalLength() + 4)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	th.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(out)-ipLen))
	th.SetChecksum(^checksum.Checksum(out[ipLen:], sum))
	if th.Flags()&header.TCPFlagSyn != 0 {
		m.n.markedSYN++
	} else {
		m.n.markedData++
	}
	return out
}

// has30 reports whether an option list holds kind 30 (a simple scan of
// its own, to check the middlebox's).
func has30(opts []byte) bool {
	for i := 0; i < len(opts) && opts[i] != header.TCPOptionEOL; {
		if opts[i] == header.TCPOptionNOP {
			i++
			continue
		}
		if opts[i] == 30 {
			return true
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return false
		}
		i += int(opts[i+1])
	}
	return false
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (m *optionMarker) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	b := v.AsSlice()
	if th, _, _, ok := tcpPart(b); ok {
		with30 := has30(th[header.TCPMinimumSize:th.DataOffset()])
		valid := tcpChecksumValid(b)
		m.mu.Lock()
		if th.Flags()&header.TCPFlagSyn != 0 {
			m.n.rxSYN++
			if with30 {
				m.n.rxSYN30++
			}
		} else {
			m.n.rxData++
			if with30 {
				m.n.rxData30++
			}
		}
		if !valid {
			m.n.rxBadChecksum++
		}
		m.mu.Unlock()
	}
	v.Release()
	m.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// markedStacks joins two gVisor stacks, whose segments carry an MPTCP
// option (optionMarker), with NewPipe(ab, ba).
func markedStacks(t *testing.T, ab, ba LinkParams) (sa, sb *stack.Stack, a, b *Endpoint, ma, mb *optionMarker) {
	a, b = NewPipe(ab, ba)
	ma, mb = newOptionMarker(a), newOptionMarker(b)
	sa = newTestStack(t, ma, pipeA4, pipeA6)
	sb = newTestStack(t, mb, pipeB4, pipeB6)
	return sa, sb, a, b, ma, mb
}

// waitQuiet waits until nothing is in flight on the pipe and the markers'
// counts have not moved for a while.
func waitQuiet(t *testing.T, a, b *Endpoint, ma, mb *optionMarker) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last [2]markerCounts
	stable := 0
	for stable < 20 {
		require.True(t, time.Now().Before(deadline), "link never went quiet")
		time.Sleep(5 * time.Millisecond)
		now := [2]markerCounts{ma.counts(), mb.counts()}
		sa, sb := a.Stats(), b.Stats()
		if now == last && sa.SentPackets+sa.Duplicated == sa.DeliveredPackets+sa.Dropped() &&
			sb.SentPackets+sb.Duplicated == sb.DeliveredPackets+sb.Dropped() {
			stable++
		} else {
			stable = 0
		}
		last = now
	}
}

func TestStripMPTCPStacks(t *testing.T) {
	// Plain gVisor TCP whose every segment carries an MPTCP option, over a
	// link that strips them on SYNs, on the rest, or everywhere: the
	// transfer completes (the checksums stay valid) and exactly the
	// segments of the chosen kind arrive without kind 30.
	for _, v6 := range []bool{false, true} {
		for _, w := range []StripWhere{StripNone, StripSYN, StripData, StripAll} {
			name := map[bool]string{false: "IPv4", true: "IPv6"}[v6] + "/" + w.String()
			t.Run(name, func(t *testing.T) {
				p := LinkParams{Delay: time.Millisecond, StripMPTCP: w}
				sa, sb, a, b, ma, mb := markedStacks(t, p, p)
				dst := pipeB4.Addr()
				if v6 {
					dst = pipeB6.Addr()
				}
				pipeTransfer(t, sa, sb, dst, 256<<10, 30*time.Second)
				waitQuiet(t, a, b, ma, mb)
				for _, dir := range []struct {
					name     string
					from, to *optionMarker
					st       LinkStats
				}{{"a->b", ma, mb, a.Stats()}, {"b->a", mb, ma, b.Stats()}} {
					tx, rx := dir.from.counts(), dir.to.counts()
					require.Zero(t, tx.unmarked, "%s: segments without room for the option", dir.name)
					require.Positive(t, tx.markedSYN, dir.name)
					require.GreaterOrEqual(t, tx.markedData, 3, dir.name)
					require.Equal(t, tx.markedSYN, rx.rxSYN, dir.name)
					require.Equal(t, tx.markedData, rx.rxData, dir.name)
					require.Zero(t, rx.rxBadChecksum, dir.name)
					wantSYN30, wantData30, stripped := tx.markedSYN, tx.markedData, 0
					if w.applies(true) {
						wantSYN30, stripped = 0, stripped+tx.markedSYN
					}
					if w.applies(false) {
						wantData30, stripped = 0, stripped+tx.markedData
					}
					require.Equal(t, wantSYN30, rx.rxSYN30, "%s: SYNs arriving with kind 30", dir.name)
					require.Equal(t, wantData30, rx.rxData30, "%s: other segments arriving with kind 30", dir.name)
					require.EqualValues(t, stripped, dir.st.Stripped, dir.name)
					require.Zero(t, dir.st.Corrupted, dir.name)
					require.Zero(t, dir.st.Dropped(), dir.name)
				}
			})
		}
	}
}

func TestStripMPTCPStacksRuntime(t *testing.T) {
	// Stripping switched on in the middle of a transfer: the segments that
	// enter the link from then on lose their options, the transfer goes on.
	p := LinkParams{Delay: time.Millisecond, Rate: 50e6, QueueBytes: 8 << 20} // no drops
	sa, sb, a, b, ma, mb := markedStacks(t, p, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipeTransfer(t, sa, sb, pipeB4.Addr(), 2<<20, 30*time.Second)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().DeliveredBytes < 500<<10 {
		require.True(t, time.Now().Before(deadline), "transfer did not start")
		time.Sleep(time.Millisecond)
	}
	before := mb.counts().rxData30
	q := p
	q.StripMPTCP = StripData
	a.SetParams(q)
	<-done
	waitQuiet(t, a, b, ma, mb)
	tx, rx := ma.counts(), mb.counts()
	st := a.Stats()
	require.Positive(t, before)
	require.Positive(t, st.Stripped)
	require.Zero(t, st.Dropped())
	require.Equal(t, tx.markedData, rx.rxData)
	require.Equal(t, tx.markedData-int(st.Stripped), rx.rxData30, "exactly the stripped segments arrive without the option")
	require.Equal(t, tx.markedSYN, rx.rxSYN30)
	require.Zero(t, rx.rxBadChecksum)
	require.Zero(t, b.Stats().Stripped)
}

func TestCorruptStacks(t *testing.T) {
	// Payload rewritten with a valid TCP checksum: gVisor's TCP accepts
	// it, and the receiver gets different bytes in exactly the rewritten
	// places, after at least CorruptAfter bytes.
	const after, segs = 100_000, 3
	sa, sb, a, b := pipeStacks(t, LinkParams{CorruptAfter: after, CorruptSegments: segs},
		LinkParams{CorruptSegments: segs}) // b->a carries no payload: nothing to rewrite
	ln, port := gListen(t, sb, pipeB4.Addr())
	data := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{42})
	_, _ = rng.Read(data)
	type result struct {
		b   []byte
		err error
	}
	rc := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			rc <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		b, err := io.ReadAll(c)
		rc <- result{b, err}
	}()
	c, err := gDial(sa, pipeB4.Addr(), port)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	_, err = c.Write(data)
	require.NoError(t, err)
	require.NoError(t, c.(halfCloser).CloseWrite())
	r := <-rc
	require.NoError(t, r.err)
	require.Len(t, r.b, len(data))

	// Group the differing bytes: each rewrite changes 3 or 4 bytes within
	// 4 bytes, each XORed with 0x5a.
	var clusters [][]int
	for i := range data {
		if data[i] == r.b[i] {
			continue
		}
		require.Equal(t, byte(0x5a), data[i]^r.b[i], "byte %d", i)
		if n := len(clusters); n > 0 && i < clusters[n-1][0]+corruptBytes {
			clusters[n-1] = append(clusters[n-1], i)
		} else {
			clusters = append(clusters, []int{i})
		}
	}
	st := a.Stats()
	require.EqualValues(t, segs, st.Corrupted)
	require.Zero(t, b.Stats().Corrupted)
	retrans := sa.Stats().TCP.Retransmits.Value()
	if retrans == 0 {
		require.Len(t, clusters, segs)
	} else {
		// A rewritten retransmission of bytes the receiver already has
		// changes nothing it reads.
		t.Logf("%d retransmissions: %d of %d rewrites reached the application", retrans, len(clusters), segs)
		require.LessOrEqual(t, len(clusters), segs)
	}
	for _, c := range clusters {
		if retrans == 0 {
			// CorruptAfter counts payload bytes that passed, copies
			// included: only without retransmissions is that the
			// stream offset.
			require.GreaterOrEqual(t, c[0], after, "rewritten before %d bytes passed", after)
		}
		require.Contains(t, []int{3, 4}, len(c))
	}
}

func TestMiddleboxNoAllocs(t *testing.T) {
	// A packet that the middleboxes leave alone costs no allocation more
	// than on a link without them.
	seg := makeSeg("", false, header.TCPFlagAck, pattern(1400, 1), optNOPNOP, optTS).sent
	allocs := func(p LinkParams) float64 {
		d := newDirection(p, nil)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(seg)})
		defer pkt.DecRef()
		return testing.AllocsPerRun(500, func() {
			d.mu.Lock()
			d.admit(0, ipv4.ProtocolNumber, pkt, DefaultMTU)
			it := d.pop()
			d.mu.Unlock()
			it.pkt.DecRef()
		})
	}
	base := allocs(LinkParams{})
	require.Equal(t, base, allocs(LinkParams{StripMPTCP: StripAll}), "stripping, no MPTCP option")
	require.Equal(t, base, allocs(LinkParams{StripMPTCP: StripSYN, CorruptSegments: 1, CorruptAfter: 1 << 62}), "before corruption")
}

func BenchmarkAdmit(b *testing.B) {
	plain := makeSeg("", false, header.TCPFlagAck, pattern(1400, 1), optNOPNOP, optTS).sent
	dss := makeSeg("", false, header.TCPFlagAck, pattern(1380, 1), optNOPNOP, optTS, dssMapping).sent
	for _, bc := range []struct {
		name string
		p    LinkParams
		seg  []byte
	}{
		{"plain", LinkParams{}, dss},
		{"strip-nothing", LinkParams{StripMPTCP: StripAll}, plain},
		{"strip-dss", LinkParams{StripMPTCP: StripAll}, dss},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := newDirection(bc.p, nil)
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(bc.seg)})
			defer pkt.DecRef()
			b.ReportAllocs()
			for b.Loop() {
				d.mu.Lock()
				d.admit(0, ipv4.ProtocolNumber, pkt, DefaultMTU)
				it := d.pop()
				d.mu.Unlock()
				it.pkt.DecRef()
			}
		})
	}
}

// FuzzStripMPTCP feeds arbitrary packets through the middleboxes: the
// option parser must not panic, sizes never change, a checksum that was
// valid stays valid, no MPTCP option is left where stripping applies and
// the list was well-formed, and nothing outside the blanked options and the
// rewritten payload bytes changes.
func FuzzStripMPTCP(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		for _, s := range rawSegments(v6) {
			f.Add(s.sent, uint8(StripAll), true)
		}
	}
	s := makeSeg("", false, header.TCPFlagAck, pattern(300, 8), optNOPNOP, optTS, dssMapping)
	f.Add(withIPv4Options(s.sent), uint8(StripData), false)
	f.Add(s.sent[:50], uint8(StripAll), true) // truncated
	f.Fuzz(func(t *testing.T, pkt []byte, where uint8, corrupt bool) {
		w := StripWhere(where % 4)
		// The decision is made on the first bytes only: it must agree
		// with the whole packet's.
		seg, ok := parseTCP(pkt, len(pkt))
		seg2, ok2 := parseTCP(pkt[:min(len(pkt), maxIPTCPHeaders)], len(pkt))
		require.Equal(t, ok, ok2)
		if !ok {
			d := newDirection(LinkParams{StripMPTCP: w, CorruptSegments: 1}, nil)
			p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
			defer p.DecRef()
			require.Nil(t, d.middlebox(p, len(pkt)), "rewrote a packet it cannot parse")
			return
		}
		require.Equal(t, seg, seg2)

		// Start from a valid checksum, so that it must stay valid.
		in := append([]byte(nil), pkt...)
		setTCPChecksum(in, seg)
		valid := tcpChecksumValid(in)
		opts := in[seg.tcp+header.TCPMinimumSize : seg.payload]
		wellFormedMPTCP := findMPTCP(opts)

		d := newDirection(LinkParams{StripMPTCP: w, CorruptSegments: map[bool]int{false: 0, true: 1}[corrupt]}, nil)
		p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(in)})
		defer p.DecRef()
		v := d.middlebox(p, len(in))
		out := in
		if v != nil {
			out = append([]byte(nil), v.AsSlice()...)
			v.Release()
		}
		require.Len(t, out, len(in))
		if valid {
			// tcpPart may refuse what parseTCP takes (an IPv4 header
			// checksum that is wrong, say): judge by our own offsets then.
			if _, _, _, ok := tcpPart(out); ok {
				require.True(t, tcpChecksumValid(out), "checksum no longer valid")
			}
		}
		strip := w.applies(seg.syn) && wellFormedMPTCP
		corrupted := corrupt && seg.end > seg.payload
		require.Equal(t, strip || corrupted, v != nil)
		st := d.getStats()
		require.Equal(t, strip, st.Stripped == 1)
		require.Equal(t, corrupted, st.Corrupted == 1)
		outOpts := out[seg.tcp+header.TCPMinimumSize : seg.payload]
		if strip {
			require.False(t, has30(outOpts), "kind 30 left: % x", outOpts)
			require.False(t, findMPTCP(outOpts))
		}
		// What may change: blanked options (to NOP), the payload window,
		// the checksum.
		at := (seg.end - seg.payload) / 2 &^ 1
		for i := range out {
			switch {
			case out[i] == in[i]:
			case i == seg.tcp+16 || i == seg.tcp+17:
			case strip && i >= seg.tcp+header.TCPMinimumSize && i < seg.payload:
				require.Equal(t, byte(header.TCPOptionNOP), out[i], "option byte %d", i)
			case corrupted && i >= seg.payload+at && i < seg.payload+at+corruptBytes:
				require.Equal(t, byte(corruptXOR), in[i]^out[i])
			default:
				t.Fatalf("byte %d changed: %#x -> %#x", i, in[i], out[i])
			}
		}
		if corrupted {
			// The payload's sum changes, so MPTCP's DSS checksum sees it.
			require.False(t, sameSum(checksum.Checksum(in[seg.payload:seg.end], 0), checksum.Checksum(out[seg.payload:seg.end], 0)))
		}
		if !strip {
			require.Equal(t, opts, outOpts)
		}
	})
}
