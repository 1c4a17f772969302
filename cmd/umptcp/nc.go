package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const ncUsage = `usage:
  umptcp nc [-v] [--pcap FILE] --tun NAME,STACKADDR/PREFIX,HOSTADDR [--tun ...] HOST PORT
  umptcp nc -l [-v] [--pcap FILE] --tun NAME,STACKADDR/PREFIX,HOSTADDR [--tun ...] PORT

Netcat over the userspace MPTCP stack. Each --tun creates TUN device NAME in
the current network namespace; the stack gets STACKADDR, the kernel side of
the device HOSTADDR (same prefix). Standard input goes to the connection, the
connection to standard output; end of input sends DATA_FIN. Needs root
(CAP_NET_ADMIN) for the TUN devices.

With several --tun devices the connection uses them all: a client opens one
additional subflow (MP_JOIN) from each other device's address to HOST; a
server (-l) accepts joins on any device. -v lists every subflow and the
stack's MPTCP counters (nstat's MPTcpExt names) at the end.

Path management mirrors "ip mptcp": --endpoint ADDR[:PORT],FLAGS makes one of
the --tun addresses an endpoint (signal: announced to the peer with ADD_ADDR,
with PORT joins are accepted on that port; subflow: a client opens a subflow
from it; backup; fullmesh), replacing the default of every --tun address as
a subflow endpoint. Addresses the peer announces are joined within --limits
subflows=N,add_addr_accepted=M (default 8 and 8). A subflow whose path fails
is opened again once the path is back.

flags:
`

type tunSpecs []string

func (t *tunSpecs) String() string     { return strings.Join(*t, " ") }
func (t *tunSpecs) Set(s string) error { *t = append(*t, s); return nil }

type ncOptions struct {
	listen, verbose, checksum bool
	pcap                      string
	tuns, backups             tunSpecs
	scheduler                 string
	host                      string
	port                      uint16
	timeout                   time.Duration
	pm                        pmFlags
}

func nc(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o ncOptions
	fs := flag.NewFlagSet("umptcp nc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ncUsage); fs.PrintDefaults() }
	fs.BoolVar(&o.listen, "l", false, "listen on PORT at the stack's addresses and serve one connection")
	fs.BoolVar(&o.verbose, "v", false, "print on standard error whether MPTCP is used, the subflows and byte counts")
	fs.StringVar(&o.pcap, "pcap", "", "write every packet of the stack's links to this pcap `FILE`")
	fs.Var(&o.tuns, "tun", "`NAME,STACKADDR/PREFIX,HOSTADDR`: a TUN device for the stack (repeatable)")
	fs.BoolVar(&o.checksum, "checksum", false, "ask the peer for DSS checksums")
	fs.DurationVar(&o.timeout, "w", 30*time.Second, "timeout for connecting or accepting")
	fs.StringVar(&o.scheduler, "scheduler", "default", "packet `scheduler`: "+strings.Join(scheduler.Names(), ", "))
	fs.Var(&o.backups, "backup", "make subflows over TUN device `NAME` backup paths (repeatable)")
	o.pm.register(fs)
	// Flags may also follow HOST and PORT, as with most netcats.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	want := 2
	if o.listen {
		want = 1
	}
	if len(rest) != want {
		fmt.Fprintf(stderr, "umptcp nc: expected %s, got %d argument(s)\n", map[bool]string{true: "PORT", false: "HOST PORT"}[o.listen], len(rest))
		return 2
	}
	if len(o.tuns) == 0 {
		fmt.Fprintln(stderr, "umptcp nc: at least one --tun NAME,STACKADDR/PREFIX,HOSTADDR is required")
		return 2
	}
	if err := o.pm.check(o.tuns); err != nil {
		fmt.Fprintf(stderr, "umptcp nc: %v\n", err)
		return 2
	}
	portArg := rest[len(rest)-1]
	p, err := strconv.ParseUint(portArg, 10, 16)
	if err != nil || p == 0 {
		fmt.Fprintf(stderr, "umptcp nc: bad port %q\n", portArg)
		return 2
	}
	o.port = uint16(p)
	if !o.listen {
		o.host = strings.TrimSuffix(strings.TrimPrefix(rest[0], "["), "]")
	}
	if err := runNC(o, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "umptcp nc: %v\n", err)
		return 1
	}
	return 0
}

func runNC(o ncOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	var pcapFile *os.File
	var pcap *tun.PcapFile
	if o.pcap != "" {
		f, err := os.Create(o.pcap)
		if err != nil {
			return err
		}
		pcapFile = f
		defer f.Close()
		if pcap, err = tun.NewPcapFile(f); err != nil {
			return err
		}
		defer pcap.Close()
	}
	so := tunStackOptions{tuns: o.tuns, backups: o.backups, checksum: o.checksum, scheduler: o.scheduler,
		endpoints: o.pm.endpoints, limits: o.pm.limits}
	if o.verbose {
		so.logf = func(format string, args ...any) { fmt.Fprintf(stderr, "umptcp nc: "+format+"\n", args...) }
	}
	if pcap != nil {
		so.wrap = func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint { return pcap.Wrap(ep) }
	}
	s, closeStack, err := openTUNStack(so)
	if err != nil {
		return err
	}
	defer closeStack()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := ncConnect(ctx, s, o)
	if err != nil {
		return err
	}
	if o.verbose {
		if c.MultipathTCP() {
			fmt.Fprintf(stderr, "umptcp nc: connected %s <-> %s using MPTCP (DSS checksums %s)\n", c.LocalAddr(), c.RemoteAddr(), onOff(c.Stats().Checksum))
		} else {
			fmt.Fprintf(stderr, "umptcp nc: connected %s <-> %s using plain TCP: %s\n", c.LocalAddr(), c.RemoteAddr(), c.FallbackReason())
		}
	}
	err = pump(ctx, c, stdin, stdout)
	c.Close()
	select { // let the DATA_FIN and FIN exchanges finish before the devices go
	case <-c.Done():
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	if o.verbose {
		printStats(stderr, c)
		printMIB(stderr, "umptcp nc: ", s)
	}
	if pcap != nil {
		if perr := pcap.Close(); perr != nil && err == nil {
			err = perr
		}
		if cerr := pcapFile.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

func ncConnect(ctx context.Context, s *stack.Stack, o ncOptions) (*stack.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if !o.listen {
		return s.DialContext(ctx, "tcp", net.JoinHostPort(o.host, strconv.Itoa(int(o.port))))
	}
	ln, err := s.Listen("tcp", ":"+strconv.Itoa(int(o.port)))
	if err != nil {
		return nil, err
	}
	type res struct {
		c   *stack.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.AcceptConn(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			ln.Close()
			return nil, r.err
		}
		// One connection is served, but the peer may still join more
		// subflows to it, which needs the listener (as in Linux).
		ln.JoinsOnly()
		go func() {
			<-r.c.Done()
			ln.Close()
		}()
		return r.c, nil
	case <-ctx.Done():
		ln.Close()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("no connection within %v", o.timeout)
		}
		return nil, ctx.Err()
	}
}

// pump copies stdin to the connection (then DATA_FIN) and the connection
// to stdout, until both directions are done.
func pump(ctx context.Context, c *stack.Conn, stdin io.Reader, stdout io.Writer) error {
	up := make(chan error, 1)
	down := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(c, stdin, make([]byte, 256<<10))
		if err == nil {
			err = c.CloseWrite()
		}
		up <- err
	}()
	go func() {
		_, err := io.CopyBuffer(stdout, c, make([]byte, 256<<10))
		down <- err
	}()
	var first error
	for pending := 2; pending > 0; pending-- {
		select {
		case err := <-up:
			if err != nil && first == nil {
				first = fmt.Errorf("sending: %w", err)
			}
		case err := <-down:
			if err != nil && first == nil {
				first = fmt.Errorf("receiving: %w", err)
			}
		case <-ctx.Done():
			return errors.New("interrupted")
		}
		if first != nil {
			return first
		}
	}
	return nil
}

func printStats(w io.Writer, c *stack.Conn) {
	st := c.Stats()
	mode := "MPTCP"
	if !st.MPTCP {
		mode = "plain TCP (" + st.FallbackReason + ")"
	}
	fmt.Fprintf(w, "umptcp nc: %s, DSS checksums %s, %d subflow(s), sent %d bytes, received %d bytes\n", mode, onOff(st.Checksum), len(st.Subflows), st.BytesSent, st.BytesReceived)
	for i, s := range st.Subflows {
		kind := "initial"
		if s.Join {
			kind = "join"
		}
		if s.Backup {
			kind += ",backup"
		}
		fmt.Fprintf(w, "umptcp nc:   subflow %d: %s <-> %s  sent %d  received %d  rtt %v  (%s, %s)\n", i+1, s.Local, s.Remote, s.BytesSent, s.BytesReceived, s.RTT.Round(time.Microsecond), kind, s.State)
	}
	if st.Reinjected > 0 {
		fmt.Fprintf(w, "umptcp nc:   %d bytes sent again on another subflow\n", st.Reinjected)
	}
}
