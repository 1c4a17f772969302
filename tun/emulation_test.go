package tun

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestPipeDuplicate(t *testing.T) {
	a, b := NewPipe(LinkParams{Duplicate: 0.3, Seed: 3}, LinkParams{})
	defer closePipe(a, b)
	d := newCountingDispatcher()
	b.Attach(d)
	const n = 1000
	writeSizes(t, a, n, 100) // packet i is 100+i bytes of payload
	st := a.Stats()
	require.EqualValues(t, n, st.SentPackets)
	require.InDelta(t, 0.3*n, float64(st.Duplicated), 0.06*n, "duplication rate")
	want := n + int(st.Duplicated)
	d.waitFor(t, want, 5*time.Second)
	time.Sleep(20 * time.Millisecond) // nothing more arrives
	require.Equal(t, want, d.count())

	// Every packet arrives, in order, and a duplicate right after its
	// original.
	sizes := d.sizeLog()
	next, dups := 0, 0
	for i, size := range sizes {
		if i > 0 && size == sizes[i-1] {
			dups++
			require.False(t, i > 1 && sizes[i-2] == size, "packet %d arrived three times", next-1)
			continue
		}
		require.Equal(t, 100+next+header.IPv4MinimumSize, size, "delivery %d out of order", i)
		next++
	}
	require.Equal(t, n, next)
	require.EqualValues(t, st.Duplicated, dups)
	st = a.Stats()
	require.EqualValues(t, want, st.DeliveredPackets)
	require.Zero(t, st.Dropped())

	// Duplicate 1 doubles everything; a blackhole drops both copies.
	a.SetParams(LinkParams{Duplicate: 1, Delay: 5 * time.Second})
	writeRaw(t, a, 10, 200)
	require.EqualValues(t, st.Duplicated+10, a.Stats().Duplicated)
	a.SetParams(LinkParams{Duplicate: 1, Blackhole: true})
	deadline := time.Now().Add(3 * time.Second)
	for a.Stats().DroppedBlackhole < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.EqualValues(t, 20, a.Stats().DroppedBlackhole)
	require.Equal(t, want, d.count())
}

func TestPipeDuplicateTCP(t *testing.T) {
	// TCP over a link that duplicates 5% of its packets both ways still
	// delivers every byte once.
	p := LinkParams{Delay: time.Millisecond, Duplicate: 0.05, Seed: 5}
	q := p
	q.Seed = 6
	sa, sb, a, b := pipeStacks(t, p, q)
	pipeTransfer(t, sa, sb, pipeB4.Addr(), 2<<20, 60*time.Second)
	require.NotZero(t, a.Stats().Duplicated)
	require.NotZero(t, b.Stats().Duplicated)
}

// echoRTT measures the round trip of one byte over c, whose peer echoes.
func echoRTT(t testing.TB, c net.Conn) time.Duration {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	buf := []byte{'x'}
	start := time.Now()
	_, err := c.Write(buf)
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	return time.Since(start)
}

// echoServer echoes everything on the first connection accept gives.
func echoServer(t testing.TB, accept func() (net.Conn, error)) {
	go func() {
		c, err := accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.Copy(c, c)
	}()
}
