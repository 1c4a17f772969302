package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// newNS creates a namespace for a test and deletes it when the test ends;
// it skips the test when not running as root.
func newNS(t *testing.T, prefix string) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root")
	}
	ns, err := New(prefix)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ns.Close()) })
	return ns
}

// threadNetnsInode returns the inode of the calling thread's namespace.
func threadNetnsInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat("/proc/thread-self/ns/net", &st))
	return st.Ino
}

func TestNewNameAndClose(t *testing.T) {
	ns := newNS(t, "nstest")
	require.True(t, strings.HasPrefix(ns.Name(), "umptcp-nstest-"), ns.Name())
	_, err := os.Stat(ns.Path())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, "ip", "-o", "link", "show", "lo")
	require.NoError(t, err)
	require.Contains(t, string(out), "UP")

	require.NoError(t, ns.Close())
	require.NoError(t, ns.Close(), "Close must be idempotent")
	_, err = os.Stat(ns.Path())
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestExecErrorHasOutput(t *testing.T) {
	ns := newNS(t, "nstest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ns.Exec(ctx, "ip", "link", "show", "does-not-exist0")
	require.Error(t, err)
	require.Contains(t, err.Error(), "does-not-exist0")
}

func TestDoSwitchesAndRestores(t *testing.T) {
	ns := newNS(t, "nstest")
	var inside uint64
	root := threadNetnsInode(t)

	require.NoError(t, ns.Do(func() error {
		inside = threadNetnsInode(t)
		return nil
	}))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(ns.Path(), &st))
	require.Equal(t, st.Ino, inside, "Do must run fn inside the namespace")
	require.NotEqual(t, root, inside)

	// Every thread of the process, including the one Do used, must still
	// be in the namespace the test started in.
	for i := 0; i < 20; i++ {
		require.NoError(t, ns.Do(func() error { return nil }))
		require.Equal(t, root, threadNetnsInode(t))
	}
	require.Equal(t, root, allThreadsNetns(t), "a thread was left in the namespace")

	require.ErrorIs(t, ns.Do(func() error { return io.ErrUnexpectedEOF }), io.ErrUnexpectedEOF)
	require.PanicsWithValue(t, "boom", func() { _ = ns.Do(func() error { panic("boom") }) })
}

// allThreadsNetns returns the namespace inode shared by all the process's
// threads, failing if they differ.
func allThreadsNetns(t *testing.T) uint64 {
	t.Helper()
	tids, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	var ino uint64
	for _, tid := range tids {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+tid.Name()+"/ns/net", &st); err != nil {
			continue // the thread exited meanwhile
		}
		if ino == 0 {
			ino = st.Ino
		}
		require.Equal(t, ino, st.Ino, "thread %s is in another namespace", tid.Name())
	}
	return ino
}

func TestSysctl(t *testing.T) {
	ns := newNS(t, "nstest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, ns.Sysctl("net.ipv4.tcp_ecn", "1"))
	out, err := ns.Exec(ctx, "cat", "/proc/sys/net/ipv4/tcp_ecn")
	require.NoError(t, err)
	require.Equal(t, "1", strings.TrimSpace(string(out)))
	require.Error(t, ns.Sysctl("../etc/passwd", "x"))
}

// TestVethTCP connects two fresh namespaces with a veth pair and checks that a
// TCP connection made with Do carries data both ways, over IPv4 and IPv6.
func TestVethTCP(t *testing.T) {
	a := newNS(t, "nstest-a")
	b := newNS(t, "nstest-b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, Veth(ctx,
		VethEnd{NS: a, Name: "va", Addrs: []netip.Prefix{
			netip.MustParsePrefix("10.78.0.1/24"), netip.MustParsePrefix("fd78::1/64")}},
		VethEnd{NS: b, Name: "vb", Addrs: []netip.Prefix{
			netip.MustParsePrefix("10.78.0.2/24"), netip.MustParsePrefix("fd78::2/64")}},
	))

	for _, addr := range []string{"10.78.0.1:7000", "[fd78::1]:7000"} {
		t.Run(addr, func(t *testing.T) {
			var ln net.Listener
			require.NoError(t, a.Do(func() (err error) {
				ln, err = net.Listen("tcp", addr)
				return err
			}))
			defer ln.Close()

			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}()

			var c net.Conn
			require.NoError(t, b.Do(func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			}))
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))

			var s net.Conn
			select {
			case s = <-accepted:
				require.NotNil(t, s, "accept failed")
			case <-ctx.Done():
				t.Fatal("accept timed out")
			}
			defer s.Close()
			require.NoError(t, s.SetDeadline(time.Now().Add(30*time.Second)))

			_, err := c.Write([]byte("ping"))
			require.NoError(t, err)
			buf := make([]byte, 4)
			_, err = io.ReadFull(s, buf)
			require.NoError(t, err)
			require.Equal(t, "ping", string(buf))
			_, err = s.Write([]byte("pong"))
			require.NoError(t, err)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			require.Equal(t, "pong", string(buf))
		})
	}
}
