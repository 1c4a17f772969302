package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/umptcp/umptcp/internal/kernelsock"
	"github.com/umptcp/umptcp/internal/netns"
	"github.com/umptcp/umptcp/tun"
)

// kpair is the kernel-to-kernel rig: a client namespace and a server
// namespace, each with one TUN device per path, the two devices of a path
// joined by a tun.Forwarder (this process reads what one kernel sends and
// writes it into the other kernel after the path's emulation). The
// client's kernel has an MPTCP "subflow" endpoint on every path but the
// first, so that its MPTCP connections open one subflow per path, as
// umptcp's client does.
type kpair struct {
	c, s   *netns.NS
	params []tun.LinkParams
	devs   []*tun.Device // client's and server's devices, in opening order
	fwd    []*tun.Forwarder
}

// kernelAddr is the address of the kernel client (host 1) or server (host
// 2) on path i.
func kernelAddr(i, host int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(91 + i), 0, byte(host)}), 24)
}

// kernelCmdTimeout bounds each `ip` command of the set-up.
const kernelCmdTimeout = 10 * time.Second

// newKPair builds the rig. On error everything made so far is removed.
func newKPair(ctx context.Context, params []tun.LinkParams) (k *kpair, err error) {
	k = &kpair{params: seeded(params)}
	defer func() {
		if err != nil {
			err = errors.Join(err, k.close())
			k = nil
		}
	}()
	if k.c, err = netns.New("bench-c"); err != nil {
		return k, err
	}
	if k.s, err = netns.New("bench-s"); err != nil {
		return k, err
	}
	for _, ns := range []*netns.NS{k.c, k.s} {
		// Joins arrive on one path for the address of another: reverse
		// path filtering must not drop them.
		for _, kv := range [][2]string{{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}, {"net.mptcp.enabled", "1"}} {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				return k, err
			}
		}
		if err := k.ip(ctx, ns, "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"); err != nil {
			return k, err
		}
	}
	for i, p := range k.params {
		cd, err := tun.OpenIn(k.c.Name(), tun.Config{Name: fmt.Sprintf("bc%d", i), HostAddr: kernelAddr(i, 1)})
		if err != nil {
			return k, fmt.Errorf("client TUN device, path %d: %w", i, err)
		}
		k.devs = append(k.devs, cd)
		sd, err := tun.OpenIn(k.s.Name(), tun.Config{Name: fmt.Sprintf("bs%d", i), HostAddr: kernelAddr(i, 2)})
		if err != nil {
			return k, fmt.Errorf("server TUN device, path %d: %w", i, err)
		}
		k.devs = append(k.devs, sd)
		k.fwd = append(k.fwd, tun.Forward(cd.LinkEndpoint(), sd.LinkEndpoint(), p, p))
		if i == 0 {
			continue
		}
		// A subflow from the client's address on path i, to the server's
		// address of the initial subflow (on path 0), routed out of path
		// i's device by a policy rule (the main table would send it over
		// path 0).
		a := kernelAddr(i, 1).Addr().String()
		dev := fmt.Sprintf("bc%d", i)
		table := fmt.Sprint(100 + i)
		for _, args := range [][]string{
			{"mptcp", "endpoint", "add", a, "dev", dev, "subflow"},
			{"rule", "add", "from", a, "table", table},
			{"route", "add", "default", "dev", dev, "table", table},
		} {
			if err := k.ip(ctx, k.c, args...); err != nil {
				return k, err
			}
		}
	}
	return k, nil
}

// ip runs `ip args...` in ns.
func (k *kpair) ip(ctx context.Context, ns *netns.NS, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, kernelCmdTimeout)
	defer cancel()
	_, err := ns.Exec(ctx, "ip", args...)
	return err
}

// close removes the rig: listeners, forwarders, devices, namespaces.
func (k *kpair) close() error {
	var errs []error
	for _, f := range k.fwd {
		f.Close()
	}
	for _, d := range k.devs {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range []*netns.NS{k.c, k.s} {
		if ns != nil {
			if err := ns.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// delivered returns path i's counter of bytes forwarded client → server.
func (k *kpair) delivered(i int) func() uint64 {
	return func() uint64 { ab, _ := k.fwd[i].Stats(); return ab.DeliveredBytes }
}

func (k *kpair) counters() []func() uint64 {
	var out []func() uint64
	for i := range k.fwd {
		out = append(out, k.delivered(i))
	}
	return out
}

// blackhole makes path i drop everything, both ways, in flight included.
func (k *kpair) blackhole(i int) {
	p := k.params[i]
	p.Blackhole = true
	k.fwd[i].SetParams(p, p)
}

// kconn is a kernel connection and the listener it came from.
type kconn struct {
	cli, srv net.Conn
	ln       net.Listener // kept open: Linux takes MP_JOIN SYNs on the listener
}

func (c *kconn) close() {
	c.cli.Close()
	c.srv.Close()
	c.ln.Close()
}

// connect makes a kernel connection from the client namespace to the
// server's address on path i, MPTCP or plain TCP. For MPTCP it checks that
// both ends use it, exchanges a byte from the server (a Linux client opens
// its joins once the server's first DSS arrived) and waits until the
// client's MPTCP_INFO counts one additional subflow per other path.
func (k *kpair) connect(ctx context.Context, path int, mptcp bool, port int) (*kconn, error) {
	addr := netip.AddrPortFrom(kernelAddr(path, 2).Addr(), uint16(port)).String()
	kc, err := dialKernel(ctx, k.c, k.s, addr, mptcp)
	if err != nil || !mptcp {
		return kc, err
	}
	if err := exchangeByte(kc.srv, kc.cli); err != nil {
		kc.close()
		return nil, fmt.Errorf("kernel warm-up: %w", err)
	}
	want := uint8(len(k.params) - 1)
	var info kernelsock.Info
	var ierr error
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if !poll(pctx, func() bool {
		info, ierr = kernelsock.MPTCPInfo(kc.cli)
		return ierr == nil && info.Subflows == want
	}) {
		kc.close()
		return nil, fmt.Errorf("kernel client's MPTCP_INFO: %d additional subflows (err %v) after 15 s, want %d", info.Subflows, ierr, want)
	}
	return kc, nil
}

// dialKernel listens in srvNS at addr (MPTCP or TCP), dials it from
// cliNS, and checks that MPTCP is in use on both ends when asked for.
func dialKernel(ctx context.Context, cliNS, srvNS *netns.NS, addr string, mptcp bool) (*kconn, error) {
	ln, err := kernelsock.Listen(srvNS, "tcp", addr, mptcp)
	if err != nil {
		return nil, fmt.Errorf("kernel listen %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err := kernelsock.Dial(ctx, cliNS, "tcp", addr, mptcp)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("kernel dial %s: %w", addr, err)
	}
	srv, err := acceptWithin(ctx, ln)
	if err != nil {
		cli.Close()
		ln.Close()
		return nil, fmt.Errorf("kernel accept %s: %w", addr, err)
	}
	kc := &kconn{cli: cli, srv: srv, ln: ln}
	if mptcp {
		if err := checkKernelMPTCP(cli, srv); err != nil {
			kc.close()
			return nil, err
		}
	}
	return kc, nil
}

// acceptWithin accepts one connection from ln, giving up when ctx ends.
func acceptWithin(ctx context.Context, ln net.Listener) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		ln.Close() // ends the Accept
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
		return nil, ctx.Err()
	}
}

// checkKernelMPTCP fails unless every one of conns (kernel sockets) uses
// MPTCP.
func checkKernelMPTCP(conns ...net.Conn) error {
	var bad []string
	for _, c := range conns {
		if ok, err := kernelsock.MultipathTCP(c); err != nil || !ok {
			bad = append(bad, fmt.Sprintf("%s (err %v)", c.LocalAddr(), err))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("kernel socket fell back to TCP: %s", strings.Join(bad, ", "))
	}
	return nil
}
