package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/reasm"
	"github.com/umptcp/umptcp/scheduler"
)

// runMicro measures the per-segment costs of the two data-level hot paths
// with testing.Benchmark: reassembly (a segment into the connection's ring
// and the reader draining it) and scheduling (one Pick over four
// subflows), each as time and heap allocations per operation.
func runMicro(ctx context.Context, r *runner, sc *Scenario) error {
	sc.Setup = "testing.Benchmark in this process. Reassembly: 1400-byte segments of two subflows, alternating, " +
		"one subflow three segments behind (so about three holes are open at any time), the reader draining after each " +
		"segment, 4 MiB ring. Scheduling: one Pick over four subflows with different RTTs and room, per built-in scheduler."
	tbl := Table{Columns: []string{"operation", "ns/op", "allocations/op", "bytes allocated/op"}}
	var worst float64
	add := func(name, key string, f func(b *testing.B)) {
		res := testing.Benchmark(f)
		ns := float64(res.NsPerOp())
		allocs := float64(res.AllocsPerOp())
		tbl.Rows = append(tbl.Rows, []string{name, fmt.Sprintf("%.0f", ns), fmt.Sprintf("%.0f", allocs), fmt.Sprintf("%d", res.AllocedBytesPerOp())})
		sc.metric(key+"_ns_per_op", ns)
		sc.metric(key+"_allocs_per_op", allocs)
		worst = max(worst, allocs)
		r.vlogf("%s: %s", name, res.String())
	}
	add("reassembly: Put one 1400-byte segment, read what is in order", "reasm", benchReassembly)
	for _, name := range scheduler.Names() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s, err := scheduler.New(name)
		if err != nil {
			return err
		}
		add("scheduling: "+name+" Pick over 4 subflows", "pick_"+name, benchPick(s))
	}
	sc.Tables = append(sc.Tables, tbl)
	sc.Targets = append(sc.Targets, newTarget(sc.Name, "allocations per segment in reassembly and scheduling (worst of the rows)",
		"0", false, "", ptr(worst), ptr(0), ""))
	return nil
}

// benchReassembly puts segments of two interleaved subflows, one lagging,
// into a ring and drains it after each.
func benchReassembly(b *testing.B) {
	const seg = 1400
	const lag = 3
	ring := reasm.New(4<<20, 0)
	payload := make([]byte, seg)
	scratch := make([]byte, 64<<10)
	k, onB := 0, false
	step := func() {
		var n int
		if !onB {
			n = 2 * k
			onB = k >= lag
			if !onB {
				k++
			}
		} else {
			n = 2*(k-lag) + 1
			onB = false
			k++
		}
		ring.Put(uint64(n)*seg, payload)
		for ring.Read(scratch) > 0 {
		}
	}
	for range 1000 {
		step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		step()
	}
}

// benchPick calls s.Pick over four subflows whose state changes a little
// between calls, as the sender's does.
func benchPick(s scheduler.Scheduler) func(b *testing.B) {
	return func(b *testing.B) {
		paths := []scheduler.Path{
			{ID: 1, RTT: 20 * time.Millisecond, Cwnd: 200 << 10, MSS: 1448, Room: 100 << 10},
			{ID: 2, RTT: 80 * time.Millisecond, Cwnd: 400 << 10, MSS: 1448, Room: 300 << 10},
			{ID: 3, RTT: 10 * time.Millisecond, Cwnd: 50 << 10, MSS: 1448, Room: 0},
			{ID: 4, RTT: 40 * time.Millisecond, Cwnd: 100 << 10, MSS: 1448, Room: 64 << 10, Backup: true},
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			p := &paths[i&3]
			p.Room = (p.Room + 1448) % (256 << 10)
			p.InFlight = (p.InFlight + 1448) % p.Cwnd
			s.Pick(paths, 64<<10)
		}
	}
}
