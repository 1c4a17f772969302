package stack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// drain discards what the server sent on the raw link, so that the
// channel's queue has room for the answers the test waits for.
func (p *rawPeer) drain() int {
	n := 0
	for n < 1<<20 {
		if _, ok := p.read(50 * time.Millisecond); !ok {
			break
		}
		n++
	}
	p.pending = nil
	return n
}

// TestSynFloodBounded floods a server with SYNs that never complete, while
// it accepts: MP_CAPABLE SYNs from thousands of ports, and MP_JOIN SYNs
// carrying the real token of a live connection (the token is on the wire).
// The state they leave is bounded (MaxPendingHandshakes stack-wide,
// MaxHalfOpenJoins per connection), and during the flood a genuine join
// still becomes a subflow, a genuine new connection still connects (as
// plain TCP while the handshake table is full), and the live connections
// carry data intact.
func TestSynFloodBounded(t *testing.T) {
	n := newBadJoinNet(t, nil)
	c1, c2 := n.dialReal(t)
	rf, rc := n.connectMPTCP(t, 40000)
	mib := func(name string) uint64 { return n.server.MIB()[name] }

	// MP_CAPABLE SYNs that never complete. The server's answers pile up on
	// the raw link: drained as they come.
	const synFlood = 3000
	syn := option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, Form: option.MPCSyn}
	for i := 0; i < synFlood; i++ {
		f := &rawFlow{local: bjRawAddrPort(10000 + i), remote: bjServerRaw, iss: uint32(i) * 7919}
		n.raw.send(f, f.iss, 0, header.TCPFlagSyn, syn.Append(mssOption(nil)), nil)
		if i%1000 == 999 {
			n.raw.drain()
		}
	}
	n.raw.drain()
	require.EqualValues(t, synFlood-subflow.MaxPendingHandshakes, mib("MPTcpExtSynFloodFallback"),
		"MP_CAPABLE SYNs beyond the bound get no state")

	// Join SYNs with the live connection's token from as many ports.
	const joinFlood = 2000
	token := option.Token(rf.serverKey)
	var first *rawFlow
	for i := 0; i < joinFlood; i++ {
		f := n.joinSyn(t, rf, uint16(20000+i), bjServerRaw, token)
		if first == nil {
			first = f
		}
		if i%1000 == 999 {
			n.raw.drain()
		}
	}
	n.raw.drain()
	require.EqualValues(t, joinFlood-subflow.MaxHalfOpenJoins, mib("MPTcpExtJoinHalfOpenEvicted"),
		"half-open joins beyond the bound evict the oldest")
	require.Zero(t, mib("MPTcpExtMPJoinRejected"), "no join was refused for want of subflow slots")
	requireSubflows(t, rc, 1)

	// A genuine join of the flooded connection still succeeds.
	f := n.joinSynAck(t, rf, 41000)
	j := option.MPJoin{Form: option.JoinAck, HMAC: goodJoinHMAC(f)}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, j.Append(nil), nil)
	n.raw.mustExpect(f, "fourth ACK")
	deadline := time.Now().Add(bjWait)
	for len(rc.Stats().Subflows) < 2 {
		require.True(t, time.Now().Before(deadline), "the join did not become a subflow: %+v", rc.Stats().Subflows)
		time.Sleep(10 * time.Millisecond)
	}
	requireSubflows(t, rc, 2)
	n.sendRawData(t, f, rc, []byte("a join made during a join flood"))

	// The third ACK of an evicted join is reset, not completed by gVisor
	// into a connection nobody can use.
	evicted := option.MPJoin{Form: option.JoinAck}
	n.raw.send(first, first.iss+1, 1, header.TCPFlagAck, evicted.Append(nil), nil)
	requireRST(t, n.raw.expectRST(first), header.TCPFlagRst, 1, 0, option.ReasonNoResources)
	n.requireNoAccept(t)

	// A genuine new connection still connects while the table is full:
	// without MPTCP state, as plain TCP.
	c3, err := n.client.Dial("tcp", bjServerReal.String())
	require.NoError(t, err)
	c4 := n.accept(t)
	require.False(t, c3.MultipathTCP(), "a connection made during a SYN flood with the table full")
	require.EqualValues(t, synFlood-subflow.MaxPendingHandshakes+1, mib("MPTcpExtSynFloodFallback"))
	exchangeWithin(t, c3, c4, 1<<20, 60*time.Second)
	c3.Close()
	c4.Close()

	// Once the flood has stopped for StaleHandshake, a new connection gets
	// MPTCP again: its SYN takes the place of the oldest flood entry.
	time.Sleep(subflow.StaleHandshake + 200*time.Millisecond)
	c5, err := n.client.Dial("tcp", bjServerReal.String())
	require.NoError(t, err)
	c6 := n.accept(t)
	require.True(t, c5.MultipathTCP(), "a connection after the flood: %s", c5.FallbackReason())
	require.True(t, c6.MultipathTCP(), c6.FallbackReason())
	require.EqualValues(t, 1, mib("MPTcpExtHandshakeEvicted"))
	exchangeWithin(t, c5, c6, 1<<20, 60*time.Second)
	c5.Close()
	c6.Close()
	// The evicted handshake's third ACK is reset, not completed by gVisor
	// into a connection without its MPTCP state.
	f0 := &rawFlow{local: bjRawAddrPort(10000), remote: bjServerRaw}
	mpcAck := option.MPCapable{Version: 1, Flags: option.FlagHMACSHA256, SenderKey: 1, ReceiverKey: 2, Form: option.MPCAck}
	n.raw.send(f0, 1, 1, header.TCPFlagAck, mpcAck.Append(nil), nil)
	requireRST(t, n.raw.expectRST(f0), header.TCPFlagRst, 1, 0, option.ReasonNoResources)
	n.requireNoAccept(t)

	// The live connection never noticed.
	exchangeWithin(t, c1, c2, 4<<20, 60*time.Second)
}

func bjRawAddrPort(port int) netip.AddrPort { return netip.AddrPortFrom(bjRawAddr, uint16(port)) }
