package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

// memSnapshot is the process's memory after a full GC.
type memSnapshot struct {
	heapInuse  uint64 // bytes in in-use heap spans
	heapAlloc  uint64 // bytes of live heap objects
	stackInuse uint64 // goroutine stacks
	rss        uint64 // resident set size
	goroutines int
}

// snapshot collects garbage (twice: finalizers free more on the second
// pass), returns free memory to the OS (so that RSS counts what is used,
// not what earlier scenarios left mapped) and reads the memory figures.
func snapshot() memSnapshot {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSnapshot{heapInuse: m.HeapInuse, heapAlloc: m.HeapAlloc, stackInuse: m.StackInuse, rss: rss(), goroutines: runtime.NumGoroutine()}
}

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func sub(a, b uint64) float64 { return float64(a) - float64(b) }

const scalePort = 5003

// scaleRate is how many connections a second are dialed.
const scaleRate = 250

func runScale(ctx context.Context, r *runner, sc *Scenario) (err error) {
	want := r.p.scaleConns
	budget := r.p.scaleBudget
	sc.Setup = fmt.Sprintf("Two umptcp stacks in this process joined by two unshaped emulated paths. %d MPTCP connections are opened, at most %d a second, "+
		"and each must reach 2 active subflows on both ends (the client joins over path 1); no application data is sent (idle: no receive ring or send buffer allocated yet). "+
		"Then: full GC, and the growth since before the first connection of heap in use (HeapInuse), goroutine stacks (StackInuse) and RSS, divided by the connections open (joined or not); "+
		"the same once a fifth of them are open (a checkpoint before the process gets busy). "+
		"Per end: both paths are blackholed and the client stack closed (its connections go, the server's stay, unaware), then the same figures again: "+
		"what went is the client's share, what stayed the server's. Opening and waiting are bounded by %v.", want, scaleRate, budget)
	stallAfter := min(10*time.Second, budget/5)
	n, err := newInproc([]tun.LinkParams{{}, {}}, "")
	if err != nil {
		return err
	}
	defer func() {
		// Closing 10 000 connections' worth of stack takes a while.
		t0 := time.Now()
		err = errors.Join(err, closeWithin(2*time.Minute, "the scale stacks", func() error { return errors.Join(n.client.Close(), n.server.Close()) }))
		r.vlogf("stacks closed: %v", time.Since(t0).Round(time.Millisecond))
	}()
	ln, err := n.server.Listen("tcp", fmt.Sprintf(":%d", scalePort))
	if err != nil {
		return err
	}
	defer ln.Close()

	base := snapshot()
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	var smu sync.Mutex
	var srvConns []*stack.Conn
	go func() {
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				return
			}
			smu.Lock()
			srvConns = append(srvConns, c)
			smu.Unlock()
		}
	}()

	var cliConns []*stack.Conn
	var firstErr error
	addr := netip.AddrPortFrom(inprocAddr(0, 2).Addr(), scalePort).String()
	// dialAll opens the connections, 16 dialers at a time but no more than
	// scaleRate a second: the joins follow each connection about a second
	// later (no data is sent), and a burst of thousands of joins at once
	// would measure the listener's backlog rather than the memory of a
	// connection.
	dialAll := func(target int) {
		var mu sync.Mutex
		var next atomic.Int64
		next.Store(int64(len(cliConns)))
		var wg sync.WaitGroup
		tokens := make(chan struct{})
		bctx, cancel := context.WithCancel(bctx)
		defer cancel() // stops the token source
		go func() {
			tick := time.NewTicker(time.Second / scaleRate)
			defer tick.Stop()
			for {
				select {
				case <-bctx.Done():
					close(tokens)
					return
				case <-tick.C:
					select {
					case tokens <- struct{}{}:
					case <-bctx.Done():
						close(tokens)
						return
					}
				}
			}
		}()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for int(next.Add(1)) <= target {
					if _, ok := <-tokens; !ok {
						return
					}
					c, err := n.client.DialContext(bctx, "tcp", addr)
					mu.Lock()
					if err != nil {
						if firstErr == nil && bctx.Err() == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					cliConns = append(cliConns, c)
					if len(cliConns)%1000 == 0 {
						r.vlogf("%d dialed after %v", len(cliConns), time.Since(start).Round(time.Millisecond))
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	// settle waits until every connection has its join on both ends, or
	// nothing changed for stallAfter (a join that failed is not retried),
	// or the budget ran out; it reports whether all are up.
	var cen census
	lastLog := time.Now()
	settle := func() bool {
		// Not too often: a census of 10 000 connections costs CPU the
		// joins need.
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var prev census
		changed := time.Now()
		for {
			smu.Lock()
			srv := append([]*stack.Conn(nil), srvConns...)
			smu.Unlock()
			cen = takeCensus(cliConns, srv)
			if cen.cli[2] == len(cliConns) && cen.srv[2] == len(cliConns) {
				return true
			}
			if !cen.same(prev) {
				prev, changed = cen, time.Now()
			}
			if time.Since(lastLog) >= 10*time.Second {
				r.vlogf("after %v: %d dialed; %s", time.Since(start).Round(time.Second), len(cliConns), cen)
				lastLog = time.Now()
			}
			if time.Since(changed) >= stallAfter {
				return false
			}
			select {
			case <-bctx.Done():
				return false
			case <-tick.C:
			}
		}
	}
	// A first look at a fifth of the connections, before the process
	// gets busy (see the idle CPU figure), then all of them.
	checkpoint := want / 5
	var dialTime time.Duration // time spent dialing, waits for joins excluded
	t0 := time.Now()
	dialAll(checkpoint)
	dialTime += time.Since(t0)
	stalled := !settle()
	var early memSnapshot
	earlyN := len(cliConns)
	if earlyN > 0 && bctx.Err() == nil {
		early = snapshot()
	}
	if firstErr == nil && bctx.Err() == nil {
		t0 = time.Now()
		dialAll(want)
		dialTime += time.Since(t0)
		stalled = !settle()
	}
	dialed := len(cliConns)
	upTime := time.Since(start)
	reached := min(cen.cli[2], cen.srv[2])
	r.logf("   %d of %d connections dialed, %d with 2 subflows on both ends after %v (%s)", dialed, want, reached, upTime.Round(time.Millisecond), cen)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	phase := time.Now()
	both := snapshot()
	r.vlogf("snapshot with both ends: %v", time.Since(phase).Round(time.Millisecond))
	// What idle connections cost in CPU: timers and tickers keep running.
	idleWindow := min(2*time.Second, budget/10)
	pkts := func() (sum uint64) {
		for _, e := range n.ends {
			sum += e[0].Stats().SentPackets + e[1].Stats().SentPackets
		}
		return sum
	}
	c0, p0, t0 := cpuTime(), pkts(), time.Now()
	time.Sleep(idleWindow)
	idleSecs := time.Since(t0).Seconds()
	idleCores := (cpuTime() - c0).Seconds() / idleSecs
	idlePkts := float64(pkts()-p0) / idleSecs

	// The server's share: drop the client's side without telling the
	// server (blackholed paths carry no reset).
	phase = time.Now()
	n.blackhole(0)
	n.blackhole(1)
	if err := closeWithin(90*time.Second, "the client stack", n.client.Close); err != nil {
		return err
	}
	cliConns = nil
	r.vlogf("client stack closed: %v", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	settleGoroutines(ctx, 15*time.Second) // the aborted connections' goroutines finish
	server := snapshot()
	r.vlogf("settled, snapshot of the server end: %v", time.Since(phase).Round(time.Millisecond))

	open := dialed // every connection that exists counts, joined or not
	sc.metric("connections_wanted", float64(want))
	sc.metric("connections_dialed", float64(dialed))
	sc.metric("connections_accepted", float64(cen.accepted))
	sc.metric("connections_reached", float64(reached))
	sc.metric("dial_seconds", dialTime.Seconds())
	sc.metric("up_seconds", upTime.Seconds())
	sc.metric("idle_cpu_cores", idleCores)
	sc.metric("idle_packets_per_second", idlePkts)
	status := "all reached"
	if reached < want {
		why := "the time budget ran out"
		switch {
		case firstErr != nil:
			why = "dial failed: " + firstErr.Error()
		case stalled:
			why = fmt.Sprintf("joins stopped coming up (nothing changed for %v; failed joins are not retried): %s", stallAfter, cen)
		case dialed == want:
			why = fmt.Sprintf("not every connection had 2 active subflows on both ends within %v (%s)", budget, cen)
		}
		status = fmt.Sprintf("reached %d of %d: %s", reached, want, why)
		sc.note("only %d of the %d connections had 2 subflows on both ends: %s. The memory figures are per open connection (%d), joined or not.", reached, want, why, open)
	}
	tbl := Table{Columns: []string{"", "value"}}
	tbl.Rows = append(tbl.Rows,
		[]string{"connections with 2 subflows on both ends", status},
		[]string{"time spent dialing / in all, waiting for the joins included", fmt.Sprintf("%.1f s / %.1f s", dialTime.Seconds(), upTime.Seconds())},
		[]string{"CPU while idle (both ends)", fmt.Sprintf("%.2f cores (%.3f per 1000 connections)", idleCores, idleCores*1000/float64(max(open, 1)))},
		[]string{"packets on the links while idle", fmt.Sprintf("%.0f per second (%.2f per connection)", idlePkts, idlePkts/float64(max(open, 1)))})
	if open == 0 {
		sc.Tables = append(sc.Tables, tbl)
		return fmt.Errorf("no connection could be opened: %s", status)
	}
	kib := func(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }
	if earlyN > 0 && earlyN < open {
		per := func(a, b uint64) float64 { return sub(a, b) / float64(earlyN) }
		h, st, rs := per(early.heapInuse, base.heapInuse), per(early.stackInuse, base.stackInuse), per(early.rss, base.rss)
		tbl.Rows = append(tbl.Rows, []string{fmt.Sprintf("at %d connections, per connection, both ends: heap in use / goroutine stacks / RSS growth", earlyN),
			kib(h) + " / " + kib(st) + " / " + kib(rs)})
		sc.metric("checkpoint_connections", float64(earlyN))
		sc.metric("checkpoint_heap_inuse_bytes_per_conn_both", h)
		sc.metric("checkpoint_stack_inuse_bytes_per_conn_both", st)
		sc.metric("checkpoint_rss_bytes_per_conn_both", rs)
	}
	per := func(a, b uint64) float64 { return sub(a, b) / float64(open) }
	bothHeap, bothStack, bothRSS := per(both.heapInuse, base.heapInuse), per(both.stackInuse, base.stackInuse), per(both.rss, base.rss)
	srvHeap := per(server.heapInuse, base.heapInuse)
	cliHeap := bothHeap - srvHeap
	gor := float64(both.goroutines-base.goroutines) / float64(open)
	srvGor := float64(server.goroutines-base.goroutines) / float64(open)
	at := fmt.Sprintf("at %d connections, ", open)
	tbl.Rows = append(tbl.Rows,
		[]string{at + "heap in use per connection, both ends", kib(bothHeap)},
		[]string{"  of which client end / server end", kib(cliHeap) + " / " + kib(srvHeap)},
		[]string{at + "goroutine stacks per connection, both ends", kib(bothStack)},
		[]string{at + "RSS growth per connection, both ends", kib(bothRSS)},
		[]string{"goroutines per connection, both ends (client / server)", fmt.Sprintf("%.1f (%.1f / %.1f)", gor, gor-srvGor, srvGor)},
	)
	sc.Tables = append(sc.Tables, tbl)
	sc.metric("heap_inuse_bytes_per_conn_both", bothHeap)
	sc.metric("heap_inuse_bytes_per_conn_client", cliHeap)
	sc.metric("heap_inuse_bytes_per_conn_server", srvHeap)
	sc.metric("stack_inuse_bytes_per_conn_both", bothStack)
	sc.metric("rss_bytes_per_conn_both", bothRSS)
	sc.metric("goroutines_per_conn_both", gor)
	sc.metric("goroutines_per_conn_server", srvGor)
	sc.note("Heap in use counts whole spans, some never touched; RSS growth is what the connections made resident. " +
		"Stacks and RSS are not split per end: freed stacks and pages stay with the process for reuse, so they do not go down with the client stack; " +
		"the goroutine count per end (one sender, one reader per subflow) tells the stacks' share.")
	if idleCores > 0.8*float64(runtime.GOMAXPROCS(0)) {
		sc.note("The process was CPU-bound with the connections idle (%.2f of %d cores): the timings, and the heap figures at the full count, are distorted by that; "+
			"the checkpoint figures are from before.", idleCores, runtime.GOMAXPROCS(0))
	}
	return nil
}

// settleGoroutines waits, at most d, until the number of goroutines has
// not changed for 300 ms.
func settleGoroutines(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	last, since := runtime.NumGoroutine(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		if g := runtime.NumGoroutine(); g != last {
			last, since = g, time.Now()
		} else if time.Since(since) >= 300*time.Millisecond {
			return
		}
	}
}

// census counts connections by their number of active subflows.
type census struct {
	cli, srv        map[int]int // active subflows → connections
	accepted, mptcp int         // server connections, and how many use MPTCP
}

func takeCensus(cli, srv []*stack.Conn) census {
	c := census{cli: map[int]int{}, srv: map[int]int{}, accepted: len(srv)}
	for _, x := range cli {
		c.cli[activeSubflows(x)]++
	}
	for _, x := range srv {
		c.srv[activeSubflows(x)]++
		if x.MultipathTCP() {
			c.mptcp++
		}
	}
	return c
}

// same reports whether c and d count the same.
func (c census) same(d census) bool {
	return c.cli[1] == d.cli[1] && c.cli[2] == d.cli[2] && c.srv[1] == d.srv[1] && c.srv[2] == d.srv[2] && c.accepted == d.accepted
}

func (c census) String() string {
	hist := func(m map[int]int) string {
		var parts []string
		for k := 0; k <= 8; k++ {
			if m[k] > 0 {
				parts = append(parts, fmt.Sprintf("%d with %d", m[k], k))
			}
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("client: %s active subflows; server: %d accepted, %d MPTCP, %s", hist(c.cli), c.accepted, c.mptcp, hist(c.srv))
}
