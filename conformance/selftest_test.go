package conformance

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/internal/netns"
)

// selfTestSize is how much each direction carries in the rig's self-tests.
const selfTestSize = 8 << 20

// kernelPair is two namespaces joined by a veth pair, for kernel-to-kernel
// self-tests of the rig.
type kernelPair struct {
	server, client *Rig
	serverAddr     netip.Addr // the server end's address of the family
	clientAddr     netip.Addr
}

// ipFamily is one address family the tests run over.
type ipFamily struct {
	name           string
	server, client netip.Prefix
}

// families are the veth addresses of the kernel-to-kernel self-tests.
var families = []ipFamily{
	{"IPv4", netip.MustParsePrefix("10.79.0.1/24"), netip.MustParsePrefix("10.79.0.2/24")},
	{"IPv6", netip.MustParsePrefix("fd79::1/64"), netip.MustParsePrefix("fd79::2/64")},
}

// newKernelPair creates the two namespaces with their options and links
// them with addresses of family f.
func newKernelPair(t *testing.T, f ipFamily, server, client RigOptions) *kernelPair {
	t.Helper()
	server.Name, client.Name = "srv", "cli"
	p := &kernelPair{server: NewRig(t, server), client: NewRig(t, client),
		serverAddr: f.server.Addr(), clientAddr: f.client.Addr()}
	err := netns.Veth(p.server.Ctx,
		netns.VethEnd{NS: p.server.NS, Name: "vsrv", Addrs: []netip.Prefix{f.server}},
		netns.VethEnd{NS: p.client.NS, Name: "vcli", Addrs: []netip.Prefix{f.client}})
	require.NoError(t, err, "veth")
	return p
}

// connect listens on the server (MPTCP or not), dials from the client
// (MPTCP or not) and returns both ends, closed when the test ends.
func (p *kernelPair) connect(t *testing.T, serverMPTCP, clientMPTCP bool) (srv, cli net.Conn) {
	t.Helper()
	addr := netip.AddrPortFrom(p.serverAddr, 5000).String()
	listen, dial := ListenTCP, DialTCP
	if serverMPTCP {
		listen = ListenMPTCP
	}
	if clientMPTCP {
		dial = DialMPTCP
	}
	ln, err := listen(p.server.NS, "tcp", addr)
	require.NoError(t, err, "listen")
	defer ln.Close()
	accepted := acceptAsync(ln)
	cli, err = dial(p.client.Ctx, p.client.NS, "tcp", addr)
	require.NoError(t, err, "dial")
	Track(t, cli)
	srv, err = awaitAccept(p.server.Ctx, accepted)
	require.NoError(t, err, "accept")
	return Track(t, srv), cli
}

// acceptAsync accepts one connection from ln in the background.
func acceptAsync(ln net.Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := ln.Accept()
		ch <- acceptResult{c, err}
	}()
	return ch
}

// acceptResult is what acceptAsync delivers.
type acceptResult struct {
	c   net.Conn
	err error
}

// awaitAccept waits for acceptAsync's result or ctx's end.
func awaitAccept(ctx context.Context, ch <-chan acceptResult) (net.Conn, error) {
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// requireKernelMPTCP asserts that c, a kernel socket, still uses MPTCP and
// that its checksum setting is csum.
func requireKernelMPTCP(t *testing.T, c net.Conn, csum bool) {
	t.Helper()
	mp, err := KernelMultipathTCP(c)
	require.NoError(t, err)
	require.True(t, mp, "kernel socket fell back to TCP")
	info, err := KernelMPTCPInfo(c)
	require.NoError(t, err)
	require.Zero(t, info.Flags&MPTCPInfoFlagFallback, "MPTCP_INFO fallback flag")
	require.NotZero(t, info.Flags&MPTCPInfoFlagRemoteKeyReceived, "MPTCP_INFO remote key flag")
	require.Equal(t, csum, info.CsumEnabled, "MPTCP_INFO csum_enabled")
}

// ssShows returns a Midway hook that checks ns lists the MPTCP connection
// between local and peer, established and not fallen back.
func ssShows(t *testing.T, ns *netns.NS, local, peer net.Addr) func() error {
	return func() error {
		entries, err := SSMptcp(ns)
		if err != nil {
			return err
		}
		e, ok := FindSS(entries, addrPort(local), addrPort(peer))
		if !ok {
			t.Errorf("ss -Mni in %s does not list %v->%v: %+v", ns, local, peer, entries)
			return nil
		}
		if e.State != "ESTAB" || e.Fallback || !e.RemoteKey || e.Token == "" {
			t.Errorf("ss -Mni in %s: unexpected entry %+v", ns, e)
		}
		return nil
	}
}

// addrPort converts a *net.TCPAddr to a netip.AddrPort.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// TestKernelToKernelMPTCP checks the rig against two kernel MPTCP ends:
// data intact both ways, ss and MPTCP_INFO seeing MPTCP, the handshake
// counters moving and the fallback and error counters not, with DSS
// checksums off, on at both ends, or requested by the server only (either
// end asking is enough, RFC 8684 section 3.1).
func TestKernelToKernelMPTCP(t *testing.T) {
	for _, f := range families {
		for _, cs := range []struct {
			name               string
			server, client     bool
			wantCsumNegotiated bool
		}{
			{"NoChecksum", false, false, false},
			{"Checksum", true, true, true},
			{"ChecksumServerOnly", true, false, true},
		} {
			t.Run(f.name+"/"+cs.name, func(t *testing.T) {
				p := newKernelPair(t, f, RigOptions{Checksum: cs.server}, RigOptions{Checksum: cs.client})
				srvBefore, cliBefore := p.server.Nstat(), p.client.Nstat()

				srv, cli := p.connect(t, true, true)
				requireKernelMPTCP(t, srv, cs.wantCsumNegotiated)
				requireKernelMPTCP(t, cli, cs.wantCsumNegotiated)

				err := Exchange(p.client.Ctx, cli, srv, ExchangeOptions{
					AtoB: selfTestSize, BtoA: selfTestSize,
					Midway: func() error {
						return errors.Join(
							ssShows(t, p.server.NS, srv.LocalAddr(), srv.RemoteAddr())(),
							ssShows(t, p.client.NS, cli.LocalAddr(), cli.RemoteAddr())())
					},
				})
				require.NoError(t, err)

				srvDiff, cliDiff := p.server.Nstat().Diff(srvBefore), p.client.Nstat().Diff(cliBefore)
				RequireIncreased(t, srvDiff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX")
				RequireIncreased(t, cliDiff, "MPTcpExtMPCapableSYNTX", "MPTcpExtMPCapableSYNACKRX")
				RequireUnchanged(t, srvDiff, MPCapableErrorCounters...)
				RequireUnchanged(t, cliDiff, MPCapableErrorCounters...)
				RequireUnchanged(t, srvDiff, "MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset", "MPTcpExtMPFailTx")
				RequireUnchanged(t, cliDiff, "MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset", "MPTcpExtMPFailTx")
			})
		}
	}
}

// TestKernelFallback checks that an MPTCP client falls back to TCP, with
// data intact, against a plain TCP server and against an MPTCP server whose
// namespace has MPTCP disabled.
func TestKernelFallback(t *testing.T) {
	for _, f := range families {
		for _, tc := range []struct {
			name        string
			serverMPTCP bool
			server      RigOptions
		}{
			{"PlainTCPServer", false, RigOptions{}},
			{"ServerMPTCPDisabled", true, RigOptions{DisableMPTCP: true}},
		} {
			t.Run(f.name+"/"+tc.name, func(t *testing.T) {
				p := newKernelPair(t, f, tc.server, RigOptions{})
				srvBefore, cliBefore := p.server.Nstat(), p.client.Nstat()

				srv, cli := p.connect(t, tc.serverMPTCP, true)
				for _, c := range []net.Conn{srv, cli} {
					mp, err := KernelMultipathTCP(c)
					require.NoError(t, err)
					require.False(t, mp, "connection should have fallen back to TCP")
				}
				require.NoError(t, Exchange(p.client.Ctx, cli, srv,
					ExchangeOptions{AtoB: selfTestSize, BtoA: selfTestSize}))

				srvDiff, cliDiff := p.server.Nstat().Diff(srvBefore), p.client.Nstat().Diff(cliBefore)
				RequireIncreased(t, cliDiff, "MPTcpExtMPCapableSYNTX", "MPTcpExtMPCapableFallbackSYNACK")
				RequireUnchanged(t, cliDiff, "MPTcpExtMPCapableSYNACKRX")
				RequireUnchanged(t, srvDiff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX")
			})
		}
	}
}

// TestKernelHalfClose checks the half-close scenario between two kernel
// MPTCP ends, in both directions, and that no RST, MP_RST or MP_FASTCLOSE
// was involved once the connection closed.
func TestKernelHalfClose(t *testing.T) {
	for _, f := range families {
		for _, clientFirst := range []bool{true, false} {
			t.Run(f.name+"/clientFirst="+strconv.FormatBool(clientFirst), func(t *testing.T) {
				p := newKernelPair(t, f, RigOptions{}, RigOptions{})
				srvBefore, cliBefore := p.server.Nstat(), p.client.Nstat()
				srv, cli := p.connect(t, true, true)
				first, second := cli, srv
				if !clientFirst {
					first, second = srv, cli
				}
				require.NoError(t, HalfClose(p.client.Ctx, first, second, 1<<20, 3<<20))
				require.NoError(t, WaitQuiet(p.server.Ctx, p.server.NS))
				require.NoError(t, WaitQuiet(p.client.Ctx, p.client.NS))

				srvDiff, cliDiff := p.server.Nstat().Diff(srvBefore), p.client.Nstat().Diff(cliBefore)
				RequireUnchanged(t, srvDiff, ResetCounters...)
				RequireUnchanged(t, cliDiff, ResetCounters...)
				RequireIncreased(t, srvDiff, "MPTcpExtMPCapableACKRX")
			})
		}
	}
}

// TestKernelAbortIsCounted checks that ResetCounters do catch an abortive
// close, so that their staying unchanged in the half-close tests means
// something: a kernel MPTCP end closing with unread data resets the
// connection (MP_FASTCLOSE and an RST).
func TestKernelAbortIsCounted(t *testing.T) {
	p := newKernelPair(t, families[0], RigOptions{}, RigOptions{})
	srvBefore := p.server.Nstat()
	srv, cli := p.connect(t, true, true)
	_, err := cli.Write(make([]byte, 64<<10))
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = srv.Read(buf) // the data has arrived; leave the rest unread
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	require.NoError(t, WaitQuiet(p.server.Ctx, p.server.NS))

	diff := p.server.Nstat().Diff(srvBefore)
	t.Logf("server counters after an abortive close: %v", NonZero(diff))
	moved := 0
	for _, name := range ResetCounters {
		if diff[name] != 0 {
			moved++
		}
	}
	require.NotZero(t, moved, "no reset counter moved: %v", NonZero(diff))
}
