package tun

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
}

// newNetns creates a network namespace that is deleted at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "umptcp-tun-" + hex.EncodeToString(rnd[:])
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add %s: %s", name, out)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	require.NoError(t, err, "ip -n %s %v: %s", ns, args, out)
	return string(out)
}

func TestDeviceKernelTCP(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name string
		spec string
	}{
		{"IPv4", "umt4,10.77.0.2/24,10.77.0.1"},
		{"IPv6", "umt6,fd77::2/64,fd77::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			cfg, err := ParseSpec(tc.spec)
			require.NoError(t, err)
			cfg.MTU = 1400
			d, err := OpenIn(ns, cfg)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, d.Close()) })
			require.Equal(t, cfg, d.Config())
			require.EqualValues(t, 1400, d.LinkEndpoint().MTU())

			link := ipIn(t, ns, "link", "show", "dev", cfg.Name)
			require.Contains(t, link, "mtu 1400")
			require.Contains(t, link, ",UP")
			addr := ipIn(t, ns, "addr", "show", "dev", cfg.Name)
			require.Contains(t, addr, cfg.HostAddr.String())
			require.NotContains(t, addr, "tentative")

			// A second device of the same name is refused.
			_, err = OpenIn(ns, cfg)
			require.ErrorContains(t, err, "already exists")

			s := newTestStack(t, d.LinkEndpoint(), cfg.StackAddr)
			stackAddr, hostAddr := cfg.StackAddr.Addr(), cfg.HostAddr.Addr()
			const n = 4 << 20
			timeout := 60 * time.Second

			// kernel client -> gVisor server
			gln, gport := gListen(t, s, stackAddr)
			bps := transfer(t, gln.Accept, func() (net.Conn, error) {
				var c net.Conn
				err := InNetns(ns, func() error {
					var err error
					c, err = net.DialTimeout("tcp", netip.AddrPortFrom(stackAddr, gport).String(), 10*time.Second)
					return err
				})
				return c, err
			}, n, timeout)
			t.Logf("TUN %s kernel->gVisor: %d MiB at %s (race=%v)", tc.name, n>>20, mbit(bps), raceEnabled)

			// gVisor client -> kernel server
			var kln net.Listener
			require.NoError(t, InNetns(ns, func() error {
				var err error
				kln, err = net.Listen("tcp", netip.AddrPortFrom(hostAddr, 0).String())
				return err
			}))
			t.Cleanup(func() { kln.Close() })
			kport := uint16(kln.Addr().(*net.TCPAddr).Port)
			bps = transfer(t, kln.Accept, func() (net.Conn, error) { return gDial(s, hostAddr, kport) }, n, timeout)
			t.Logf("TUN %s gVisor->kernel: %d MiB at %s", tc.name, n>>20, mbit(bps))
		})
	}
}

func TestDeviceCloseRemoves(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	cfg, err := ParseSpec("umtc,10.78.0.2/30,10.78.0.1")
	require.NoError(t, err)
	for i := range 3 { // open/close cycles reuse the name
		d, err := OpenIn(ns, cfg)
		require.NoError(t, err, "cycle %d", i)
		// Attach a stack, then close the device before the stack.
		s := newTestStack(t, d.LinkEndpoint(), cfg.StackAddr)
		require.NoError(t, d.Close())
		require.NoError(t, d.Close(), "Close is idempotent")
		s.Close()
		s.Wait()
		out, _ := exec.Command("ip", "-n", ns, "link", "show", "dev", cfg.Name).CombinedOutput()
		require.True(t, strings.Contains(string(out), "does not exist"), "device still present after Close: %s", out)
	}
	// A device that was never attached closes cleanly too.
	d, err := OpenIn(ns, cfg)
	require.NoError(t, err)
	require.NoError(t, d.Close())
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(Config{Name: "", StackAddr: netip.MustParsePrefix("10.0.0.2/24"), HostAddr: netip.MustParsePrefix("10.0.0.1/24")})
	require.ErrorContains(t, err, "empty interface name")
	_, err = OpenIn("umptcp-tun-does-not-exist-"+strconv.Itoa(os.Getpid()), Config{Name: "x", StackAddr: netip.MustParsePrefix("10.0.0.2/24"), HostAddr: netip.MustParsePrefix("10.0.0.1/24")})
	require.ErrorContains(t, err, "does-not-exist")
}
