package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// inproc is two umptcp stacks in this process, a client and a server,
// joined by one emulated link (tun.NewPipe) per path. Plain gVisor TCP
// runs on the same stacks (Netstack), so both are measured over the same
// harness.
type inproc struct {
	client, server *stack.Stack
	params         []tun.LinkParams
	ends           [][2]*tun.Endpoint // per path: the client's end, the server's end
	ln             *stack.Listener
	gln            *gonet.TCPListener
}

// Ports of the in-process listeners.
const (
	mptcpPort = 5001
	tcpPort   = 5002
)

// inprocAddr is the address of the client (host 1) or server (host 2) on
// path i.
func inprocAddr(i, host int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i), 0, byte(host)}), 24)
}

// newInproc makes the stacks, one path per element of params (the same
// shaping both ways), with the named scheduler on both.
func newInproc(params []tun.LinkParams, sched string) (*inproc, error) {
	n := &inproc{params: seeded(params)}
	var cl, sl []stack.Link
	for i, p := range n.params {
		a, b := tun.NewPipe(p, p)
		n.ends = append(n.ends, [2]*tun.Endpoint{a, b})
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{inprocAddr(i, 1)}})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{inprocAddr(i, 2)}})
	}
	var err error
	if n.client, err = stack.New(stack.Config{Links: cl, Scheduler: sched}); err != nil {
		return nil, err
	}
	if n.server, err = stack.New(stack.Config{Links: sl, Scheduler: sched}); err != nil {
		n.client.Close()
		return nil, err
	}
	return n, nil
}

// seeded returns a copy of params in which every path without a seed has
// one of its own (its index + 1): runs repeat, paths differ.
func seeded(params []tun.LinkParams) []tun.LinkParams {
	out := append([]tun.LinkParams(nil), params...)
	for i := range out {
		if out[i].Seed == 0 {
			out[i].Seed = int64(i + 1)
		}
	}
	return out
}

// close closes both stacks, giving up (with an error) if that hangs.
func (n *inproc) close() error {
	if n.gln != nil {
		n.gln.Close()
	}
	if n.ln != nil {
		n.ln.Close()
	}
	return closeWithin(20*time.Second, "in-process stacks", func() error {
		return errors.Join(n.client.Close(), n.server.Close())
	})
}

// closeWithin runs f, waiting at most d for it.
func closeWithin(d time.Duration, what string, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("closing %s did not finish within %v", what, d)
	}
}

// delivered returns path i's counter of bytes delivered client → server.
func (n *inproc) delivered(i int) func() uint64 {
	return func() uint64 { return n.ends[i][0].Stats().DeliveredBytes }
}

// counters returns every path's delivered counter.
func (n *inproc) counters() []func() uint64 {
	var out []func() uint64
	for i := range n.ends {
		out = append(out, n.delivered(i))
	}
	return out
}

// blackhole makes path i drop everything, both ways, in flight included.
func (n *inproc) blackhole(i int) {
	p := n.params[i]
	p.Blackhole = true
	n.ends[i][0].SetParams(p)
	n.ends[i][1].SetParams(p)
}

// mptcp connects an MPTCP connection from the client to the server over
// path 0, exchanges a byte from the server (the client opens its joins once
// the server's first DSS arrived, otherwise only after a second), and waits
// until both ends have one active subflow per path.
func (n *inproc) mptcp(ctx context.Context) (cli, srv *stack.Conn, err error) {
	if n.ln == nil {
		if n.ln, err = n.server.Listen("tcp", fmt.Sprintf(":%d", mptcpPort)); err != nil {
			return nil, nil, err
		}
	}
	ln := n.ln
	accepted := make(chan *stack.Conn, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err = n.client.DialContext(ctx, "tcp", netip.AddrPortFrom(inprocAddr(0, 2).Addr(), mptcpPort).String())
	if err != nil {
		return nil, nil, fmt.Errorf("umptcp dial: %w", err)
	}
	select {
	case srv = <-accepted:
	case <-ctx.Done():
		cli.Close()
		return nil, nil, fmt.Errorf("umptcp accept: %w", ctx.Err())
	}
	fail := func(err error) (*stack.Conn, *stack.Conn, error) {
		cli.Close()
		srv.Close()
		return nil, nil, err
	}
	if !cli.MultipathTCP() || !srv.MultipathTCP() {
		return fail(fmt.Errorf("not MPTCP: client %q, server %q", cli.FallbackReason(), srv.FallbackReason()))
	}
	if err := exchangeByte(srv, cli); err != nil {
		return fail(fmt.Errorf("warm-up: %w", err))
	}
	want := len(n.ends)
	if !poll(ctx, func() bool { return activeSubflows(cli) == want && activeSubflows(srv) == want }) {
		return fail(fmt.Errorf("subflows did not come up within 30 s: client %d, server %d active, want %d",
			activeSubflows(cli), activeSubflows(srv), want))
	}
	return cli, srv, nil
}

// tcp connects a plain gVisor TCP connection from the client to the server
// over path 0 (the stacks' Netstack: no MPTCP layer involved in the
// connection).
func (n *inproc) tcp(ctx context.Context) (cli, srv net.Conn, err error) {
	if n.gln == nil {
		if n.gln, err = gonet.ListenTCP(n.server.Netstack(), tcpip.FullAddress{Port: tcpPort}, ipv4.ProtocolNumber); err != nil {
			return nil, nil, err
		}
	}
	ln := n.gln
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err = gonet.DialContextTCP(ctx, n.client.Netstack(),
		tcpip.FullAddress{Addr: tcpip.AddrFrom4(inprocAddr(0, 2).Addr().As4()), Port: tcpPort}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, nil, fmt.Errorf("gVisor TCP dial: %w", err)
	}
	select {
	case srv = <-accepted:
		return cli, srv, nil
	case <-ctx.Done():
		cli.Close()
		return nil, nil, fmt.Errorf("gVisor TCP accept: %w", ctx.Err())
	}
}

// exchangeByte sends one byte from a to b, within 10 s.
func exchangeByte(a, b net.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	a.SetWriteDeadline(deadline)
	b.SetReadDeadline(deadline)
	defer a.SetWriteDeadline(time.Time{})
	defer b.SetReadDeadline(time.Time{})
	if _, err := a.Write([]byte{1}); err != nil {
		return err
	}
	var one [1]byte
	_, err := b.Read(one[:])
	return err
}

// activeSubflows counts c's subflows in state "active".
func activeSubflows(c *stack.Conn) int {
	n := 0
	for _, s := range c.Stats().Subflows {
		if s.State == "active" {
			n++
		}
	}
	return n
}

// poll calls cond every 5 ms until it holds (true) or ctx ends (false).
func poll(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}
