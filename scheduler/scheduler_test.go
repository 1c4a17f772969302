package scheduler

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const ms = time.Millisecond

// p builds a measured non-backup path with room.
func p(id int, rtt time.Duration, room int) Path {
	return Path{ID: id, RTT: rtt, Cwnd: 14000, MSS: 1400, Room: room}
}

func backup(pa Path) Path { pa.Backup = true; return pa }

// pickers are the schedulers that must pick whenever an eligible path has
// room, with backups only when no non-backup path exists.
var pickers = []struct {
	name string
	new  func() Scheduler
}{
	{"minrtt", NewMinRTT},
	{"roundrobin", NewRoundRobin},
	{"redundant", NewRedundant},
	{"blest", NewBLEST},
}

func TestCommonRules(t *testing.T) {
	tests := []struct {
		name  string
		paths []Path
		want  int
	}{
		{"single path", []Path{p(1, 10*ms, 1000)}, 0},
		{"nothing has room", []Path{p(1, 10*ms, 0), p(2, 20*ms, 0)}, -1},
		{"negative room is no room", []Path{p(1, 10*ms, -5)}, -1},
		{"full paths skipped", []Path{p(1, 10*ms, 0), p(2, 20*ms, 500), p(3, 30*ms, 0)}, 1},
		{"backup idle while a non-backup path is full", []Path{p(1, 10*ms, 0), backup(p(2, 5*ms, 9000))}, -1},
		{"backup used when only backups are left", []Path{backup(p(2, 50*ms, 0)), backup(p(3, 5*ms, 9000))}, 1},
		{"non-backup preferred over faster backup", []Path{backup(p(1, 1*ms, 9000)), p(2, 90*ms, 9000)}, 1},
	}
	for _, s := range pickers {
		for _, tt := range tests {
			t.Run(s.name+"/"+tt.name, func(t *testing.T) {
				require.Equal(t, tt.want, s.new().Pick(tt.paths, 100000))
			})
		}
	}
}

func TestMinRTT(t *testing.T) {
	tests := []struct {
		name  string
		paths []Path
		want  int
	}{
		{"lowest RTT wins", []Path{p(1, 30*ms, 1000), p(2, 10*ms, 1000), p(3, 20*ms, 1000)}, 1},
		{"lowest RTT full, next one", []Path{p(1, 30*ms, 1000), p(2, 10*ms, 0), p(3, 20*ms, 1000)}, 2},
		{"measured beats unknown", []Path{p(1, 0, 1000), p(2, 80*ms, 1000)}, 1},
		{"first unknown among unknowns", []Path{p(1, 0, 0), p(2, 0, 1000), p(3, 0, 1000)}, 1},
		{"tie keeps the first", []Path{p(7, 10*ms, 1000), p(3, 10*ms, 1000)}, 0},
		{"fastest backup when only backups", []Path{backup(p(1, 40*ms, 10)), backup(p(2, 20*ms, 10))}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, NewMinRTT().Pick(tt.paths, 1))
			require.Equal(t, tt.want, NewRedundant().Pick(tt.paths, 1), "redundant picks like minrtt")
		})
	}
}

func TestRoundRobinFair(t *testing.T) {
	rr := NewRoundRobin()
	paths := []Path{p(30, 30*ms, 1000), p(10, 10*ms, 1000), p(20, 20*ms, 1000)}
	count := map[int]int{}
	var seq []int
	for range 300 {
		i := rr.Pick(paths, 1<<20)
		require.GreaterOrEqual(t, i, 0)
		count[paths[i].ID]++
		if len(seq) < 4 {
			seq = append(seq, paths[i].ID)
		}
	}
	require.Equal(t, []int{10, 20, 30, 10}, seq, "rotation follows Path.ID, not slice order")
	require.Equal(t, map[int]int{10: 100, 20: 100, 30: 100}, count)
}

func TestRoundRobinChangingPaths(t *testing.T) {
	rr := NewRoundRobin()
	a, b, c, d := p(1, 10*ms, 1000), p(2, 10*ms, 1000), p(3, 10*ms, 1000), p(4, 10*ms, 1000)
	ids := func(paths []Path, n int) []int {
		var out []int
		for range n {
			i := rr.Pick(paths, 1)
			require.GreaterOrEqual(t, i, 0)
			out = append(out, paths[i].ID)
		}
		return out
	}
	require.Equal(t, []int{1, 2}, ids([]Path{a, b, c}, 2))
	// Path 2 went last and disappears: the turn passes to 3, not back to 1.
	require.Equal(t, []int{3, 1, 3}, ids([]Path{c, a}, 3))
	// Path 4 joins after 3 went last: it is next, and the order by ID holds.
	require.Equal(t, []int{4, 1, 3, 4}, ids([]Path{d, a, c}, 4))
	// A full path loses its turn but does not stop the rotation.
	full := p(3, 10*ms, 0)
	require.Equal(t, []int{1, 4, 1}, ids([]Path{a, full, d}, 3))
	// Non-backup paths all full: -1, and backups stay idle.
	require.Equal(t, -1, rr.Pick([]Path{full, backup(b)}, 1))
	// Only backups left: they rotate too.
	require.Equal(t, []int{2, 4, 2}, ids([]Path{backup(b), backup(d)}, 3))
}

func TestDuplicates(t *testing.T) {
	for _, s := range pickers {
		d, ok := s.new().(Duplicating)
		if s.name == "redundant" {
			require.True(t, ok)
			require.True(t, d.Duplicates())
		} else {
			require.False(t, ok && d.Duplicates(), s.name)
		}
	}
}

func TestBLEST(t *testing.T) {
	// The fast path's window is full: 20 segments of 1400 bytes in flight.
	fast := Path{ID: 1, RTT: 10 * ms, Cwnd: 20 * 1400, MSS: 1400, InFlight: 28000, Room: 0}
	slow := func(rtt time.Duration) Path {
		return Path{ID: 2, RTT: rtt, Cwnd: 64 << 10, MSS: 1400, Room: 64 << 10}
	}
	tests := []struct {
		name    string
		paths   []Path
		pending int
		want    int
	}{
		// X = 1400*(20+3.5)*8 = 263200 bytes during one slow RTT, far more
		// than the 28000+100000-65536 bytes the fast path would have left.
		{"waits for the fast path", []Path{fast, slow(80 * ms)}, 100000, -1},
		{"waits, order does not matter", []Path{slow(80 * ms), fast}, 100000, -1},
		{"slow path when much data waits", []Path{fast, slow(80 * ms)}, 4 << 20, 1},
		// X = 1400*(20+0.1)*1.2 = 33768 < 28000+100000-65536.
		{"slow path not much slower", []Path{fast, slow(12 * ms)}, 100000, 1},
		{"fast path with room", []Path{slow(80 * ms), func() Path { f := fast; f.Room = 1400; return f }()}, 100000, 1},
		{"single path", []Path{slow(80 * ms)}, 1, 0},
		{"single path unmeasured", []Path{{ID: 1, Room: 1}}, 1, 0},
		{"fast path RTT unknown", []Path{func() Path { f := fast; f.RTT = 0; return f }(), slow(80 * ms)}, 100000, 1},
		{"slow path RTT unknown", []Path{fast, slow(0)}, 100000, 1},
		{"fast path MSS unknown", []Path{func() Path { f := fast; f.MSS = 0; return f }(), slow(80 * ms)}, 100000, 1},
		{"fast path cwnd unknown", []Path{func() Path { f := fast; f.Cwnd = 0; return f }(), slow(80 * ms)}, 100000, 1},
		{"nothing has room", []Path{fast, func() Path { s := slow(80 * ms); s.Room = 0; return s }()}, 100000, -1},
		{"backup is not the fast path", []Path{backup(fast), slow(80 * ms)}, 100000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, NewBLEST().Pick(tt.paths, tt.pending))
		})
	}
}

func TestNew(t *testing.T) {
	require.Equal(t, []string{"default", "minrtt", "roundrobin", "redundant", "blest"}, Names())
	for _, name := range Names() {
		s, err := New(name)
		require.NoError(t, err, name)
		require.NotNil(t, s, name)
	}
	s, err := New("default")
	require.NoError(t, err)
	require.IsType(t, NewMinRTT(), s)
	s, err = New("redundant")
	require.NoError(t, err)
	require.Implements(t, (*Duplicating)(nil), s)

	// Each call gives fresh state.
	a, _ := New("roundrobin")
	b, _ := New("roundrobin")
	paths := []Path{p(1, ms, 1), p(2, ms, 1)}
	require.Equal(t, 0, a.Pick(paths, 1))
	require.Equal(t, 0, b.Pick(paths, 1))

	_, err = New("fastest")
	require.EqualError(t, err, `scheduler: unknown scheduler "fastest" (valid: default, minrtt, roundrobin, redundant, blest)`)
	_, err = New("")
	require.Error(t, err)
}

func TestPickDoesNotAllocate(t *testing.T) {
	paths := []Path{
		{ID: 1, RTT: 10 * ms, Cwnd: 28000, MSS: 1400, InFlight: 28000},
		{ID: 2, RTT: 80 * ms, Cwnd: 65536, MSS: 1400, Room: 65536},
		{ID: 3, RTT: 20 * ms, Cwnd: 28000, MSS: 1400, Room: 1400},
		backup(p(4, 5*ms, 9000)),
	}
	for _, s := range pickers {
		sched := s.new()
		allocs := testing.AllocsPerRun(1000, func() {
			sched.Pick(paths, 100000)
			sched.Pick(paths[:2], 100000)
		})
		require.Zero(t, allocs, s.name)
	}
}
