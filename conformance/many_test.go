package conformance

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
)

// TestUmptcpKernelManyConnections: 24 MPTCP connections at once to a kernel
// server (each with its own keys and token), 1 MiB each way, all intact.
func TestUmptcpKernelManyConnections(t *testing.T) {
	const n, size = 24, 1 << 20
	u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
	before := u.Nstat()
	ln, err := ListenMPTCP(u.NS, "tcp", u.kernelAddr())
	require.NoError(t, err)
	defer ln.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	go func() { // the kernel side: each connection exchanges a stream
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			Track(t, c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if mp, err := KernelMultipathTCP(c); err != nil || !mp {
					errs <- errors.New("kernel socket is not MPTCP")
				}
				errs <- exchangeOne(c, 2, size)
			}()
		}
	}()
	ports := map[uint16]bool{}
	var mu sync.Mutex
	var ours sync.WaitGroup
	for i := 0; i < n; i++ {
		ours.Add(1)
		go func() {
			defer ours.Done()
			c, err := u.stack.DialContext(u.Ctx, "tcp", u.kernelAddr())
			if err != nil {
				errs <- err
				return
			}
			Track(t, c)
			if !c.MultipathTCP() {
				errs <- errors.New("umptcp fell back")
			}
			mu.Lock()
			ports[c.Stats().Subflows[0].Local.Port()] = true
			mu.Unlock()
			errs <- exchangeOne(c, 2, size)
		}()
	}
	ours.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("kernel side did not finish")
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, ports, n, "distinct subflows")
	diff := u.Nstat().Diff(before)
	require.EqualValues(t, n, diff["MPTcpExtMPCapableSYNRX"])
	RequireUnchanged(t, diff, MPCapableErrorCounters...)
}

// exchangeOne sends Stream(seed, size) on c, half-closes, and checks that
// the same stream comes back from the other side.
func exchangeOne(c net.Conn, seed uint64, size int64) error {
	sent := make(chan error, 1)
	go func() {
		_, err := Send(c, seed, size)
		if err == nil {
			err = c.(HalfCloser).CloseWrite()
		}
		sent <- err
	}()
	got, err := Receive(c)
	if err != nil {
		return err
	}
	if err := <-sent; err != nil {
		return err
	}
	want, _ := Receive(io.LimitReader(Stream(seed, size), size))
	return compare("stream", want, got, size)
}

// TestUmptcpKernelPeerAborts: the kernel closes its socket with unread
// data (it answers with MP_FASTCLOSE and a reset). Our side sees an error,
// not a hang and not a clean EOF.
func TestUmptcpKernelPeerAborts(t *testing.T) {
	for _, kernelServer := range []bool{true, false} {
		t.Run(map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[kernelServer], func(t *testing.T) {
			u := newUmptcpRig(t, tunFamilies[0], RigOptions{}, stack.Config{})
			ours, kernel := u.connect(t, kernelServer)
			_, err := ours.Write(make([]byte, 64<<10)) // unread by the kernel
			require.NoError(t, err)
			time.Sleep(200 * time.Millisecond)
			require.NoError(t, kernel.Close())
			ours.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = io.Copy(io.Discard, ours)
			require.Error(t, err, "a reset is not a clean end of stream")
			var ne net.Error
			if errors.As(err, &ne) {
				require.False(t, ne.Timeout(), "the reset was noticed, not the deadline: %v", err)
			}
			require.Eventually(t, func() bool {
				_, err := ours.Write([]byte("x"))
				return err != nil
			}, 10*time.Second, 50*time.Millisecond, "writes fail after the reset")
		})
	}
}
