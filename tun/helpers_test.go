package tun

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const testNIC tcpip.NICID = 1

// newTestStack builds a gVisor stack (ipv4+ipv6+tcp, SACK, multi-MiB
// buffers) with ep as NIC 1 carrying addrs, and routes their subnets to it.
// The stack is closed at test cleanup.
func newTestStack(t testing.TB, ep stack.LinkEndpoint, addrs ...netip.Prefix) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() {
		// Detach the link first: gVisor's Stack.Wait detaches it with the
		// stack lock held, and a link goroutine still delivering a packet
		// that needs that lock (e.g. to answer it with a RST) deadlocks.
		ep.Attach(nil)
		s.Close()
		s.Wait()
	})
	sack := tcpip.TCPSACKEnabled(true)
	require.Nil(t, s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack))
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	require.Nil(t, s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv))
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	require.Nil(t, s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd))
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	require.Nil(t, s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod))

	require.Nil(t, s.CreateNIC(testNIC, ep))
	var routes []tcpip.Route
	for _, p := range addrs {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		require.Nil(t, s.AddProtocolAddress(testNIC, pa, stack.AddressProperties{}))
		routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: testNIC})
	}
	s.SetRouteTable(routes)
	return s
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(a netip.Addr, port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: testNIC, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: port}
}

// gListen listens on the gVisor stack at addr (port chosen by the stack).
func gListen(t testing.TB, s *stack.Stack, addr netip.Addr) (*gonet.TCPListener, uint16) {
	t.Helper()
	ln, err := gonet.ListenTCP(s, fullAddr(addr, 0), protoOf(addr))
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	return ln, uint16(port)
}

func gDial(s *stack.Stack, addr netip.Addr, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, s, fullAddr(addr, port), protoOf(addr))
}

type halfCloser interface {
	CloseWrite() error
}

// transfer sends n pseudo-random bytes over a connection from dial to accept
// and checks the SHA-256 on both sides. It returns the receiver's goodput in
// bits per second (from connection setup to the last byte).
func transfer(t testing.TB, accept func() (net.Conn, error), dial func() (net.Conn, error), n int, timeout time.Duration) float64 {
	t.Helper()
	type result struct {
		sum   [32]byte
		n     int64
		done  time.Time
		err   error
		start time.Time
	}
	rc := make(chan result, 1)
	go func() {
		c, err := accept()
		if err != nil {
			rc <- result{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer c.Close()
		start := time.Now()
		_ = c.SetDeadline(time.Now().Add(timeout))
		h := sha256.New()
		m, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err, r.done, r.start = m, err, time.Now(), start
		rc <- r
	}()

	c, err := dial()
	require.NoError(t, err, "dial")
	defer c.Close()
	start := time.Now()
	require.NoError(t, c.SetDeadline(time.Now().Add(timeout)))
	rng := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		chunk := buf[:min(left, len(buf))]
		_, _ = rng.Read(chunk)
		h.Write(chunk)
		_, err := c.Write(chunk)
		require.NoError(t, err, "write after %d of %d bytes", n-left, n)
		left -= len(chunk)
	}
	hc, ok := c.(halfCloser)
	require.True(t, ok, "conn %T has no CloseWrite", c)
	require.NoError(t, hc.CloseWrite())

	var r result
	select {
	case r = <-rc:
	case <-time.After(timeout + 5*time.Second):
		t.Fatalf("receiver did not finish within %v", timeout)
	}
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		require.NoError(t, r.err, "receive after %d of %d bytes", r.n, n)
	}
	require.EqualValues(t, n, r.n, "received bytes")
	require.Equal(t, h.Sum(nil), r.sum[:], "sha256 mismatch")
	if r.start.Before(start) {
		start = r.start
	}
	el := r.done.Sub(start)
	return float64(n) * 8 / el.Seconds()
}

func mbit(bps float64) string { return fmt.Sprintf("%.1f Mbit/s", bps/1e6) }
