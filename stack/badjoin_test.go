package stack_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The bad-join tests put our server on two links: link 0 is an emulated
// link to a real client stack (an ordinary MPTCP connection that must not
// notice anything), link 1 a gVisor channel endpoint on which the test
// plays a raw TCP client, 10.9.1.1, crafting every segment itself.

var (
	bjRawAddr    = netip.MustParseAddr("10.9.1.1")
	bjServerRaw  = netip.AddrPortFrom(netip.MustParseAddr("10.9.1.2"), 5001)
	bjServerReal = netip.AddrPortFrom(netip.MustParseAddr("10.9.0.2"), 5001)
)

// bjWait bounds every wait for a segment that must come.
const bjWait = 5 * time.Second

type bjNet struct {
	client, server *stack.Stack
	accepted       chan *stack.Conn
	raw            *rawPeer
}

func newBadJoinNet(t *testing.T, limits *pm.Limits) *bjNet {
	t.Helper()
	a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	ch := channel.New(4096, 1500, "")
	t.Cleanup(ch.Close) // runs last
	client, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	server, err := stack.New(stack.Config{Links: []stack.Link{
		{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}},
		{Endpoint: ch, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.1.2/24")}},
	}, Limits: limits})
	require.NoError(t, err)
	t.Cleanup(func() { client.Close(); server.Close() })
	ln, err := server.Listen("tcp", ":5001")
	require.NoError(t, err)
	n := &bjNet{client: client, server: server, accepted: make(chan *stack.Conn, 16), raw: &rawPeer{t: t, ep: ch, id: 1}}
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				return
			}
			select {
			case n.accepted <- c:
			case <-stop:
				c.Close()
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); ln.Close(); <-loopDone })
	return n
}

func (n *bjNet) accept(t *testing.T) *stack.Conn {
	t.Helper()
	select {
	case c := <-n.accepted:
		return c
	case <-time.After(bjWait):
		t.Fatal("accept timed out")
	}
	return nil
}

func (n *bjNet) requireNoAccept(t *testing.T) {
	t.Helper()
	select {
	case c := <-n.accepted:
		t.Fatalf("the listener accepted a connection from %s: %+v", c.RemoteAddr(), c.Stats())
	default:
	}
}

// dialReal opens the ordinary MPTCP connection over link 0.
func (n *bjNet) dialReal(t *testing.T) (*stack.Conn, *stack.Conn) {
	t.Helper()
	c1, err := n.client.Dial("tcp", bjServerReal.String())
	require.NoError(t, err)
	c2 := n.accept(t)
	require.True(t, c1.MultipathTCP(), c1.FallbackReason())
	require.True(t, c2.MultipathTCP(), c2.FallbackReason())
	require.Equal(t, "10.9.0.1", c2.RemoteAddr().(*net.TCPAddr).IP.String())
	return c1, c2
}

// rawSeg is a decoded TCP segment the server sent on link 1.
type rawSeg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    header.TCPFlags
	wnd      uint16
	set      option.Set
	perr     error
	payload  []byte
}

func (s rawSeg) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s > %s [%s] seq=%d ack=%d win=%d len=%d", s.src, s.dst, s.flags, s.seq, s.ack, s.wnd, len(s.payload))
	for st := option.Subtype(0); st < 16; st++ {
		if !s.set.Has(st) {
			continue
		}
		var v any
		switch st {
		case option.SubtypeMPCapable:
			v = s.set.MPCapable
		case option.SubtypeMPJoin:
			v = s.set.MPJoin
		case option.SubtypeDSS:
			v = s.set.DSS
		case option.SubtypeAddAddr:
			v = s.set.AddAddr
		case option.SubtypeRemoveAddr:
			v = s.set.RemoveAddr
		case option.SubtypeMPPrio:
			v = s.set.MPPrio
		case option.SubtypeMPFail:
			v = s.set.MPFail
		case option.SubtypeMPFastclose:
			v = s.set.MPFastclose
		case option.SubtypeMPTCPRST:
			v = s.set.TCPRST
		}
		fmt.Fprintf(&b, " %s%+v", st, v)
	}
	if s.perr != nil {
		fmt.Fprintf(&b, " option error: %v", s.perr)
	}
	return b.String()
}

// rawPeer is the test's raw TCP client on link 1.
type rawPeer struct {
	t       *testing.T
	ep      *channel.Endpoint
	id      uint16
	pending []rawSeg // read, not yet asked for
}

// rawFlow is one TCP connection of the raw client.
type rawFlow struct {
	local, remote  netip.AddrPort
	iss, sndNxt    uint32
	irs, rcvNxt    uint32
	nonce          uint32 // a join's
	serverNonce    uint32
	serverAddrID   uint8
	serverTruncMAC uint64
	*rawConn
}

// rawConn is the connection-level state of the raw client's MPTCP
// connection, shared by its subflows.
type rawConn struct {
	clientKey, serverKey uint64 // of the MP_CAPABLE exchange
	dataSent             uint64 // data-level bytes sent
}

func (f *rawFlow) String() string { return f.local.String() + " > " + f.remote.String() }

// send injects one IPv4 TCP segment from f.local to f.remote.
func (p *rawPeer) send(f *rawFlow, seq, ack uint32, flags header.TCPFlags, opts, payload []byte) {
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	require.LessOrEqual(p.t, len(opts), 40)
	tcpLen := header.TCPMinimumSize + len(opts)
	total := header.IPv4MinimumSize + tcpLen + len(payload)
	buf := make([]byte, total)
	src, dst := tcpip.AddrFrom4(f.local.Addr().As4()), tcpip.AddrFrom4(f.remote.Addr().As4())
	ip := header.IPv4(buf)
	p.id++
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		ID:          p.id,
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	th := header.TCP(buf[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{
		SrcPort:    f.local.Port(),
		DstPort:    f.remote.Port(),
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: 65535,
	})
	copy(th[header.TCPMinimumSize:], opts)
	copy(th[tcpLen:], payload)
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	th.SetChecksum(^checksum.Checksum(th, pseudo))
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(buf)})
	p.ep.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// read returns the next segment the server sent on link 1, or false when
// none comes within d.
func (p *rawPeer) read(d time.Duration) (rawSeg, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		pkt := p.ep.ReadContext(ctx)
		if pkt == nil {
			return rawSeg{}, false
		}
		raw := pkt.ToView().AsSlice()
		pkt.DecRef()
		s, ok := parseRawSeg(raw)
		if ok {
			return s, true
		}
	}
}

func parseRawSeg(raw []byte) (rawSeg, bool) {
	if len(raw) < header.IPv4MinimumSize || header.IPVersion(raw) != header.IPv4Version {
		return rawSeg{}, false
	}
	ip := header.IPv4(raw)
	if ip.TransportProtocol() != header.TCPProtocolNumber || int(ip.TotalLength()) > len(raw) {
		return rawSeg{}, false
	}
	raw = raw[:ip.TotalLength()]
	th := header.TCP(raw[ip.HeaderLength():])
	if len(th) < header.TCPMinimumSize || int(th.DataOffset()) > len(th) {
		return rawSeg{}, false
	}
	s := rawSeg{
		src:     netip.AddrPortFrom(netip.AddrFrom4(ip.SourceAddress().As4()), th.SourcePort()),
		dst:     netip.AddrPortFrom(netip.AddrFrom4(ip.DestinationAddress().As4()), th.DestinationPort()),
		seq:     th.SequenceNumber(),
		ack:     th.AckNumber(),
		flags:   th.Flags(),
		wnd:     th.WindowSize(),
		payload: append([]byte(nil), th[th.DataOffset():]...),
	}
	s.perr = option.ParseTCPOptions(th.Options(), &s.set)
	return s, true
}

// expect returns the next segment of flow f that the server sent, keeping
// the segments of other flows for later.
func (p *rawPeer) expect(f *rawFlow, d time.Duration) (rawSeg, bool) {
	mine := func(s rawSeg) bool { return s.src == f.remote && s.dst == f.local }
	for i, s := range p.pending {
		if mine(s) {
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			return s, true
		}
	}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return rawSeg{}, false
		}
		s, ok := p.read(left)
		if !ok {
			return rawSeg{}, false
		}
		if mine(s) {
			return s, true
		}
		p.pending = append(p.pending, s)
	}
}

// mustExpect is expect that fails the test when nothing comes.
func (p *rawPeer) mustExpect(f *rawFlow, what string) rawSeg {
	p.t.Helper()
	s, ok := p.expect(f, bjWait)
	require.True(p.t, ok, "no %s from the server on %s within %s", what, f, bjWait)
	p.t.Logf("server sent: %s", s)
	return s
}

// expectRST returns the next RST the server sent on flow f, skipping what
// came before it (gVisor retransmits the SYN-ACKs of a flood's handshakes).
func (p *rawPeer) expectRST(f *rawFlow) rawSeg {
	p.t.Helper()
	deadline := time.Now().Add(bjWait)
	for i := 0; i < 100; i++ {
		s, ok := p.expect(f, time.Until(deadline))
		require.True(p.t, ok, "no RST from the server on %s within %s", f, bjWait)
		if s.flags.Contains(header.TCPFlagRst) {
			return s
		}
	}
	p.t.Fatalf("no RST among 100 segments on %s", f)
	return rawSeg{}
}

// requireSilence checks that the server sends nothing more on flow f for d.
func (p *rawPeer) requireSilence(f *rawFlow, d time.Duration) {
	p.t.Helper()
	if s, ok := p.expect(f, d); ok {
		p.t.Fatalf("unexpected segment from the server on %s: %s", f, s)
	}
}

func mssOption(o []byte) []byte {
	var b [header.TCPOptionMSSLength]byte
	header.EncodeMSSOption(1460, b[:])
	return append(o, b[:]...)
}

// connectMPTCP makes an MPTCP connection by hand from the raw client
// (port) to the server's link-1 address and returns it with the server's
// accepted Conn.
func (n *bjNet) connectMPTCP(t *testing.T, port uint16) (*rawFlow, *stack.Conn) {
	t.Helper()
	p := n.raw
	key, err := option.NewKey()
	require.NoError(t, err)
	f := &rawFlow{local: netip.AddrPortFrom(bjRawAddr, port), remote: bjServerRaw, iss: 0x10000000, rawConn: &rawConn{clientKey: key}}
	syn := option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, Form: option.MPCSyn}
	p.send(f, f.iss, 0, header.TCPFlagSyn, syn.Append(mssOption(nil)), nil)
	sa := p.mustExpect(f, "MP_CAPABLE SYN-ACK")
	require.Equal(t, header.TCPFlagSyn|header.TCPFlagAck, sa.flags, "%s", sa)
	require.Equal(t, f.iss+1, sa.ack, "%s", sa)
	require.NoError(t, sa.perr)
	require.True(t, sa.set.Has(option.SubtypeMPCapable), "SYN-ACK without MP_CAPABLE: %s", sa)
	mpc := sa.set.MPCapable
	require.Equal(t, option.MPCSynAck, mpc.Form, "%s", sa)
	require.Equal(t, uint8(1), mpc.Version, "%s", sa)
	require.NotZero(t, mpc.Flags&option.FlagHMACSHA256, "%s", sa)
	require.Zero(t, mpc.Flags&option.FlagChecksum, "%s", sa)
	f.serverKey = mpc.SenderKey
	f.irs, f.rcvNxt, f.sndNxt = sa.seq, sa.seq+1, f.iss+1
	ack := option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, SenderKey: f.clientKey, ReceiverKey: f.serverKey, Form: option.MPCAck}
	p.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, ack.Append(nil), nil)
	sc := n.accept(t)
	require.True(t, sc.MultipathTCP(), sc.FallbackReason())
	require.Equal(t, f.local.String(), sc.RemoteAddr().String())
	return f, sc
}

// joinSyn sends a SYN with MP_JOIN from port to dst and returns the flow.
func (n *bjNet) joinSyn(t *testing.T, initial *rawFlow, port uint16, dst netip.AddrPort, token uint32) *rawFlow {
	t.Helper()
	key, err := option.NewKey()
	require.NoError(t, err)
	f := &rawFlow{local: netip.AddrPortFrom(bjRawAddr, port), remote: dst, iss: 0x20000000 + uint32(port), nonce: uint32(key),
		rawConn: initial.rawConn}
	j := option.MPJoin{Form: option.JoinSyn, AddrID: 7, Token: token, Nonce: f.nonce}
	n.raw.send(f, f.iss, 0, header.TCPFlagSyn, j.Append(mssOption(nil)), nil)
	return f
}

// joinSynAck sends a join SYN with the connection's real token and checks
// the server's SYN-ACK: MP_JOIN with the right truncated HMAC.
func (n *bjNet) joinSynAck(t *testing.T, initial *rawFlow, port uint16) *rawFlow {
	t.Helper()
	f := n.joinSyn(t, initial, port, bjServerRaw, option.Token(initial.serverKey))
	sa := n.raw.mustExpect(f, "MP_JOIN SYN-ACK")
	require.Equal(t, header.TCPFlagSyn|header.TCPFlagAck, sa.flags, "%s", sa)
	require.Equal(t, f.iss+1, sa.ack, "%s", sa)
	require.NoError(t, sa.perr)
	require.True(t, sa.set.Has(option.SubtypeMPJoin), "SYN-ACK without MP_JOIN: %s", sa)
	j := sa.set.MPJoin
	require.Equal(t, option.JoinSynAck, j.Form, "%s", sa)
	want := option.TruncHMAC(option.JoinHMAC(f.serverKey, f.clientKey, j.Nonce, f.nonce))
	require.Equal(t, want, j.TruncHMAC, "truncated HMAC of the SYN-ACK: %s", sa)
	// 10.9.1.2 is the address of the initial subflow: address ID 0.
	require.Equal(t, uint8(0), j.AddrID, "%s", sa)
	require.False(t, j.Backup, "%s", sa)
	f.serverNonce, f.serverAddrID, f.serverTruncMAC = j.Nonce, j.AddrID, j.TruncHMAC
	f.irs, f.rcvNxt, f.sndNxt = sa.seq, sa.seq+1, f.iss+1
	return f
}

// goodJoinHMAC is the client's HMAC of the third ACK (RFC 8684 §3.2).
func goodJoinHMAC(f *rawFlow) [option.MPJoinHMACLen]byte {
	h := option.JoinHMAC(f.clientKey, f.serverKey, f.nonce, f.serverNonce)
	var out [option.MPJoinHMACLen]byte
	copy(out[:], h[:])
	return out
}

// requireRST checks a RST with MP_TCPRST reason.
func requireRST(t *testing.T, s rawSeg, flags header.TCPFlags, seq, ack uint32, reason uint8) {
	t.Helper()
	require.Equal(t, flags, s.flags, "flags: %s", s)
	require.Equal(t, seq, s.seq, "seq: %s", s)
	require.Equal(t, ack, s.ack, "ack: %s", s)
	require.Empty(t, s.payload, "%s", s)
	require.NoError(t, s.perr, "%s", s)
	require.True(t, s.set.Has(option.SubtypeMPTCPRST), "RST without MP_TCPRST: %s", s)
	require.Equal(t, reason, s.set.TCPRST.Reason, "MP_TCPRST reason: %s", s)
}

// requireSubflows checks the number of subflows a server Conn has had.
func requireSubflows(t *testing.T, c *stack.Conn, want int) {
	t.Helper()
	st := c.Stats()
	require.Len(t, st.Subflows, want, "%+v", st.Subflows)
	for _, s := range st.Subflows {
		require.Equal(t, "active", s.State, "%+v", st.Subflows)
	}
}

// sendRawData sends data on raw flow f, mapped at the next data-level
// sequence number of the raw connection, and checks that the server's
// Conn reads it and the server acknowledges it at the data level.
func (n *bjNet) sendRawData(t *testing.T, f *rawFlow, sc *stack.Conn, data []byte) {
	t.Helper()
	dsn := option.IDSN(f.clientKey) + 1 + f.dataSent
	d := option.DSS{HasDataAck: true, DataAck64: true, DataAck: option.IDSN(f.serverKey) + 1,
		HasMapping: true, DSN64: true, DSN: dsn, SSN: f.sndNxt - f.iss, DataLen: uint16(len(data))}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck|header.TCPFlagPsh, d.Append(nil), data)
	f.sndNxt += uint32(len(data))
	f.dataSent += uint64(len(data))
	got := make([]byte, len(data))
	require.NoError(t, sc.SetReadDeadline(time.Now().Add(bjWait)))
	_, err := io.ReadFull(sc, got)
	require.NoError(t, err)
	require.NoError(t, sc.SetReadDeadline(time.Time{}))
	require.Equal(t, data, got)
	wantAck := dsn + uint64(len(data))
	deadline := time.Now().Add(bjWait)
	for {
		s, ok := n.raw.expect(f, time.Until(deadline))
		require.True(t, ok, "no DATA_ACK %d from the server on %s", wantAck, f)
		require.False(t, s.flags.Intersects(header.TCPFlagRst|header.TCPFlagSyn|header.TCPFlagFin), "%s", s)
		if s.set.Has(option.SubtypeDSS) && s.set.DSS.HasDataAck && s.set.DSS.DataAck == wantAck {
			require.Equal(t, f.sndNxt, s.ack, "%s", s)
			return
		}
	}
}

// TestBadJoinUnknownToken: a SYN with MP_JOIN for a token no connection
// has is answered by the option layer with one RST+ACK carrying MP_TCPRST
// "MPTCP-specific error"; gVisor never sees it (no SYN-ACK), and the
// server's connections carry on.
func TestBadJoinUnknownToken(t *testing.T) {
	n := newBadJoinNet(t, nil)
	c1, c2 := n.dialReal(t)
	rf, rc := n.connectMPTCP(t, 40000)
	bad := option.Token(rf.serverKey) ^ 1
	for i, dst := range []netip.AddrPort{bjServerRaw, bjServerReal} {
		f := n.joinSyn(t, rf, uint16(41000+i), dst, bad)
		rst := n.raw.mustExpect(f, "RST")
		requireRST(t, rst, header.TCPFlagRst|header.TCPFlagAck, 0, f.iss+1, option.ReasonMPTCPError)
		n.raw.requireSilence(f, 300*time.Millisecond)
	}
	n.requireNoAccept(t)
	requireSubflows(t, rc, 1)
	requireSubflows(t, c2, 1)
	n.sendRawData(t, rf, rc, []byte("still here after an unknown token"))
	exchangeWithin(t, c1, c2, 8<<20, 60*time.Second)
}

// testBadThirdAck runs a join whose SYN and SYN-ACK are right and whose
// third ACK carries opts: the server must answer with a RST with MP_TCPRST
// "MPTCP-specific error", kill its half-open endpoint (no SYN-ACK again,
// nothing accepted) and leave the connection alone.
func testBadThirdAck(t *testing.T, opts func(f *rawFlow) []byte) {
	n := newBadJoinNet(t, nil)
	c1, c2 := n.dialReal(t)
	rf, rc := n.connectMPTCP(t, 40000)
	f := n.joinSynAck(t, rf, 41000)
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, opts(f), nil)
	rst := n.raw.mustExpect(f, "RST")
	requireRST(t, rst, header.TCPFlagRst, f.rcvNxt, 0, option.ReasonMPTCPError)
	// gVisor retransmits a SYN-ACK after 1 s if its endpoint is still
	// half-open; a completed handshake would reach the listener.
	n.raw.requireSilence(f, 1500*time.Millisecond)
	n.requireNoAccept(t)
	requireSubflows(t, rc, 1)
	requireSubflows(t, c2, 1)
	n.sendRawData(t, rf, rc, []byte("the initial subflow still carries data"))
	requireSubflows(t, rc, 1)
	n.requireNoAccept(t)
	exchangeWithin(t, c1, c2, 8<<20, 60*time.Second)
}

func TestBadJoinWrongHMAC(t *testing.T) {
	testBadThirdAck(t, func(f *rawFlow) []byte {
		j := option.MPJoin{Form: option.JoinAck, HMAC: goodJoinHMAC(f)}
		j.HMAC[0] ^= 0x80
		j.HMAC[19] ^= 0x01
		return j.Append(nil)
	})
}

func TestBadJoinThirdAckWithoutMPJoin(t *testing.T) {
	testBadThirdAck(t, func(*rawFlow) []byte { return nil })
}

// TestBadJoinPositiveControl: the same join with the right HMAC gets the
// fourth ACK (a pure ACK with DATA_ACK) and becomes the connection's
// second subflow, which then carries data.
func TestBadJoinPositiveControl(t *testing.T) {
	n := newBadJoinNet(t, nil)
	c1, c2 := n.dialReal(t)
	rf, rc := n.connectMPTCP(t, 40000)
	f := n.joinSynAck(t, rf, 41000)
	j := option.MPJoin{Form: option.JoinAck, HMAC: goodJoinHMAC(f)}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, j.Append(nil), nil)
	ack := n.raw.mustExpect(f, "fourth ACK")
	require.Equal(t, header.TCPFlagAck, ack.flags, "%s", ack)
	require.Equal(t, f.rcvNxt, ack.seq, "%s", ack)
	require.Equal(t, f.sndNxt, ack.ack, "%s", ack)
	require.Empty(t, ack.payload, "%s", ack)
	require.NoError(t, ack.perr, "%s", ack)
	require.True(t, ack.set.Has(option.SubtypeDSS), "fourth ACK without DSS: %s", ack)
	require.True(t, ack.set.DSS.HasDataAck, "fourth ACK without DATA_ACK: %s", ack)
	wantAck := option.IDSN(rf.clientKey) + 1
	if !ack.set.DSS.DataAck64 {
		wantAck &= 0xffffffff
	}
	require.Equal(t, wantAck, ack.set.DSS.DataAck, "%s", ack)
	require.False(t, ack.set.DSS.HasMapping, "%s", ack)

	deadline := time.Now().Add(bjWait)
	for len(rc.Stats().Subflows) < 2 {
		require.True(t, time.Now().Before(deadline), "the join did not become a subflow: %+v", rc.Stats().Subflows)
		time.Sleep(10 * time.Millisecond)
	}
	requireSubflows(t, rc, 2)
	st := rc.Stats().Subflows
	require.False(t, st[0].Join)
	require.True(t, st[1].Join)
	require.Equal(t, f.local, st[1].Remote)
	require.Equal(t, f.remote, st[1].Local)
	n.requireNoAccept(t)
	requireSubflows(t, c2, 1)

	// Data on the joined subflow, then on the initial one, arrive in order.
	n.sendRawData(t, f, rc, []byte("via the joined subflow"))
	n.sendRawData(t, rf, rc, []byte("and via the initial one"))
	exchangeWithin(t, c1, c2, 4<<20, 60*time.Second)
}

// TestBadJoinOverLimit: a server whose connections may have no additional
// subflow refuses a join with the right token on its SYN: RST+ACK with
// MP_TCPRST "administratively prohibited".
func TestBadJoinOverLimit(t *testing.T) {
	n := newBadJoinNet(t, &pm.Limits{Subflows: 0})
	c1, c2 := n.dialReal(t)
	rf, rc := n.connectMPTCP(t, 40000)
	f := n.joinSyn(t, rf, 41000, bjServerRaw, option.Token(rf.serverKey))
	rst := n.raw.mustExpect(f, "RST")
	requireRST(t, rst, header.TCPFlagRst|header.TCPFlagAck, 0, f.iss+1, option.ReasonAdminProhibited)
	n.raw.requireSilence(f, 300*time.Millisecond)
	n.requireNoAccept(t)
	requireSubflows(t, rc, 1)
	n.sendRawData(t, rf, rc, []byte("one subflow is all we may have"))
	exchangeWithin(t, c1, c2, 4<<20, 60*time.Second)
}
