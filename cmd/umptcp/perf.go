package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	iperf "github.com/umptcp/umptcp/perf"
	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/stack"
)

const perfUsage = `usage:
  umptcp perf -s [-p PORT] [-1] [-i SEC] [--json] --tun NAME,STACKADDR/PREFIX,HOSTADDR [--tun ...]
  umptcp perf -c HOST [-p PORT] [-t SEC | -n BYTES] [-R] [-P N] [-l LEN] [-b RATE] [-O SEC]
              [-i SEC] [--json] --tun NAME,STACKADDR/PREFIX,HOSTADDR [--tun ...]
  (both) [--scheduler NAME] [--backup NAME] [--checksum]
         [--endpoint ADDR[:PORT],FLAG[,FLAG...]] [--limits subflows=N,add_addr_accepted=M]

Throughput tests over the userspace MPTCP stack, speaking iperf3's own
protocol: either end can be a stock iperf3, for example the kernel's MPTCP
with "mptcpize run iperf3 -s" or "mptcpize run iperf3 -c ...". Each --tun
creates TUN device NAME in the current network namespace (as for umptcp nc);
with several, every connection also joins subflows over the others. Needs
root (CAP_NET_ADMIN) for the TUN devices.

Each interval lists every stream, then each of its subflows: addresses,
bitrate in the interval, RTT, initial or join, backup, state. The summary
has both sides' totals, each subflow's bytes, the bytes reinjected, and
whether MPTCP was used. --json prints one document shaped like iperf3 -J,
with "subflows" added to each interval and stream and the stack's non-zero
MPTCP counters (nstat names) as "mptcp_counters" in "end"; the text summary
ends with them. --endpoint and --limits configure the path manager as for
umptcp nc. Stream IDs are iperf3's
protocol IDs (1, 3, 4, ...). Sizes take K/M/G suffixes (1024-based), rates
(-b) K/M/G (1000-based).

flags:
`

// perfOptions are the parsed command line.
type perfOptions struct {
	server, once, json, checksum bool
	host                         string
	port                         int
	tuns, backups                tunSpecs
	scheduler                    string
	interval                     time.Duration
	client                       iperf.Options
	pm                           pmFlags
}

// perfSizeFlag is a byte count with iperf3's K/M/G suffixes.
type perfSizeFlag struct {
	v     *int64
	parse func(string) (int64, error)
}

func (f perfSizeFlag) String() string {
	if f.v == nil || *f.v == 0 { // no "(default 0)" in the help
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f perfSizeFlag) Set(s string) error {
	v, err := f.parse(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

// perfSecondsFlag is a duration in (fractional) seconds, as iperf3 takes them.
type perfSecondsFlag struct{ d *time.Duration }

func (f perfSecondsFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return strconv.FormatFloat(f.d.Seconds(), 'g', -1, 64)
}

func (f perfSecondsFlag) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 86400 {
		return fmt.Errorf("bad number of seconds %q", s)
	}
	*f.d = time.Duration(v * float64(time.Second))
	return nil
}

func perf(args []string, stdout, stderr io.Writer) int {
	o, code := parsePerf(args, stderr)
	if code >= 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, closeStack, err := perfStack(o)
	if err != nil {
		fmt.Fprintf(stderr, "umptcp perf: %v\n", err)
		return 1
	}
	defer closeStack()
	if o.server {
		err = perfServer(ctx, o, s, stdout, stderr)
	} else {
		err = perfClient(ctx, o, s, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "umptcp perf: %v\n", err)
		return 1
	}
	return 0
}

// parsePerf parses the command line; code is the exit code to return
// at once (-1: go on).
func parsePerf(args []string, stderr io.Writer) (o perfOptions, code int) {
	fs := flag.NewFlagSet("umptcp perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, perfUsage); fs.PrintDefaults() }
	c := &o.client
	fs.BoolVar(&o.server, "s", false, "run as a server")
	fs.StringVar(&o.host, "c", "", "run as a client of the server at `HOST`")
	fs.IntVar(&o.port, "p", iperf.DefaultPort, "server `port`")
	fs.BoolVar(&o.once, "1", false, "server: serve one test, then exit")
	fs.BoolVar(&o.json, "json", false, "print one JSON document per test, shaped like iperf3 -J")
	fs.BoolVar(&o.json, "J", false, "same as --json")
	o.interval = time.Second
	fs.Var(perfSecondsFlag{&o.interval}, "i", "`SEC` between interval reports (0: none)")
	fs.Var(perfSecondsFlag{&c.Duration}, "t", "client: `SEC` to send (default 10; 0: until interrupted)")
	fs.Var(perfSizeFlag{&c.Bytes, iperf.ParseSize}, "n", "client: `bytes` to send in all (K/M/G), instead of -t")
	fs.BoolVar(&c.Reverse, "R", false, "client: reverse mode, the server sends")
	fs.IntVar(&c.Parallel, "P", 1, "client: `number` of parallel streams (connections)")
	var blockSize int64 = iperf.DefaultBlockSize
	fs.Var(perfSizeFlag{&blockSize, iperf.ParseSize}, "l", "client: `length` of each read and write (K/M)")
	fs.Var(perfSizeFlag{&c.Bitrate, iperf.ParseRate}, "b", "client: `rate` per stream in bits/s (K/M/G; default unlimited)")
	fs.Var(perfSecondsFlag{&c.Omit}, "O", "client: leave out the first `SEC` seconds (rounded up to whole seconds)")
	fs.Var(&o.tuns, "tun", "`NAME,STACKADDR/PREFIX,HOSTADDR`: a TUN device for the stack (repeatable)")
	fs.StringVar(&o.scheduler, "scheduler", "default", "packet `scheduler`: "+strings.Join(scheduler.Names(), ", "))
	fs.Var(&o.backups, "backup", "make subflows over TUN device `NAME` backup paths (repeatable)")
	fs.BoolVar(&o.checksum, "checksum", false, "ask the peer for DSS checksums")
	o.pm.register(fs)
	// Flags may come in any order, also after stray arguments (which are
	// then reported), as with umptcp nc.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return o, 0
			}
			return o, 2
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	usage := func(format string, a ...any) (perfOptions, int) {
		fmt.Fprintf(stderr, "umptcp perf: "+format+"\n", a...)
		return o, 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case len(rest) > 0:
		return usage("unexpected argument %q (the server is -c HOST)", rest[0])
	case o.server == (o.host != ""):
		return usage("give either -s (server) or -c HOST (client)")
	case len(o.tuns) == 0:
		return usage("at least one --tun NAME,STACKADDR/PREFIX,HOSTADDR is required")
	case o.port < 1 || o.port > 65535:
		return usage("bad port %d", o.port)
	case o.interval != 0 && (o.interval < 100*time.Millisecond || o.interval > time.Minute):
		return usage("-i must be 0 or between 0.1 and 60 seconds")
	}
	if o.server {
		for _, f := range []string{"t", "n", "R", "P", "l", "b", "O"} {
			if set[f] {
				return usage("-%s is a client option", f)
			}
		}
	} else {
		if set["1"] {
			return usage("-1 is a server option")
		}
		switch {
		case set["t"] && set["n"]:
			return usage("give either -t or -n, not both")
		case c.Parallel < 1 || c.Parallel > 128:
			return usage("-P must be between 1 and 128")
		case blockSize < 1 || blockSize > 1<<20:
			return usage("-l must be between 1 and 1M")
		}
		c.BlockSize = int(blockSize)
		if set["t"] && c.Duration == 0 {
			c.Duration = -1 // iperf3's -t 0: until interrupted
		}
		o.host = strings.TrimSuffix(strings.TrimPrefix(o.host, "["), "]")
	}
	if _, err := scheduler.New(o.scheduler); err != nil {
		return usage("%v", err)
	}
	if err := o.pm.check(o.tuns); err != nil {
		return usage("%v", err)
	}
	for _, b := range o.backups {
		if !slices.ContainsFunc(o.tuns, func(spec string) bool { return strings.SplitN(spec, ",", 2)[0] == b }) {
			return usage("--backup %s: no --tun device of that name", b)
		}
	}
	return o, -1
}

// perfStack opens the TUN devices and builds the stack over them, one
// link per device, as umptcp nc does.
func perfStack(o perfOptions) (*stack.Stack, func(), error) {
	return openTUNStack(tunStackOptions{tuns: o.tuns, backups: o.backups, checksum: o.checksum, scheduler: o.scheduler,
		endpoints: o.pm.endpoints, limits: o.pm.limits})
}

// perfConns remembers the connections of a test so that their DATA_FIN and
// FIN exchanges can finish before the stack goes away.
type perfConns struct {
	mu    sync.Mutex
	conns []*stack.Conn
}

func (cs *perfConns) add(c *stack.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	// Forget connections that are gone: a server runs for long.
	cs.conns = slices.DeleteFunc(cs.conns, func(c *stack.Conn) bool {
		select {
		case <-c.Done():
			return true
		default:
			return false
		}
	})
	cs.conns = append(cs.conns, c)
}

// settle closes every connection and waits, at most d in all, for them to
// be done.
func (cs *perfConns) settle(d time.Duration) {
	cs.mu.Lock()
	conns := slices.Clone(cs.conns)
	cs.mu.Unlock()
	deadline := time.After(d)
	for _, c := range conns {
		c.Close()
	}
	for _, c := range conns {
		select {
		case <-c.Done():
		case <-deadline:
			return
		}
	}
}

// perfListener records the connections it accepts.
type perfListener struct {
	*stack.Listener
	set *perfConns
}

func (l perfListener) Accept() (net.Conn, error) {
	c, err := l.AcceptConn()
	if err != nil {
		return nil, err
	}
	l.set.add(c)
	return c, nil
}

func perfClient(ctx context.Context, o perfOptions, s *stack.Stack, stdout io.Writer) error {
	var conns perfConns
	defer conns.settle(5 * time.Second)
	addr := net.JoinHostPort(o.host, strconv.Itoa(o.port))
	dial := func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := s.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		conns.add(c)
		return c, nil
	}
	rep := newPerfReport(stdout, o.json, o.interval, s)
	opts := o.client
	opts.Interval = o.interval
	if opts.Interval == 0 {
		opts.Interval = -1
	}
	opts.OnStart, opts.OnInterval = rep.start, rep.interval
	if !o.json {
		fmt.Fprintf(stdout, "Connecting to host %s, port %d\n", o.host, o.port)
		if opts.Reverse {
			fmt.Fprintf(stdout, "Reverse mode, remote host %s is sending\n", o.host)
		}
	}
	rep.connectingTo = map[string]any{"host": o.host, "port": o.port}
	res, err := iperf.RunClient(ctx, dial, opts)
	if errors.Is(err, context.Canceled) {
		err = errors.New("interrupted")
	}
	rep.finish(res, err)
	if err == nil && !o.json {
		fmt.Fprintf(stdout, "\numptcp perf done.\n")
	}
	return err
}

func perfServer(ctx context.Context, o perfOptions, s *stack.Stack, stdout, stderr io.Writer) error {
	ln, err := s.Listen("tcp", ":"+strconv.Itoa(o.port))
	if err != nil {
		return err
	}
	var conns perfConns
	defer conns.settle(5 * time.Second)
	var (
		mu   sync.Mutex
		rep  *perfReport
		test = 1
	)
	banner := func() {
		if o.json {
			fmt.Fprintf(stderr, "umptcp perf: server listening on port %d\n", o.port)
			return
		}
		fmt.Fprintf(stdout, "-----------------------------------------------------------\n"+
			"Server listening on %d (test #%d)\n"+
			"-----------------------------------------------------------\n", o.port, test)
	}
	banner()
	interval := o.interval
	if interval == 0 {
		interval = -1
	}
	err = iperf.Serve(ctx, perfListener{ln, &conns}, iperf.ServerOptions{
		Interval: interval,
		Once:     o.once,
		OnStart: func(st iperf.Start) {
			mu.Lock()
			rep = newPerfReport(stdout, o.json, o.interval, s)
			r := rep
			mu.Unlock()
			if ap, ok := perfAddrPort(st.Control.Remote); ok {
				r.accepted = map[string]any{"host": ap.Addr().String(), "port": ap.Port()}
				if !o.json {
					fmt.Fprintf(stdout, "Accepted connection from %s, port %d\n", ap.Addr(), ap.Port())
				}
			}
			r.start(st)
		},
		OnInterval: func(iv iperf.Interval) {
			mu.Lock()
			r := rep
			mu.Unlock()
			if r != nil {
				r.interval(iv)
			}
		},
		OnResult: func(res iperf.Result, err error) {
			mu.Lock()
			r := rep
			rep = nil
			test++
			mu.Unlock()
			if r == nil { // the test failed before it started
				r = newPerfReport(stdout, o.json, o.interval, s)
			}
			r.finish(res, err)
			if err != nil && !o.once {
				fmt.Fprintf(stderr, "umptcp perf: test failed: %v\n", err)
			}
			if !o.once {
				banner()
			}
		},
	})
	if errors.Is(err, context.Canceled) && !o.once {
		return nil // interrupted while serving: the normal way to stop
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	return err
}

func perfAddrPort(a net.Addr) (netip.AddrPort, bool) {
	if ta, ok := a.(*net.TCPAddr); ok && ta != nil {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	return netip.AddrPort{}, false
}

// perfReport prints one test as it goes (text), or collects it and
// prints one JSON document at the end.
type perfReport struct {
	mu           sync.Mutex
	w            io.Writer
	json         bool
	every        time.Duration
	st           iperf.Start
	started      bool
	intervals    []iperf.Interval
	separated    bool           // the last interval ended with a separator line
	connectingTo map[string]any // client
	accepted     map[string]any // server
	stack        *stack.Stack   // for its MPTCP counters
}

func newPerfReport(w io.Writer, json bool, every time.Duration, s *stack.Stack) *perfReport {
	return &perfReport{w: w, json: json, every: every, stack: s}
}

func (r *perfReport) start(st iperf.Start) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st, r.started = st, true
	if r.json {
		return
	}
	for _, s := range st.Streams {
		l, _ := perfAddrPort(s.Local)
		rm, _ := perfAddrPort(s.Remote)
		fmt.Fprintf(r.w, "[%3d] local %s port %d connected to %s port %d (%s)\n", s.ID, l.Addr(), l.Port(), rm.Addr(), rm.Port(), perfConnMode(s.ConnInfo))
	}
	if r.every > 0 {
		fmt.Fprintf(r.w, "[ ID] Interval           Transfer     Bitrate\n")
	}
}

// perfConnMode says whether a connection uses MPTCP.
func perfConnMode(ci iperf.ConnInfo) string {
	switch {
	case !ci.HasStats:
		return "unknown"
	case ci.MPTCP:
		return "MPTCP"
	}
	return "plain TCP: " + ci.FallbackReason
}

func (r *perfReport) interval(iv iperf.Interval) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.intervals = append(r.intervals, iv)
	if r.json {
		return
	}
	secs := (iv.End - iv.Start).Seconds()
	omitted := ""
	if iv.Omitted {
		omitted = "  (omitted)"
	}
	for _, s := range iv.Streams {
		fmt.Fprintf(r.w, "[%3d] %s  %s  %s%s\n", s.ID, perfSpan(iv.Start, iv.End), perfBytes(s.Bytes), perfBits(float64(s.Bytes)*8/secs), omitted)
		for _, sf := range s.Subflows {
			b := sf.Received
			if s.Sender {
				b = sf.Sent
			}
			fmt.Fprintf(r.w, "        subflow %d  %s -> %s  %s  rtt %s  %s\n", sf.ID, sf.Local, sf.Remote,
				perfBits(float64(b)*8/secs), perfRTT(sf.RTT), perfSubflowKind(sf))
		}
	}
	if len(iv.Streams) > 1 {
		fmt.Fprintf(r.w, "[SUM] %s  %s  %s%s\n", perfSpan(iv.Start, iv.End), perfBytes(iv.Bytes), perfBits(float64(iv.Bytes)*8/secs), omitted)
	}
	// Blocks of several lines are separated, as iperf3 does with -P.
	r.separated = len(iv.Streams) > 1 || len(iv.Streams[0].Subflows) > 1
	if r.separated {
		fmt.Fprintf(r.w, "- - - - - - - - - - - - - - - - - - - - - - - - -\n")
	}
}

func perfSpan(a, b time.Duration) string {
	return fmt.Sprintf("%6.2f-%-6.2f sec", a.Seconds(), b.Seconds())
}

func perfSubflowKind(sf iperf.Subflow) string {
	k := "initial"
	if sf.Join {
		k = "join"
	}
	if sf.Backup {
		k += ", backup"
	}
	if sf.State != "active" {
		k += ", " + sf.State
	}
	return k
}

func perfRTT(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// perfBytes and perfBits write numbers as iperf3 does: at most four
// significant places, bytes in powers of 1024, bits in powers of 1000.
func perfBytes(n int64) string {
	return perfUnits(float64(n), 1024, []string{"Bytes", "KBytes", "MBytes", "GBytes", "TBytes"})
}

func perfBits(bps float64) string {
	return perfUnits(bps, 1000, []string{"bits/sec", "Kbits/sec", "Mbits/sec", "Gbits/sec", "Tbits/sec"})
}

func perfUnits(v, base float64, units []string) string {
	i := 0
	for v >= base && i < len(units)-1 {
		v /= base
		i++
	}
	switch {
	case v < 9.995:
		return fmt.Sprintf("%4.2f %s", v, units[i])
	case v < 99.95:
		return fmt.Sprintf("%4.1f %s", v, units[i])
	}
	return fmt.Sprintf("%4.0f %s", v, units[i])
}

// finish prints the summary (text) or the whole document (JSON).
func (r *perfReport) finish(res iperf.Result, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.json {
		doc := r.document(res, err)
		b, merr := json.MarshalIndent(doc, "", "\t")
		if merr != nil {
			b = []byte(fmt.Sprintf(`{"error": %q}`, merr.Error()))
		}
		fmt.Fprintf(r.w, "%s\n", b)
		return
	}
	if err != nil || len(res.Streams) == 0 {
		return
	}
	if !r.separated {
		fmt.Fprintf(r.w, "- - - - - - - - - - - - - - - - - - - - - - - - -\n")
	}
	fmt.Fprintf(r.w, "[ ID] Interval           Transfer     Bitrate\n")
	line := func(id string, bytes int64, el time.Duration, role string) {
		fmt.Fprintf(r.w, "[%s] %s  %s  %s                  %s\n", id, perfSpan(0, el), perfBytes(bytes), perfBits(iperf.Bitrate(bytes, el)), role)
	}
	mptcp, subflows, joins := 0, 0, 0
	var reinjected uint64
	for _, s := range res.Streams {
		id := fmt.Sprintf("%3d", s.ID)
		sent, recvd := iperf.Side{Bytes: s.Bytes, Elapsed: s.Elapsed}, iperf.Side{Bytes: s.PeerBytes, Elapsed: s.PeerElapsed}
		if !s.Sender {
			sent, recvd = recvd, sent
		}
		line(id, sent.Bytes, sent.Elapsed, "sender")
		line(id, recvd.Bytes, recvd.Elapsed, "receiver")
		for _, sf := range s.Subflows {
			fmt.Fprintf(r.w, "        subflow %d  %s -> %s  sent %s  received %s  rtt %s  %s\n", sf.ID, sf.Local, sf.Remote,
				perfBytes(int64(sf.Sent)), perfBytes(int64(sf.Received)), perfRTT(sf.RTT), perfSubflowKind(sf))
			subflows++
			if sf.Join {
				joins++
			}
		}
		if s.HasStats {
			fmt.Fprintf(r.w, "        %s, DSS checksums %s, %s reinjected\n", perfConnMode(s.ConnInfo), onOff(s.Checksum), perfBytes(int64(s.Reinjected)))
		}
		if s.MPTCP {
			mptcp++
		}
		reinjected += s.Reinjected
	}
	if len(res.Streams) > 1 {
		sent, recvd := res.Totals()
		line("SUM", sent.Bytes, sent.Elapsed, "sender")
		line("SUM", recvd.Bytes, recvd.Elapsed, "receiver")
	}
	switch {
	case res.MPTCP():
		fmt.Fprintf(r.w, "MPTCP on all %d stream(s): %d subflow(s), %d of them joined; %d bytes reinjected\n", len(res.Streams), subflows, joins, reinjected)
	default:
		fmt.Fprintf(r.w, "MPTCP on %d of %d stream(s)\n", mptcp, len(res.Streams))
	}
	if r.stack != nil {
		printMIB(r.w, "MPTCP ", r.stack)
	}
}

// The JSON document follows iperf3 -J's layout and names; "subflows",
// "mptcp", "checksum" and "reinjected" are additions.

type perfJSONSample struct {
	Socket        int     `json:"socket,omitempty"`
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Seconds       float64 `json:"seconds"`
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Omitted       *bool   `json:"omitted,omitempty"`
	Sender        bool    `json:"sender"`
}

type perfJSONSubflow struct {
	Socket        int     `json:"socket"` // the stream
	ID            int     `json:"id"`
	LocalHost     string  `json:"local_host"`
	LocalPort     uint16  `json:"local_port"`
	RemoteHost    string  `json:"remote_host"`
	RemotePort    uint16  `json:"remote_port"`
	BytesSent     uint64  `json:"bytes_sent"`
	BytesReceived uint64  `json:"bytes_received"`
	BitsPerSecond float64 `json:"bits_per_second"` // in the stream's direction
	RTT           int64   `json:"rtt"`             // microseconds, as iperf3's rtt
	Join          bool    `json:"join"`
	Backup        bool    `json:"backup"`
	State         string  `json:"state"`
}

func perfJSONSubflows(streamID int, sender bool, sfs []iperf.Subflow, secs float64) []perfJSONSubflow {
	var out []perfJSONSubflow
	for _, sf := range sfs {
		b := sf.Received
		if sender {
			b = sf.Sent
		}
		bps := 0.0
		if secs > 0 {
			bps = float64(b) * 8 / secs
		}
		out = append(out, perfJSONSubflow{Socket: streamID, ID: sf.ID, LocalHost: sf.Local.Addr().String(), LocalPort: sf.Local.Port(),
			RemoteHost: sf.Remote.Addr().String(), RemotePort: sf.Remote.Port(), BytesSent: sf.Sent, BytesReceived: sf.Received,
			BitsPerSecond: bps, RTT: sf.RTT.Microseconds(), Join: sf.Join, Backup: sf.Backup, State: sf.State})
	}
	return out
}

func (r *perfReport) document(res iperf.Result, err error) map[string]any {
	st := r.st
	if !r.started {
		st = res.Start
	}
	doc := map[string]any{}
	start := map[string]any{
		"version":     "umptcp perf (iperf3 protocol)",
		"system_info": "umptcp userspace MPTCP on " + runtime.GOOS + "/" + runtime.GOARCH,
	}
	if r.started {
		var connected []map[string]any
		for _, s := range st.Streams {
			l, _ := perfAddrPort(s.Local)
			rm, _ := perfAddrPort(s.Remote)
			connected = append(connected, map[string]any{"socket": s.ID, "local_host": l.Addr().String(), "local_port": l.Port(),
				"remote_host": rm.Addr().String(), "remote_port": rm.Port(), "mptcp": s.MPTCP})
		}
		start["connected"] = connected
		start["timestamp"] = map[string]any{"time": st.Time.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"), "timesecs": st.Time.Unix()}
		start["cookie"] = st.Cookie
		start["tcp_mss_default"] = 0
		start["target_bitrate"] = st.Params.Bitrate
		start["mptcp"] = st.Control.MPTCP
		reverse := 0
		if st.Params.Reverse {
			reverse = 1
		}
		start["test_start"] = map[string]any{"protocol": "TCP", "num_streams": st.Params.Parallel, "blksize": st.Params.BlockSize,
			"omit": int64(st.Params.Omit.Seconds()), "duration": int64(math.Ceil(st.Params.Duration.Seconds())), "bytes": st.Params.Bytes,
			"blocks": st.Params.Blocks, "reverse": reverse, "tos": 0, "target_bitrate": st.Params.Bitrate}
	}
	if r.connectingTo != nil {
		start["connecting_to"] = r.connectingTo
	}
	if r.accepted != nil {
		start["accepted_connection"] = r.accepted
	}
	doc["start"] = start

	intervals := []map[string]any{}
	for _, iv := range r.intervals {
		secs := (iv.End - iv.Start).Seconds()
		omitted := iv.Omitted
		var streams []perfJSONSample
		subflows := []perfJSONSubflow{}
		sender := false
		for _, s := range iv.Streams {
			streams = append(streams, perfJSONSample{Socket: s.ID, Start: iv.Start.Seconds(), End: iv.End.Seconds(), Seconds: secs,
				Bytes: s.Bytes, BitsPerSecond: float64(s.Bytes) * 8 / secs, Omitted: &omitted, Sender: s.Sender})
			subflows = append(subflows, perfJSONSubflows(s.ID, s.Sender, s.Subflows, secs)...)
			sender = s.Sender
		}
		intervals = append(intervals, map[string]any{"streams": streams, "subflows": subflows,
			"sum": perfJSONSample{Start: iv.Start.Seconds(), End: iv.End.Seconds(), Seconds: secs, Bytes: iv.Bytes,
				BitsPerSecond: float64(iv.Bytes) * 8 / secs, Omitted: &omitted, Sender: sender}})
	}
	doc["intervals"] = intervals

	end := map[string]any{}
	if err == nil && len(res.Streams) > 0 {
		var streams []map[string]any
		var reinjected uint64
		sender := false
		for _, s := range res.Streams {
			mine := perfJSONSample{Socket: s.ID, End: s.Elapsed.Seconds(), Seconds: s.Elapsed.Seconds(), Bytes: s.Bytes,
				BitsPerSecond: iperf.Bitrate(s.Bytes, s.Elapsed), Sender: s.Sender}
			peer := perfJSONSample{Socket: s.ID, End: s.PeerElapsed.Seconds(), Seconds: s.PeerElapsed.Seconds(), Bytes: s.PeerBytes,
				BitsPerSecond: iperf.Bitrate(s.PeerBytes, s.PeerElapsed), Sender: s.Sender}
			snd, rcv := mine, peer
			if !s.Sender {
				snd, rcv = peer, mine
			}
			streams = append(streams, map[string]any{"sender": snd, "receiver": rcv, "mptcp": s.MPTCP, "checksum": s.Checksum,
				"reinjected": s.Reinjected, "subflows": perfJSONSubflows(s.ID, s.Sender, s.Subflows, s.Elapsed.Seconds())})
			reinjected += s.Reinjected
			sender = s.Sender
		}
		sent, recvd := res.Totals()
		end["streams"] = streams
		end["sum_sent"] = perfJSONSample{End: sent.Elapsed.Seconds(), Seconds: sent.Elapsed.Seconds(), Bytes: sent.Bytes, BitsPerSecond: sent.Bitrate(), Sender: sender}
		end["sum_received"] = perfJSONSample{End: recvd.Elapsed.Seconds(), Seconds: recvd.Elapsed.Seconds(), Bytes: recvd.Bytes, BitsPerSecond: recvd.Bitrate(), Sender: sender}
		end["cpu_utilization_percent"] = map[string]float64{"host_total": res.CPU.Total, "host_user": res.CPU.User, "host_system": res.CPU.System,
			"remote_total": res.PeerCPU.Total, "remote_user": res.PeerCPU.User, "remote_system": res.PeerCPU.System}
		end["mptcp"] = res.MPTCP()
		end["reinjected"] = reinjected
		if r.stack != nil {
			end["mptcp_counters"] = nonZeroMIB(r.stack)
		}
	}
	doc["end"] = end
	if err != nil {
		doc["error"] = err.Error()
	}
	return doc
}
