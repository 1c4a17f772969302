package hostile

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// testFlow returns an established flow with hand-set state.
func testFlow(v6 bool) Flow {
	f := Flow{
		Stack: netip.MustParseAddrPort("10.0.0.2:40000"),
		Peer:  netip.MustParseAddrPort("10.0.0.1:5001"),
	}
	if v6 {
		f.Stack = netip.MustParseAddrPort("[fd00::2]:40000")
		f.Peer = netip.MustParseAddrPort("[fd00::1]:5001")
	}
	f.Side[FromPeer] = Side{HasISN: true, ISN: 1000, WndScale: 7, HasSnd: true, SndNxt: 5000, HasAck: true, Ack: 90000, Wnd: 512,
		HasTS: true, TSVal: 77, TSEcr: 66}
	f.Side[FromStack] = Side{HasISN: true, ISN: 80000, WndScale: 7, HasSnd: true, SndNxt: 91000, HasAck: true, Ack: 4500, Wnd: 300,
		HasTS: true, TSVal: 66, TSEcr: 70}
	return f
}

func TestBuildPlacements(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, dir := range []Dir{FromPeer, FromStack} {
			for _, p := range Placements {
				f := testFlow(v6)
				dss := &option.DSS{HasDataAck: true, DataAck64: true, DataAck: 1 << 40, HasMapping: true, DSN64: true, DSN: 7, SSN: 9, DataLen: 3}
				payload := []byte("abc")
				SetDSSChecksum(dss, payload)
				ip, err := f.Build(dir, Spec{Flags: header.TCPFlagAck | header.TCPFlagPsh, Payload: payload, Options: []Appender{dss}, Place: p})
				require.NoError(t, err)
				var set option.Set
				h, got, ok, err := ParseSegment(ip, &set)
				require.NoError(t, err)
				require.Equal(t, payload, got)
				require.Equal(t, p != BadChecksum, ok, "checksum verifies (%v)", p)

				snd, rcv := f.Side[dir], f.Side[1-dir]
				wantSeq, wantAck := snd.SndNxt, snd.Ack
				switch p {
				case OutOfWindow:
					wantSeq += far
				case WrongAck:
					wantAck = rcv.SndNxt + far
				}
				require.Equal(t, wantSeq, h.SequenceNumber(), "%v %v seq", dir, p)
				require.Equal(t, wantAck, h.AckNumber(), "%v %v ack", dir, p)
				require.Equal(t, snd.Wnd, h.WindowSize())
				src, dst := f.Peer, f.Stack
				if dir == FromStack {
					src, dst = dst, src
				}
				require.Equal(t, src.Port(), h.SourcePort())
				require.Equal(t, dst.Port(), h.DestinationPort())
				seg, ok := parseSegment(ip, len(ip))
				require.True(t, ok)
				require.Equal(t, src, seg.src)
				require.Equal(t, dst, seg.dst)

				require.True(t, set.Has(option.SubtypeDSS))
				require.Equal(t, *dss, set.DSS)
				require.True(t, option.VerifyDSSChecksum(dss.DSN, dss.SSN, dss.DataLen, sumOf(payload), set.DSS.Checksum))
				ts := header.ParseTCPOptions(h.Options())
				require.True(t, ts.TS, "the sender's timestamp is carried")
				require.Equal(t, snd.TSVal, ts.TSVal)
				if !v6 {
					require.True(t, header.IPv4(ip).IsChecksumValid(), "IPv4 header checksum")
				}
			}
		}
	}
}

func TestBuildRstWithoutAck(t *testing.T) {
	f := testFlow(false)
	ip, err := f.Build(FromPeer, Spec{Flags: header.TCPFlagRst, Options: []Appender{&option.TCPRST{Reason: option.ReasonMPTCPError}}, SeqDelta: 10})
	require.NoError(t, err)
	var set option.Set
	h, _, ok, err := ParseSegment(ip, &set)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint32(0), h.AckNumber())
	require.Equal(t, f.Side[FromPeer].SndNxt+10, h.SequenceNumber())
	require.True(t, set.Has(option.SubtypeMPTCPRST))
}

func TestBuildOptionSpace(t *testing.T) {
	f := testFlow(true)
	// An IPv6 ADD_ADDR with port and HMAC is 30 bytes: no room for the
	// timestamp, which is dropped rather than the option.
	add := &option.AddAddr{AddrID: 5, Addr: netip.MustParseAddr("fd00::9"), HasPort: true, Port: 1, HasHMAC: true, HMAC: 42}
	ip, err := f.Build(FromPeer, Spec{Flags: header.TCPFlagAck, Options: []Appender{add}})
	require.NoError(t, err)
	var set option.Set
	h, _, _, err := ParseSegment(ip, &set)
	require.NoError(t, err)
	require.False(t, header.ParseTCPOptions(h.Options()).TS)
	require.Equal(t, *add, set.AddAddr)

	_, err = f.Build(FromPeer, Spec{Options: []Appender{add, add}})
	require.ErrorIs(t, err, ErrOptionsTooLong)

	var empty Flow
	_, err = empty.Build(FromPeer, Spec{})
	require.ErrorIs(t, err, ErrNotLearnt)
}

// TestLearn feeds a whole MPTCP exchange, built by hand, to a flow and
// checks what it learnt.
func TestLearn(t *testing.T) {
	donor := testFlow(false)
	var f Flow
	f.Side[0].WndScale, f.Side[1].WndScale = -1, -1
	feed := func(dir Dir, spec Spec, seq, ack uint32) {
		t.Helper()
		d := donor
		d.Side[dir].SndNxt, d.Side[dir].Ack = seq, ack
		d.Side[dir].HasTS = false
		ip, err := d.Build(dir, spec)
		require.NoError(t, err)
		seg, ok := parseSegment(ip, len(ip))
		require.True(t, ok)
		f.learn(dir, &seg)
	}
	ws := RawOption{header.TCPOptionWS, 3, 7, header.TCPOptionNOP}
	const kStack, kPeer = 0x1111, 0x2222
	feed(FromStack, Spec{Flags: header.TCPFlagSyn, Options: []Appender{ws, &option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, Form: option.MPCSyn}}}, 100, 0)
	feed(FromPeer, Spec{Flags: header.TCPFlagSyn | header.TCPFlagAck, Options: []Appender{ws, &option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256 | option.FlagChecksum, SenderKey: kPeer, Form: option.MPCSynAck}}}, 500, 101)
	feed(FromStack, Spec{Flags: header.TCPFlagAck, Options: []Appender{&option.MPCapable{Version: 1, SenderKey: kStack, ReceiverKey: kPeer, Form: option.MPCAck}}}, 101, 501)
	idsn := option.IDSN(kPeer) + 1
	feed(FromPeer, Spec{Flags: header.TCPFlagAck, Payload: make([]byte, 10),
		Options: []Appender{&option.DSS{HasMapping: true, DSN: idsn & 0xffffffff, SSN: 1, DataLen: 10, HasDataAck: true, DataAck: (option.IDSN(kStack) + 1) & 0xffffffff}}}, 501, 101)
	feed(FromStack, Spec{Flags: header.TCPFlagAck, Options: []Appender{&option.RemoveAddr{N: 2, IDs: [37]uint8{3, 9}}}}, 101, 511)

	p, s := f.Side[FromPeer], f.Side[FromStack]
	require.True(t, f.MPTCP)
	require.Equal(t, uint32(500), p.ISN)
	require.Equal(t, uint32(100), s.ISN)
	require.Equal(t, uint32(511), p.SndNxt)
	require.Equal(t, uint32(101), s.SndNxt)
	require.Equal(t, uint32(511), s.Ack)
	require.Equal(t, 7, s.WndScale)
	require.True(t, p.HasKey && s.HasKey)
	require.Equal(t, uint64(kPeer), p.Key)
	require.Equal(t, uint64(kStack), s.Key)
	require.True(t, f.Checksum())
	require.Equal(t, idsn, p.DSN, "32-bit DSN expanded against the IDSN")
	require.Equal(t, idsn+10, p.MapEnd())
	require.Equal(t, option.IDSN(kStack)+1, p.DataAck, "32-bit DATA_ACK expanded")
	require.Equal(t, []uint8{3, 9}, s.Removed())
	require.True(t, s.Saw(option.SubtypeRemoveAddr))
	require.Equal(t, uint32(donor.Side[FromStack].Wnd)<<7, f.Window(FromStack))
}

func TestExpand(t *testing.T) {
	for _, c := range []struct {
		low  uint32
		ref  uint64
		want uint64
	}{
		{5, 0x1_0000_0003, 0x1_0000_0005},
		{0xffff_fff0, 0x2_0000_0010, 0x1_ffff_fff0},
		{0x10, 0x1_ffff_fff0, 0x2_0000_0010},
		{7, 0, 7},
	} {
		require.Equal(t, c.want, expand(c.low, c.ref), "expand(%#x, %#x)", c.low, c.ref)
	}
}

// TestTapLearnsAndInjects runs packets through a Tap over a channel link:
// what the stack writes is learnt, ToPeer reaches the link and is not
// learnt, flows are capped.
func TestTapLearnsAndInjects(t *testing.T) {
	ch := channel.New(16, 1500, "")
	tap := NewTap(ch)
	f := testFlow(false)
	ip, err := f.Build(FromStack, Spec{Flags: header.TCPFlagAck, Payload: []byte("x")})
	require.NoError(t, err)
	require.NoError(t, tap.ToPeer(ip))
	pkt := ch.Read()
	require.NotNil(t, pkt, "ToPeer wrote to the link")
	require.Equal(t, ip, pkt.ToView().AsSlice())
	pkt.DecRef()
	require.Empty(t, tap.Flows(), "injected packets are not learnt")

	var l1 = newPacket(ip)
	defer l1.DecRef()
	tap.observe(FromStack, l1)
	got, ok := tap.Flow(f.Stack, f.Peer)
	require.True(t, ok)
	require.Equal(t, f.Side[FromStack].SndNxt+1, got.Side[FromStack].SndNxt)

	for i := range MaxFlows + 10 {
		g := f
		g.Stack = netip.AddrPortFrom(g.Stack.Addr(), uint16(10000+i))
		ip, err := g.Build(FromPeer, Spec{Flags: header.TCPFlagAck})
		require.NoError(t, err)
		p := newPacket(ip)
		tap.observe(FromPeer, p)
		p.DecRef()
	}
	require.Len(t, tap.Flows(), MaxFlows)
	in, out := tap.Packets()
	require.EqualValues(t, MaxFlows+10, in)
	require.EqualValues(t, 1, out)
	require.ErrorIs(t, tap.ToStack(nil), ErrNotIP)
}
