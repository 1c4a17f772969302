package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

// demo runs two in-process stacks joined by an emulated link and moves
// data both ways over one MPTCP connection.
func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("umptcp demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.Int64("size", 64<<20, "bytes to send in each direction")
	rate := fs.Float64("rate", 0, "link rate in Mbit/s per direction (0 = unlimited)")
	delay := fs.Duration("delay", 5*time.Millisecond, "one-way link delay")
	loss := fs.Float64("loss", 0, "packet loss probability per direction (0..1)")
	csum := fs.Bool("checksum", false, "ask for DSS checksums")
	quiet := fs.Bool("q", false, "no progress line")
	paths := fs.Int("paths", 2, "number of emulated paths (subflows) between the stacks, 1-8")
	sched := fs.String("scheduler", "default", "packet scheduler: "+strings.Join(scheduler.Names(), ", "))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *size <= 0 || *loss < 0 || *loss >= 1 || *rate < 0 || *paths < 1 || *paths > 8 {
		fmt.Fprintln(stderr, "umptcp demo: bad arguments (see -h)")
		return 2
	}
	if _, err := scheduler.New(*sched); err != nil {
		fmt.Fprintf(stderr, "umptcp demo: %v\n", err)
		return 2
	}
	if err := runDemo(demoOptions{*size, *rate, *delay, *loss, *csum, *quiet, *paths, *sched}, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "\numptcp demo: %v\n", err)
		return 1
	}
	return 0
}

type direction struct {
	name          string
	sent, recv    [32]byte
	bytes         atomic.Int64
	start, finish time.Time
	err           error
}

type demoOptions struct {
	size     int64
	rateMbit float64
	delay    time.Duration
	loss     float64
	csum     bool
	quiet    bool
	paths    int
	sched    string
}

func runDemo(o demoOptions, stdout, stderr io.Writer) error {
	size, rateMbit, delay, loss, quiet := o.size, o.rateMbit, o.delay, o.loss, o.quiet
	var cl, sl []stack.Link
	for i := 0; i < o.paths; i++ {
		p := tun.LinkParams{Rate: int64(rateMbit * 1e6), Delay: delay, Loss: loss, Seed: int64(i + 1)}
		a, b := tun.NewPipe(p, p)
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.99.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.99.%d.2/24", i))}})
	}
	client, err := stack.New(stack.Config{Links: cl, Checksum: o.csum, Scheduler: o.sched})
	if err != nil {
		return err
	}
	defer client.Close()
	server, err := stack.New(stack.Config{Links: sl, Scheduler: o.sched})
	if err != nil {
		return err
	}
	defer server.Close()
	ln, err := server.Listen("tcp", ":4242")
	if err != nil {
		return err
	}
	defer ln.Close()
	accepted := make(chan *stack.Conn, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	cc, err := client.Dial("tcp", "10.99.0.2:4242")
	if err != nil {
		return err
	}
	defer cc.Close()
	var sc *stack.Conn
	select {
	case sc = <-accepted:
	case <-time.After(10 * time.Second):
	}
	if sc == nil {
		return errors.New("the server did not accept the connection")
	}
	defer sc.Close()

	// The client joins a subflow over every other path once the
	// connection is established; the transfer starts when they are up.
	deadline := time.Now().Add(5 * time.Second)
	for len(cc.Stats().Subflows) < o.paths && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "umptcp demo: one MPTCP connection between two in-process stacks over %d path(s), scheduler %s\n", o.paths, o.sched)
	fmt.Fprintf(stdout, "  each path: %s per direction, %v one-way delay, %.1f%% loss\n", rateString(rateMbit), delay, loss*100)

	up := &direction{name: "client -> server"}
	down := &direction{name: "server -> client"}
	done := make(chan struct{}, 4)
	start := time.Now()
	for _, d := range []struct {
		dir      *direction
		src, dst *stack.Conn
		seed     byte
	}{{up, cc, sc, 1}, {down, sc, cc, 2}} {
		dir, src, dst, seed := d.dir, d.src, d.dst, d.seed
		dir.start = start
		go func() { dir.sent = sendStream(src, seed, size, &dir.err); done <- struct{}{} }()
		go func() {
			h := sha256.New()
			n, err := io.CopyBuffer(h, countingReader{dst, &dir.bytes}, make([]byte, 256<<10))
			if err == nil && n != size {
				err = fmt.Errorf("%s: received %d bytes, want %d", dir.name, n, size)
			}
			if err != nil && dir.err == nil {
				dir.err = err
			}
			copy(dir.recv[:], h.Sum(nil))
			dir.finish = time.Now()
			done <- struct{}{}
		}()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Minute)
	for pending := 4; pending > 0; {
		select {
		case <-done:
			pending--
		case <-tick.C:
			if !quiet {
				el := time.Since(start).Seconds()
				fmt.Fprintf(stderr, "\r  %5.1fs  up %7.1f MiB (%6.1f Mbit/s)  down %7.1f MiB (%6.1f Mbit/s)  ", el,
					mib(up.bytes.Load()), mbit(up.bytes.Load(), el), mib(down.bytes.Load()), mbit(down.bytes.Load(), el))
			}
		case <-timeout:
			return errors.New("transfer did not finish within 10 minutes")
		}
	}
	if !quiet {
		fmt.Fprintln(stderr)
	}
	st := cc.Stats()
	fmt.Fprintf(stdout, "  MPTCP in use: client %s, server %s; DSS checksums %s\n", yesNo(cc.MultipathTCP()), yesNo(sc.MultipathTCP()), onOff(st.Checksum))
	fmt.Fprintf(stdout, "  subflows: %d\n", len(st.Subflows))
	for i, s := range st.Subflows {
		kind := "initial"
		if s.Join {
			kind = "MP_JOIN"
		}
		fmt.Fprintf(stdout, "    #%d %s <-> %s  %-7s  rtt %v  sent %s  received %s\n", i+1, s.Local, s.Remote, kind, s.RTT.Round(10*time.Microsecond), human(s.BytesSent), human(s.BytesReceived))
	}
	ok := true
	for _, d := range []*direction{up, down} {
		el := d.finish.Sub(d.start).Seconds()
		match := d.err == nil && d.sent == d.recv
		ok = ok && match
		fmt.Fprintf(stdout, "  %s: %s in %.2fs = %.1f Mbit/s\n", d.name, human(uint64(d.bytes.Load())), el, mbit(d.bytes.Load(), el))
		fmt.Fprintf(stdout, "    sha256 sent     %s\n    sha256 received %s  %s\n", hex.EncodeToString(d.sent[:]), hex.EncodeToString(d.recv[:]), map[bool]string{true: "equal", false: "DIFFERENT"}[match])
		if d.err != nil {
			fmt.Fprintf(stdout, "    error: %v\n", d.err)
		}
	}
	if !ok {
		return errors.New("data did not arrive intact")
	}
	return nil
}

// sendStream writes size pseudo-random bytes, half-closes, and returns
// their sha256.
func sendStream(c *stack.Conn, seed byte, size int64, errp *error) [32]byte {
	var s [32]byte
	s[0] = seed
	r := rand.NewChaCha8(s)
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for left := size; left > 0; {
		n := int(min(int64(len(buf)), left))
		r.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			*errp = err
			break
		}
		left -= int64(n)
	}
	if err := c.CloseWrite(); err != nil && *errp == nil {
		*errp = err
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

type countingReader struct {
	r net.Conn
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
func mbit(n int64, sec float64) float64 {
	if sec <= 0 {
		return 0
	}
	return float64(n) * 8 / sec / 1e6
}

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func rateString(mbit float64) string {
	if mbit == 0 {
		return "unlimited rate"
	}
	return fmt.Sprintf("%g Mbit/s", mbit)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (fallback to TCP)"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
