package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/umptcp/umptcp/tun"
)

const emulateUsage = `usage:
  umptcp emulate [--rate RATE] [--delay D] [--jitter D] [--reorder] [--loss P] [--dup P]
                 [--queue BYTES] [--mtu N] [--strip-mptcp WHERE] [--corrupt N[@BYTES]]
                 [--blackhole-after D] [--duration D] [-v] A B

  A, B: [NETNS:]NAME,ADDR/PREFIX   create TUN device NAME (in network namespace
        NETNS, a name under /run/netns, default the current one) whose kernel
        side gets ADDR/PREFIX

Forwards packets between two TUN devices through an emulated link, so that
two Linux kernels (typically in two network namespaces) talk over exactly the
emulation umptcp's own tests use: rate limit with a drop-tail queue, delay,
jitter, loss, duplication, blackholing. The flags shape both directions alike
(--rate-ba and --delay-ba set A<-B apart). Runs until SIGINT or SIGTERM (or
--duration), then prints per-direction statistics. Needs root (CAP_NET_ADMIN
and, for NETNS, CAP_SYS_ADMIN).

RATE is bits per second with an optional suffix: 800kbit, 50mbit, 50M,
1.5gbit (decimal k/m/g; "bps" forms are refused as ambiguous). P is a
probability: 0.01 or 1%. BYTES takes k or m (x1024), and g for --corrupt.
--mtu sets the devices' MTU and the largest packet the link carries
(default 1500).

Two middleboxes make MPTCP fall back to TCP, each way alike:
--strip-mptcp blanks MPTCP options (TCP option kind 30) with NOPs on SYNs
only ("syn", a box that does not know MPTCP's handshake), on every other
segment ("data", options removed once the handshake passed) or on all
("all"). --corrupt N@BYTES lets BYTES of TCP payload pass untouched, then
rewrites a few payload bytes of the next N segments carrying data while
keeping the TCP checksum valid (as a payload-rewriting ALG or NAT), so that
only MPTCP's DSS checksum can notice; --corrupt N rewrites the first N.

flags:
`

// rateFlag is a rate in bits per second that remembers whether it was set.
type rateFlag struct {
	bps int64
	set bool
}

func (r *rateFlag) String() string {
	if r == nil || r.bps == 0 {
		return "0"
	}
	return formatRate(float64(r.bps))
}

func (r *rateFlag) Set(s string) error {
	v, err := parseRate(s)
	if err != nil {
		return err
	}
	r.bps, r.set = v, true
	return nil
}

// durFlag is a non-negative duration that remembers whether it was set.
type durFlag struct {
	d   time.Duration
	set bool
}

func (f *durFlag) String() string {
	if f == nil {
		return "0s"
	}
	return f.d.String()
}

func (f *durFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration like 20ms or 1.5s")
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	f.d, f.set = d, true
	return nil
}

// probFlag is a probability in [0, 1], written 0.01 or 1%.
type probFlag float64

func (p *probFlag) String() string { return strconv.FormatFloat(float64(*p), 'g', -1, 64) }

func (p *probFlag) Set(s string) error {
	v, err := parseProb(s)
	if err != nil {
		return err
	}
	*p = probFlag(v)
	return nil
}

// bytesFlag is a byte count with optional k/m (x1024) suffix.
type bytesFlag int

func (b *bytesFlag) String() string { return strconv.Itoa(int(*b)) }

func (b *bytesFlag) Set(s string) error {
	v, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = bytesFlag(v)
	return nil
}

// stripFlag is a tun.StripWhere.
type stripFlag tun.StripWhere

func (w *stripFlag) String() string { return tun.StripWhere(*w).String() }

func (w *stripFlag) Set(s string) error {
	v, err := tun.ParseStripWhere(s)
	if err != nil {
		return err
	}
	*w = stripFlag(v)
	return nil
}

// corruptFlag is N[@BYTES]: rewrite N segments after BYTES payload bytes.
type corruptFlag struct {
	segments int
	after    int64
}

func (c *corruptFlag) String() string {
	if c == nil || c.segments == 0 {
		return "0"
	}
	return strconv.Itoa(c.segments) + "@" + strconv.FormatInt(c.after, 10)
}

func (c *corruptFlag) Set(s string) error {
	n, at, hasAt := strings.Cut(strings.TrimSpace(s), "@")
	v, err := strconv.Atoi(n)
	if err != nil || v < 0 {
		return fmt.Errorf("bad segment count %q: want N or N@BYTES, e.g. 3 or 3@1m", s)
	}
	c.segments, c.after = v, 0
	if hasAt {
		if c.after, err = parseSize(at); err != nil {
			return err
		}
	}
	return nil
}

// emulatePort is one side of the forwarder: a TUN device to create.
type emulatePort struct {
	netns string // "" = the current namespace
	cfg   tun.Config
}

func (p emulatePort) String() string {
	if p.netns == "" {
		return p.cfg.Name
	}
	return p.netns + ":" + p.cfg.Name
}

type emulateOptions struct {
	portA, portB   emulatePort
	ab, ba         tun.LinkParams
	blackholeAfter time.Duration // if blackholeIsSet
	blackholeIsSet bool
	duration       time.Duration // if durationIsSet; else until a signal
	durationIsSet  bool
	verbose        bool
	statsInterval  time.Duration // of -v
}

func emulate(args []string, stdout, stderr io.Writer) int {
	o, code := parseEmulate(args, stderr)
	if code >= 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runEmulate(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "umptcp emulate: %v\n", err)
		return 1
	}
	return 0
}

// parseEmulate parses the command line; code is the exit code to return
// at once (0 for -h, 2 for bad usage), or -1 to go on.
func parseEmulate(args []string, stderr io.Writer) (o emulateOptions, code int) {
	fs := flag.NewFlagSet("umptcp emulate", flag.ContinueOnError)
	// Errors are printed below as one line; only -h prints the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var rate, rateBA rateFlag
	var delay, delayBA, jitter, blackholeAfter, duration durFlag
	var loss, dup probFlag
	var queue bytesFlag
	var strip stripFlag
	var corrupt corruptFlag
	fs.Var(&rate, "rate", "link `RATE` in bits/s each way, e.g. 50mbit (0 = unlimited)")
	fs.Var(&rateBA, "rate-ba", "`RATE` from B to A, if it differs from --rate")
	fs.Var(&delay, "delay", "one-way delay `D` each way, e.g. 20ms")
	fs.Var(&delayBA, "delay-ba", "one-way delay `D` from B to A, if it differs from --delay")
	fs.Var(&jitter, "jitter", "extra random delay in [0, `D`) per packet; order is kept unless --reorder")
	reorder := fs.Bool("reorder", false, "let jittered packets overtake each other")
	fs.Var(&loss, "loss", "random loss probability `P` each way, e.g. 0.01 or 1%")
	fs.Var(&dup, "dup", "probability `P` that a packet is delivered twice")
	fs.Var(&queue, "queue", "drop-tail queue limit of the rate limiter in `BYTES` (default about one bandwidth-delay product)")
	mtu := fs.Int("mtu", 0, "MTU `N` of both devices and the link (default 1500)")
	fs.Var(&strip, "strip-mptcp", "blank MPTCP options on `WHERE`: none, syn (SYN and SYN-ACK), data (all but SYNs) or all")
	fs.Var(&corrupt, "corrupt", "rewrite the payload of `N[@BYTES]` data segments each way, after BYTES of payload (default 0), keeping the TCP checksum valid")
	fs.Var(&blackholeAfter, "blackhole-after", "drop everything both ways from `D` after the start on")
	fs.Var(&duration, "duration", "stop after `D` (default: run until SIGINT or SIGTERM)")
	seed := fs.Int64("seed", 1, "`seed` of the loss, jitter and duplication randomness")
	verbose := fs.Bool("v", false, "print each direction's throughput every second")
	// Flags may also follow A and B.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stderr, emulateUsage)
				fs.SetOutput(stderr)
				fs.PrintDefaults()
				return o, 0
			}
			fmt.Fprintf(stderr, "umptcp emulate: %v (see umptcp emulate -h)\n", err)
			return o, 2
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	usageErr := func(format string, a ...any) (emulateOptions, int) {
		fmt.Fprintf(stderr, "umptcp emulate: "+format+"\n", a...)
		return o, 2
	}
	if len(rest) != 2 {
		return usageErr("expected two devices A B ([NETNS:]NAME,ADDR/PREFIX), got %d argument(s)", len(rest))
	}
	if *mtu < 0 || *mtu > 65535 {
		return usageErr("bad --mtu %d: want 68..65535", *mtu)
	}
	var err error
	if o.portA, err = parsePort(rest[0], *mtu); err != nil {
		return usageErr("A: %v", err)
	}
	if o.portB, err = parsePort(rest[1], *mtu); err != nil {
		return usageErr("B: %v", err)
	}
	if o.portA.netns == o.portB.netns && o.portA.cfg.Name == o.portB.cfg.Name {
		return usageErr("A and B are the same device %s", o.portA)
	}
	o.ab = tun.LinkParams{
		Rate:       rate.bps,
		Delay:      delay.d,
		Jitter:     jitter.d,
		Reorder:    *reorder,
		Loss:       float64(loss),
		Duplicate:  float64(dup),
		QueueBytes: int(queue),
		MTU:        *mtu,
		Seed:       *seed,

		StripMPTCP:      tun.StripWhere(strip),
		CorruptAfter:    corrupt.after,
		CorruptSegments: corrupt.segments,
	}
	o.ba = o.ab
	o.ba.Seed = *seed + 1 // the same randomness both ways would correlate losses
	if rateBA.set {
		o.ba.Rate = rateBA.bps
	}
	if delayBA.set {
		o.ba.Delay = delayBA.d
	}
	o.blackholeAfter, o.blackholeIsSet = blackholeAfter.d, blackholeAfter.set
	o.duration, o.durationIsSet = duration.d, duration.set
	if o.durationIsSet && o.duration == 0 {
		return usageErr("--duration must be positive")
	}
	o.verbose = *verbose
	o.statsInterval = time.Second
	return o, -1
}

// parsePort parses "[NETNS:]NAME,ADDR/PREFIX". Interface names cannot hold
// a colon and the address comes after the comma, so the namespace is what
// precedes the last colon before the first comma.
func parsePort(s string, mtu int) (emulatePort, error) {
	var p emulatePort
	head, _, _ := strings.Cut(s, ",")
	if i := strings.LastIndexByte(head, ':'); i >= 0 {
		p.netns = s[:i]
		s = s[i+1:]
		if p.netns == "" {
			return p, fmt.Errorf("%q: empty network namespace before ':'", head)
		}
		if strings.ContainsRune(p.netns, '/') && !strings.HasPrefix(p.netns, "/") {
			return p, fmt.Errorf("network namespace %q: want a name under /run/netns or an absolute path", p.netns)
		}
	}
	cfg, err := tun.ParsePortSpec(s)
	if err != nil {
		return p, err
	}
	cfg.MTU = mtu
	if err := cfg.Validate(); err != nil {
		return p, err
	}
	p.cfg = cfg
	return p, nil
}

// parseRate parses "50mbit", "50M", "1.5gbit", "800kbit", "50Mbit/s" or
// plain bits per second.
func parseRate(s string) (int64, error) {
	t := strings.ToLower(strings.ReplaceAll(s, " ", ""))
	t = strings.TrimSuffix(t, "/s")
	if strings.HasSuffix(t, "bps") || strings.HasSuffix(t, "b") && !strings.HasSuffix(t, "bit") {
		return 0, fmt.Errorf("rate %q is ambiguous (bits or bytes?): write bits per second, e.g. 50mbit", s)
	}
	t = strings.TrimSuffix(t, "bit")
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1e6, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1e9, t[:len(t)-1]
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("bad rate %q: want bits per second like 50mbit, 50M, 1.5gbit, 800kbit or 20000000", s)
	}
	bps := v * mult
	if bps < 0 || bps > 1e13 {
		return 0, fmt.Errorf("rate %q out of range 0..10tbit", s)
	}
	if bps > 0 && bps < 8 {
		return 0, fmt.Errorf("rate %q is below 8 bit/s", s)
	}
	return int64(math.Round(bps)), nil
}

// parseProb parses "0.01" or "1%" into [0, 1].
func parseProb(s string) (float64, error) {
	t := strings.TrimSpace(s)
	scale := 1.0
	if strings.HasSuffix(t, "%") {
		scale, t = 100, strings.TrimSuffix(t, "%")
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("bad probability %q: want 0..1 or a percentage like 1%%", s)
	}
	v /= scale
	if v < 0 || v > 1 {
		return 0, fmt.Errorf("probability %q out of range 0..1 (0%%..100%%)", s)
	}
	return v, nil
}

// parseBytes parses "65536", "64k" or "1m" (k, m: x1024).
func parseBytes(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	}
	v, err := strconv.Atoi(t)
	if err != nil || v < 0 || v > 1<<30/mult {
		return 0, fmt.Errorf("bad byte count %q: want 0..1g, e.g. 262144 or 256k", s)
	}
	return v * mult, nil
}

// parseSize parses a byte count such as "100000", "64k", "10m" or "1g"
// (k, m, g: x1024).
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad byte count %q: want e.g. 100000, 64k, 10m or 1g", s)
	}
	return v * mult, nil
}

// formatRate prints bits per second with a decimal unit.
func formatRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return strconv.FormatFloat(bps/1e9, 'f', -1, 64) + "gbit"
	case bps >= 1e6:
		return strconv.FormatFloat(bps/1e6, 'f', -1, 64) + "mbit"
	case bps >= 1e3:
		return strconv.FormatFloat(bps/1e3, 'f', -1, 64) + "kbit"
	}
	return strconv.FormatFloat(bps, 'f', -1, 64) + "bit"
}

// openPort creates the TUN device of p.
func openPort(p emulatePort) (*tun.Device, error) {
	if p.netns == "" {
		return tun.Open(p.cfg)
	}
	return tun.OpenIn(p.netns, p.cfg)
}

// runEmulate creates both devices, forwards until ctx ends or the duration
// passes, and prints the statistics.
func runEmulate(ctx context.Context, o emulateOptions, stdout io.Writer) error {
	devA, err := openPort(o.portA)
	if err != nil {
		return err
	}
	defer devA.Close()
	devB, err := openPort(o.portB)
	if err != nil {
		return err
	}
	defer devB.Close()

	f := tun.Forward(devA.LinkEndpoint(), devB.LinkEndpoint(), o.ab, o.ba)
	defer f.Close()
	start := time.Now()
	fmt.Fprintf(stdout, "umptcp emulate: forwarding %s (%s) <-> %s (%s): %s\n",
		o.portA, o.portA.cfg.HostAddr, o.portB, o.portB.cfg.HostAddr, describeParams(o.ab, o.ba))

	var stopAt, blackholeAt <-chan time.Time
	if o.durationIsSet {
		t := time.NewTimer(o.duration)
		defer t.Stop()
		stopAt = t.C
	}
	if o.blackholeIsSet {
		t := time.NewTimer(o.blackholeAfter)
		defer t.Stop()
		blackholeAt = t.C
	}
	var tick <-chan time.Time
	if o.verbose {
		tk := time.NewTicker(o.statsInterval)
		defer tk.Stop()
		tick = tk.C
	}
	lastAB, lastBA := f.Stats()
	lastT := start
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-stopAt:
			break loop
		case <-blackholeAt:
			ab, ba := f.Params()
			ab.Blackhole, ba.Blackhole = true, true
			f.SetParams(ab, ba)
			fmt.Fprintf(stdout, "umptcp emulate: %v: blackholing both directions\n", time.Since(start).Round(time.Millisecond))
		case now := <-tick:
			ab, ba := f.Stats()
			el := now.Sub(lastT).Seconds()
			fmt.Fprintf(stdout, "umptcp emulate: %6.1fs  A->B %s  B->A %s\n", now.Sub(start).Seconds(),
				throughput(lastAB, ab, el), throughput(lastBA, ba, el))
			lastAB, lastBA, lastT = ab, ba, now
		}
	}
	f.Close()
	ab, ba := f.Stats()
	el := time.Since(start)
	fmt.Fprintf(stdout, "umptcp emulate: stopped after %v\n", el.Round(time.Millisecond))
	printLinkStats(stdout, "A->B", o.portA, o.portB, ab, el)
	printLinkStats(stdout, "B->A", o.portB, o.portA, ba, el)
	return errors.Join(devA.Close(), devB.Close())
}

// describeParams summarises the link's parameters for the start line.
func describeParams(ab, ba tun.LinkParams) string {
	one := func(p tun.LinkParams) string {
		var parts []string
		if p.Rate > 0 {
			parts = append(parts, formatRate(float64(p.Rate)))
		} else {
			parts = append(parts, "unlimited")
		}
		parts = append(parts, "delay "+p.Delay.String())
		if p.Jitter > 0 {
			j := "jitter " + p.Jitter.String()
			if p.Reorder {
				j += " (reordering)"
			}
			parts = append(parts, j)
		}
		if p.Loss > 0 {
			parts = append(parts, fmt.Sprintf("loss %g%%", p.Loss*100))
		}
		if p.Duplicate > 0 {
			parts = append(parts, fmt.Sprintf("dup %g%%", p.Duplicate*100))
		}
		if p.StripMPTCP != tun.StripNone {
			parts = append(parts, "MPTCP options stripped ("+p.StripMPTCP.String()+")")
		}
		if p.CorruptSegments > 0 {
			parts = append(parts, fmt.Sprintf("payload of %d segments rewritten after %d bytes", p.CorruptSegments, p.CorruptAfter))
		}
		if p.Rate > 0 {
			q := p.QueueBytes
			if q == 0 {
				q = p.DefaultQueueBytes()
			}
			parts = append(parts, fmt.Sprintf("queue %d B", q))
		}
		return strings.Join(parts, ", ")
	}
	a, b := one(ab), one(ba)
	if a == b {
		return a + " each way"
	}
	return "A->B " + a + "; B->A " + b
}

// throughput describes what a direction delivered between two snapshots.
func throughput(prev, cur tun.LinkStats, seconds float64) string {
	bits := float64(cur.DeliveredBytes-prev.DeliveredBytes) * 8
	return fmt.Sprintf("%8.2f Mbit/s %6d pkt/s  dropped %d", bits/seconds/1e6,
		int(float64(cur.DeliveredPackets-prev.DeliveredPackets)/seconds), cur.Dropped()-prev.Dropped())
}

func printLinkStats(w io.Writer, dir string, from, to emulatePort, st tun.LinkStats, el time.Duration) {
	fmt.Fprintf(w, "umptcp emulate: %s (%s -> %s): sent %d packets (%d bytes), delivered %d packets (%d bytes, %.2f Mbit/s on average)\n",
		dir, from, to, st.SentPackets, st.SentBytes, st.DeliveredPackets, st.DeliveredBytes, float64(st.DeliveredBytes)*8/el.Seconds()/1e6)
	fmt.Fprintf(w, "umptcp emulate: %s: dropped %d (loss %d, queue %d, blackhole %d, other %d), duplicated %d, MPTCP options stripped from %d, payload rewritten in %d\n",
		dir, st.Dropped(), st.DroppedLoss, st.DroppedQueue, st.DroppedBlackhole, st.DroppedOther, st.Duplicated, st.Stripped, st.Corrupted)
}
