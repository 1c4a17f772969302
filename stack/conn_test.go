package stack_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestDeadlinesAndHalfClose(t *testing.T) {
	sa, sb, addr := pair(t, tun.LinkParams{Delay: time.Millisecond}, false, false, false)
	c1, c2 := dialAccept(t, sa, sb, addr)
	defer c1.Close()
	defer c2.Close()

	require.NoError(t, c2.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	start := time.Now()
	_, err := c2.Read(make([]byte, 10))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
	require.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, c2.SetReadDeadline(time.Time{}))

	_, err = c1.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c1.CloseWrite())
	_, err = c1.Write([]byte("more"))
	require.ErrorIs(t, err, net.ErrClosed, "no writing after CloseWrite")
	got, err := io.ReadAll(c2) // EOF comes from the DATA_FIN
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))

	// The half-closed side still receives.
	_, err = c2.Write([]byte("reply"))
	require.NoError(t, err)
	require.NoError(t, c2.CloseWrite())
	got, err = io.ReadAll(c1)
	require.NoError(t, err)
	require.Equal(t, "reply", string(got))

	require.NoError(t, c1.Close())
	_, err = c1.Read(make([]byte, 1))
	require.ErrorIs(t, err, net.ErrClosed)
	select {
	case <-c1.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("close did not complete")
	}
}

// corruptor is a middlebox that changes one payload byte of the nth data
// segment and fixes the TCP checksum: only the DSS checksum can tell.
type corruptor struct {
	nested.Endpoint
	nth  int64
	seen atomic.Int64
}

func (c *corruptor) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	raw := pkt.Data().AsRange().ToSlice()
	ip := header.IPv4(raw)
	tcp := header.TCP(raw[ip.HeaderLength():])
	if proto != header.IPv4ProtocolNumber || len(tcp.Payload()) == 0 || c.seen.Add(1) != c.nth {
		c.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	tcp.Payload()[len(tcp.Payload())/2] ^= 0x5a
	deliverRewritten(&c.Endpoint, proto, raw)
}

// TestChecksumCatchesCorruption: with DSS checksums on, a payload byte
// changed in the network is caught and never handed to the application;
// everything read before the failure is exactly what was sent.
func TestChecksumCatchesCorruption(t *testing.T) {
	a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	cb := &corruptor{nth: 200}
	cb.Endpoint.Init(b, cb)
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}, Checksum: true})
	require.NoError(t, err)
	defer sa.Close()
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: cb, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	defer sb.Close()
	c1, c2 := dialAccept(t, sa, sb, "10.9.0.2")
	require.True(t, c2.Stats().Checksum)

	const size = 4 << 20
	sent, err := io.ReadAll(newStream(9, size))
	require.NoError(t, err)
	go func() { c1.Write(sent); c1.CloseWrite() }()
	c2.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(c2)
	require.ErrorIs(t, err, stack.ErrChecksum)
	require.Positive(t, cb.seen.Load())
	require.Less(t, len(got), size)
	require.True(t, bytes.Equal(sent[:len(got)], got), "only intact bytes were delivered")
	var fails uint64
	for _, k := range c2.SubflowCounters() {
		fails += k.ChecksumFailures
	}
	require.Equal(t, uint64(1), fails)
	require.False(t, errors.Is(err, io.EOF))
}

func TestStatsAfterClose(t *testing.T) {
	sa, sb, addr := pair(t, tun.LinkParams{}, false, false, true)
	c1, c2 := dialAccept(t, sa, sb, addr)
	exchange(t, c1, c2, 1<<20)
	c1.Close()
	c2.Close()
	<-c1.Done()
	<-c2.Done()
	for _, c := range []*stack.Conn{c1, c2} {
		st := c.Stats()
		require.True(t, st.MPTCP)
		require.Len(t, st.Subflows, 1)
		require.True(t, st.Subflows[0].Local.IsValid())
		require.True(t, st.Subflows[0].Remote.IsValid())
		require.Equal(t, uint64(1<<20), st.BytesSent)
		require.Equal(t, uint64(1<<20), st.BytesReceived)
		require.NotNil(t, c.LocalAddr())
	}
}

// TestFallbackCloseDeliversEverything: a connection that fell back to
// plain TCP (the peer's listener does not speak MPTCP), closed right after
// writing, still delivers every byte before Done, even if the stack is
// closed right after Done.
func TestFallbackCloseDeliversEverything(t *testing.T) {
	a, b := tun.NewPipe(tun.LinkParams{Delay: 5 * time.Millisecond}, tun.LinkParams{Delay: 5 * time.Millisecond})
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	defer sb.Close()
	ln, err := gonet.ListenTCP(sb.Netstack(), tcpip.FullAddress{Port: 6001}, ipv4.ProtocolNumber)
	require.NoError(t, err)
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := sa.Dial("tcp", "10.9.0.2:6001")
	require.NoError(t, err)
	require.False(t, c.MultipathTCP())
	const size = 4 << 20
	_, err = io.Copy(c, newStream(3, size))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("close did not finish")
	}
	sa.Close() // resets whatever is left: nothing should be
	select {
	case n := <-got:
		require.EqualValues(t, size, n)
	case <-time.After(30 * time.Second):
		t.Fatal("peer did not finish reading")
	}
}
