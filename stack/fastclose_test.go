package stack_test

import (
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// fcWait bounds every wait of the fastclose tests.
const fcWait = 10 * time.Second

// mib reads one counter of a stack.
func mib(s *stack.Stack, c subflow.Counter) uint64 { return s.MIB()[c.Name()] }

// readErr reads from c until an error, within fcWait, and returns it with
// the bytes read.
func readErr(t *testing.T, c *stack.Conn) (int64, error) {
	t.Helper()
	type res struct {
		n   int64
		err error
	}
	ch := make(chan res, 1)
	go func() {
		n, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF // a clean end: not what a reset is
		}
		ch <- res{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-time.After(fcWait):
		t.Fatal("Read did not return after the reset")
	}
	return 0, nil
}

func requireDone(t *testing.T, c *stack.Conn, who string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(fcWait):
		t.Fatalf("%s: Done not closed after the reset", who)
	}
}

// TestAbortFastcloseInProcess: both ends ours. One side aborts with data
// of its peer unread on both sides: its pending Read and later Read and
// Write fail with ErrAborted; the peer's Read fails with the fastclose
// error (ECONNRESET), its unread data discarded; the counters of the two
// stacks agree (one MP_FASTCLOSE and one MP_TCPRST on the only subflow);
// both ends see the reset's reason on the subflow.
func TestAbortFastcloseInProcess(t *testing.T) {
	for _, clientAborts := range []bool{true, false} {
		t.Run(map[bool]string{true: "ClientAborts", false: "ServerAborts"}[clientAborts], func(t *testing.T) {
			sa, sb, addr := pair(t, tun.LinkParams{Delay: time.Millisecond}, false, false, false)
			c1, c2 := dialAccept(t, sa, sb, addr)
			require.True(t, c1.MultipathTCP())
			aborter, peer := c1, c2
			as, ps := sa, sb
			if !clientAborts {
				aborter, peer, as, ps = c2, c1, sb, sa
			}
			// Data in both directions that nobody reads.
			_, err := aborter.Write([]byte("never read by the peer"))
			require.NoError(t, err)
			_, err = peer.Write([]byte("never read by the aborter"))
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				return aborter.Stats().Subflows[0].BytesReceived > 0 && peer.Stats().Subflows[0].BytesReceived > 0
			}, fcWait, 5*time.Millisecond, "the data did not arrive")

			pending := make(chan error, 1)
			go func() {
				aborter.SetReadDeadline(time.Now().Add(fcWait))
				_, err := io.ReadFull(aborter, make([]byte, 1<<20)) // blocks until the abort
				pending <- err
			}()
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, aborter.Abort())
			require.NoError(t, aborter.Abort(), "Abort is idempotent")

			select {
			case err := <-pending:
				require.ErrorIs(t, err, stack.ErrAborted, "a pending Read")
			case <-time.After(fcWait):
				t.Fatal("a pending Read did not return after Abort")
			}
			_, err = aborter.Read(make([]byte, 10))
			require.ErrorIs(t, err, stack.ErrAborted)
			_, err = aborter.Write([]byte("x"))
			require.ErrorIs(t, err, stack.ErrAborted)
			require.NoError(t, aborter.Close(), "Close after Abort")

			// The peer reads only once the fastclose is in: its data
			// was there before and must be gone.
			require.Eventually(t, func() bool { return mib(ps, subflow.MPFastcloseRx) > 0 }, fcWait, time.Millisecond)
			n, err := readErr(t, peer)
			require.Zero(t, n, "the peer's unread data is discarded, as with a TCP reset")
			require.ErrorIs(t, err, stack.ErrPeerFastclose)
			require.ErrorIs(t, err, syscall.ECONNRESET)
			t.Logf("peer's Read: %v", err)
			require.Eventually(t, func() bool {
				_, err := peer.Write([]byte("x"))
				return errors.Is(err, stack.ErrPeerFastclose)
			}, fcWait, 10*time.Millisecond, "the peer's Write fails with the fastclose error")
			requireDone(t, aborter, "aborter")
			requireDone(t, peer, "peer")

			require.EqualValues(t, 1, mib(as, subflow.MPFastcloseTx), "aborter MPFastcloseTx")
			require.EqualValues(t, 1, mib(ps, subflow.MPFastcloseRx), "peer MPFastcloseRx")
			require.EqualValues(t, 1, mib(as, subflow.MPRstTx), "aborter MPRstTx")
			require.EqualValues(t, 1, mib(ps, subflow.MPRstRx), "peer MPRstRx")
			require.Zero(t, mib(ps, subflow.MPFastcloseTx))
			require.Zero(t, mib(as, subflow.MPFastcloseRx))
			require.Zero(t, mib(ps, subflow.MPFastcloseBadKey))
			require.Equal(t, "unspecified", aborter.Stats().Subflows[0].ResetReason)
			require.Equal(t, "unspecified", peer.Stats().Subflows[0].PeerResetReason)
			require.Equal(t, "", peer.Stats().Subflows[0].ResetReason, "a RST does not answer a RST")
		})
	}
}

// TestAbortFallbackSendsPlainRST: after fallback Abort resets the one TCP
// connection without MPTCP options; the peer's read fails with a reset.
func TestAbortFallbackSendsPlainRST(t *testing.T) {
	a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	t.Cleanup(func() { sa.Close(); sb.Close() })
	ln, err := gonet.ListenTCP(sb.Netstack(), tcpip.FullAddress{Port: 6002}, ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		_, err = io.Copy(io.Discard, c)
		got <- err
	}()
	c, err := sa.Dial("tcp", "10.9.0.2:6002")
	require.NoError(t, err)
	require.False(t, c.MultipathTCP())
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, c.Abort())
	select {
	case err := <-got:
		require.Error(t, err, "the plain peer saw a clean end, not a reset")
		t.Logf("plain peer's read: %v", err)
	case <-time.After(fcWait):
		t.Fatal("the plain peer's read did not end")
	}
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, stack.ErrAborted)
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, stack.ErrAborted)
	requireDone(t, c, "fallback conn")
	require.Zero(t, mib(sa, subflow.MPFastcloseTx), "no MP_FASTCLOSE after fallback")
	require.Zero(t, mib(sa, subflow.MPRstTx), "no MP_TCPRST after fallback")
}

// TestFastcloseFromRawPeer: MP_FASTCLOSE on an ACK, the RFC's other form,
// from a hand-made client. A wrong key is ignored and counted; the right
// one resets the connection, which answers with a RST carrying MP_TCPRST.
func TestFastcloseFromRawPeer(t *testing.T) {
	n := newBadJoinNet(t, nil)
	f, sc := n.connectMPTCP(t, 41000)
	n.sendRawData(t, f, sc, []byte("before"))

	bad := option.MPFastclose{Key: f.serverKey ^ 1}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, bad.Append(nil), nil)
	require.Eventually(t, func() bool { return mib(n.server, subflow.MPFastcloseBadKey) == 1 }, fcWait, 5*time.Millisecond)
	require.Zero(t, mib(n.server, subflow.MPFastcloseRx))
	n.sendRawData(t, f, sc, []byte("still alive after a wrong key"))

	// Data the application has not read is discarded by the reset.
	dsn := option.IDSN(f.clientKey) + 1 + f.dataSent
	d := option.DSS{HasDataAck: true, DataAck64: true, DataAck: option.IDSN(f.serverKey) + 1,
		HasMapping: true, DSN64: true, DSN: dsn, SSN: f.sndNxt - f.iss, DataLen: 6}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck|header.TCPFlagPsh, d.Append(nil), []byte("unread"))
	f.sndNxt += 6
	f.dataSent += 6
	require.Eventually(t, func() bool { return sc.Stats().Subflows[0].BytesReceived >= uint64(f.dataSent) }, fcWait, 5*time.Millisecond)

	good := option.MPFastclose{Key: f.serverKey}
	n.raw.send(f, f.sndNxt, f.rcvNxt, header.TCPFlagAck, good.Append(nil), nil)
	s := n.raw.expectRST(f) // after any DATA_ACK that was on its way
	t.Logf("server answered: %s", s)
	require.NoError(t, s.perr)
	require.True(t, s.set.Has(option.SubtypeMPTCPRST), "RST without MP_TCPRST: %s", s)
	require.Equal(t, uint8(option.ReasonUnspecified), s.set.TCPRST.Reason)
	require.False(t, s.set.Has(option.SubtypeMPFastclose), "the answer to a fastclose is a plain subflow reset: %s", s)
	nr, err := readErr(t, sc)
	require.Zero(t, nr, "unread data is discarded")
	require.ErrorIs(t, err, stack.ErrPeerFastclose)
	require.ErrorIs(t, err, syscall.ECONNRESET)
	requireDone(t, sc, "server conn")
	require.EqualValues(t, 1, mib(n.server, subflow.MPFastcloseRx))
	require.EqualValues(t, 1, mib(n.server, subflow.MPFastcloseBadKey))
	require.EqualValues(t, 1, mib(n.server, subflow.MPRstTx))
	require.Equal(t, "unspecified", sc.Stats().Subflows[0].ResetReason)
}

// TestRstReasonInSubflowStats: the reason of the peer's MP_TCPRST is
// reported on the subflow and counted (MPRstRx); a reset of the only
// subflow ends the connection, and the peer hears of it (Farewell).
func TestRstReasonInSubflowStats(t *testing.T) {
	n := newBadJoinNet(t, nil)
	f, sc := n.connectMPTCP(t, 41001)
	n.sendRawData(t, f, sc, []byte("hello"))
	require.Equal(t, "", sc.Stats().Subflows[0].PeerResetReason)
	r := option.TCPRST{Flags: option.FlagTransient, Reason: option.ReasonAdminProhibited}
	n.raw.send(f, f.sndNxt, 0, header.TCPFlagRst, r.Append(nil), nil)
	require.Eventually(t, func() bool {
		return sc.Stats().Subflows[0].PeerResetReason == "administratively prohibited"
	}, fcWait, 5*time.Millisecond, "%+v", sc.Stats().Subflows)
	require.EqualValues(t, 1, mib(n.server, subflow.MPRstRx))
	_, err := readErr(t, sc)
	require.ErrorIs(t, err, syscall.ECONNRESET, "the only subflow was reset")
	require.NotErrorIs(t, err, stack.ErrPeerFastclose, "a subflow reset is no fastclose")
	require.Zero(t, mib(n.server, subflow.MPFastcloseRx))
	// That RST ended the connection with its only subflow, and the peer
	// may not have sent it (an in-window forgery is as valid to TCP): the
	// server tells the peer that the connection is gone, MP_FASTCLOSE at
	// the peer's RCV.NXT, once.
	s := n.raw.expectRST(f) // after any DATA_ACK that was on its way
	require.NoError(t, s.perr)
	require.True(t, s.set.Has(option.SubtypeMPFastclose), "%s", s)
	require.Equal(t, f.clientKey, s.set.MPFastclose.Key, "the receiver's key: %s", s)
	require.Equal(t, f.rcvNxt, s.seq, "at the peer's RCV.NXT: %s", s)
	require.EqualValues(t, 1, mib(n.server, subflow.MPFastcloseTx))
	require.EqualValues(t, 1, mib(n.server, subflow.MPRstTx))
}
