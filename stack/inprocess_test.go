package stack_test

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

// pair returns two stacks joined by an emulated link.
func pair(t *testing.T, p tun.LinkParams, clientCsum, serverCsum bool, v6 bool) (*stack.Stack, *stack.Stack, string) {
	t.Helper()
	a, b := tun.NewPipe(p, p)
	ca, cb := "10.9.0.1/24", "10.9.0.2/24"
	if v6 {
		ca, cb = "fd09::1/64", "fd09::2/64"
	}
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(ca)}}}, Checksum: clientCsum})
	require.NoError(t, err)
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(cb)}}}, Checksum: serverCsum})
	require.NoError(t, err)
	t.Cleanup(func() { sa.Close(); sb.Close() })
	return sa, sb, netip.MustParsePrefix(cb).Addr().String()
}

// stream is a deterministic pseudo-random byte stream.
type stream struct {
	r *rand.ChaCha8
	n int64
}

func newStream(seed byte, n int64) *stream {
	var s [32]byte
	s[0] = seed
	return &stream{r: rand.NewChaCha8(s), n: n}
}

func (s *stream) Read(b []byte) (int, error) {
	if s.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > s.n {
		b = b[:s.n]
	}
	s.r.Read(b)
	s.n -= int64(len(b))
	return len(b), nil
}

func digest(r io.Reader, n int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, r, n)
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// exchange sends size bytes each way at once and checks both digests.
func exchange(t *testing.T, c1, c2 net.Conn, size int64) {
	exchangeWithin(t, c1, c2, size, 120*time.Second)
}

func exchangeWithin(t *testing.T, c1, c2 net.Conn, size int64, limit time.Duration) {
	t.Helper()
	want1, want2 := digest(newStream(1, size), size), digest(newStream(2, size), size)
	type res struct {
		d   [32]byte
		n   int64
		err error
	}
	recv := func(c net.Conn, ch chan res) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		var d [32]byte
		copy(d[:], h.Sum(nil))
		ch <- res{d, n, err}
	}
	send := func(c net.Conn, seed byte, ch chan error) {
		_, err := io.CopyBuffer(c, newStream(seed, size), make([]byte, 256<<10))
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		ch <- err
	}
	r1, r2 := make(chan res, 1), make(chan res, 1)
	e1, e2 := make(chan error, 1), make(chan error, 1)
	go recv(c2, r2)
	go recv(c1, r1)
	go send(c1, 1, e1)
	go send(c2, 2, e2)
	timeout := time.After(limit)
	for _, ch := range []chan error{e1, e2} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-timeout:
			t.Fatal("send timed out")
		}
	}
	for i, ch := range []chan res{r2, r1} {
		select {
		case r := <-ch:
			require.NoError(t, r.err)
			require.Equal(t, size, r.n, "bytes received by side %d", 2-i)
			want := want1
			if i == 1 {
				want = want2
			}
			require.Equal(t, want, r.d, "sha256 at side %d", 2-i)
		case <-timeout:
			t.Fatal("receive timed out")
		}
	}
}

func dialAccept(t *testing.T, sa, sb *stack.Stack, addr string) (*stack.Conn, *stack.Conn) {
	t.Helper()
	ln, err := sb.Listen("tcp", ":5001")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() }) // joins need the listener, as in Linux
	acc := make(chan *stack.Conn, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	c1, err := sa.Dial("tcp", net.JoinHostPort(addr, "5001"))
	require.NoError(t, err)
	select {
	case c2 := <-acc:
		require.NotNil(t, c2)
		return c1, c2
	case <-time.After(10 * time.Second):
		t.Fatal("accept timed out")
	}
	return nil, nil
}

func TestInProcessMPTCP(t *testing.T) {
	for _, tc := range []struct {
		name           string
		size           int64
		p              tun.LinkParams
		ccsum, scsum   bool
		v6             bool
		wantChecksumOn bool
	}{
		{name: "ipv4", size: 64 << 20},
		{name: "ipv6", size: 16 << 20, v6: true},
		{name: "checksum-client", size: 16 << 20, ccsum: true, wantChecksumOn: true},
		{name: "checksum-server", size: 16 << 20, scsum: true, wantChecksumOn: true},
		{name: "loss1pct-delay20ms", size: 64 << 20, p: tun.LinkParams{Delay: 20 * time.Millisecond, Loss: 0.01, Seed: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.size > 16<<20 {
				tc.size = 16 << 20
			}
			sa, sb, addr := pair(t, tc.p, tc.ccsum, tc.scsum, tc.v6)
			c1, c2 := dialAccept(t, sa, sb, addr)
			require.True(t, c1.MultipathTCP(), c1.FallbackReason())
			require.True(t, c2.MultipathTCP(), c2.FallbackReason())
			require.Equal(t, tc.wantChecksumOn, c1.Stats().Checksum)
			require.Equal(t, tc.wantChecksumOn, c2.Stats().Checksum)
			// A lossy path is slow by nature: TCP over 40 ms RTT and 1 %
			// loss manages a few Mbit/s (Mathis et al.).
			exchangeWithin(t, c1, c2, tc.size, 400*time.Second)
			for _, c := range []*stack.Conn{c1, c2} {
				for _, k := range c.SubflowCounters() {
					require.Zero(t, k.UnmappedSegments)
					require.Zero(t, k.MalformedOptions)
					require.Zero(t, k.ChecksumFailures)
				}
			}
			require.NoError(t, c1.Close())
			require.NoError(t, c2.Close())
		})
	}
}
