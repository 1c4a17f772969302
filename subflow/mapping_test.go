package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExpand(t *testing.T) {
	for _, tc := range []struct {
		ref  uint64
		v    uint32
		want uint64
	}{
		{0, 0, 0},
		{0, 100, 100},
		{1 << 32, 5, 1<<32 + 5},
		{1<<32 + 10, 0xfffffff0, 1<<32 - 16},        // just before a wrap
		{1<<32 - 16, 10, 1<<32 + 10},                // just after it
		{100, 0xffffff00, 0xffffff00},               // cannot go below zero
		{5 << 32, 0xffffffff, 5<<32 - 1},            // one behind
		{5<<32 + 1<<30, 0, 5 << 32},                 // well within half the space
		{5<<32 - 1<<30, 0, 5 << 32},                 // same, from below
		{1<<40 + 1<<31 - 1, 0, 1 << 40},             // the nearest is chosen
		{1<<40 + 1<<31 + 1, 0, 1<<40 + 1<<32},       // on the other side
		{1<<40 + 1<<31 + 1, 1 << 31, 1<<40 + 1<<31}, // exact half
	} {
		require.Equal(t, tc.want, expand(tc.ref, tc.v), "expand(%#x, %#x)", tc.ref, tc.v)
	}
	require.Equal(t, uint64(1<<32+7), expandDSN(1<<32-3, 7))
	require.Equal(t, uint64(1<<32-3), expandDSN(1<<32+7, uint32(1<<32-3)))
}

func TestTxMap(t *testing.T) {
	var m txMap
	m.add(0, 1000, 100, 0, maxMapping)
	m.add(100, 1100, 50, 0, maxMapping) // contiguous, nothing sent yet: the same mapping grows
	require.Len(t, m.live(), 1)
	m.add(150, 1150, 10, 120, maxMapping) // contiguous, but the entry is partly sent: its mapping is fixed
	require.Len(t, m.live(), 2)
	m.add(160, 5000, 10, 120, maxMapping) // a jump in DSN space (another subflow took 1160..4999)
	require.Len(t, m.live(), 3)

	dsn, n, ok := m.lookup(120)
	require.True(t, ok)
	require.Equal(t, uint64(1120), dsn)
	require.Equal(t, uint64(30), n, "to the end of its entry")
	e, ok := m.entry(120)
	require.True(t, ok)
	require.Equal(t, txEntry{off: 0, dsn: 1000, n: 150}, e, "the mapping every segment of it carries")
	dsn, n, ok = m.lookup(165)
	require.True(t, ok)
	require.Equal(t, uint64(5005), dsn)
	require.Equal(t, uint64(5), n)
	_, _, ok = m.lookup(170)
	require.False(t, ok)

	m.ackTo(110) // partly acknowledged: kept whole, a retransmission repeats the mapping
	e, ok = m.entry(110)
	require.True(t, ok)
	require.Equal(t, uint64(0), e.off)
	require.Equal(t, uint64(150), e.n)
	m.ackTo(150)
	_, ok = m.entry(149)
	require.False(t, ok)
	m.ackTo(500)
	require.Empty(t, m.live())

	// Entries never exceed the limit (a 16-bit mapping length, or a
	// multiple of the MSS below it).
	m.add(1000, 1e6, 200000, 0, 45*1448)
	for _, e := range m.live() {
		require.LessOrEqual(t, e.n, uint64(45*1448))
	}
	require.Len(t, m.live(), 4)
	m.ackTo(1000 + 200000)

	// Many entries acknowledged: the table compacts instead of growing.
	for i := uint64(0); i < 1000; i++ {
		m.add(300000+i*10, 1e7+i*100, 10, 0, maxMapping)
		m.ackTo(300000 + i*10 + 10)
	}
	require.Less(t, len(m.e), 100)
}

func TestRxMap(t *testing.T) {
	var r rxMap
	r.insert(Mapping{Off: 100, DSN: 2100, Len: 100})
	r.insert(Mapping{Off: 0, DSN: 2000, Len: 100})
	r.insert(Mapping{Off: 0, DSN: 2000, Len: 100}) // a retransmission repeats it
	r.insert(Mapping{Off: 300, DSN: 9000, Len: 50})
	require.Len(t, r.e, 3)
	require.True(t, r.covers(0, 200))
	require.True(t, r.covers(150, 200))
	require.False(t, r.covers(150, 250), "a hole at 200..299")
	require.False(t, r.covers(290, 310))
	require.True(t, r.covers(300, 350))

	require.True(t, r.consistent(Mapping{Off: 50, DSN: 2050, Len: 100}))
	require.False(t, r.consistent(Mapping{Off: 50, DSN: 7777, Len: 10}), "the same bytes, another DSN")
	require.True(t, r.consistent(Mapping{Off: 200, DSN: 1, Len: 100}), "no overlap")

	m, ok := r.find(150)
	require.True(t, ok)
	require.Equal(t, uint64(2100), m.DSN)
	require.Len(t, r.e, 2, "mappings behind the reader are dropped")
	_, ok = r.find(250)
	require.False(t, ok)
	m, ok = r.find(320)
	require.True(t, ok)
	require.Equal(t, uint64(9000), m.DSN)
}

func TestRxMapMergesContiguous(t *testing.T) {
	var r rxMap
	for i := uint64(0); i < 1000; i++ {
		require.True(t, r.add(Mapping{Off: i * 1400, DSN: 5000 + i*1400, Len: 1400}))
	}
	require.Len(t, r.e, 1, "in-order mappings merge")
	require.True(t, r.add(Mapping{Off: 2800, DSN: 7800, Len: 1400}), "a retransmission")
	require.Len(t, r.e, 1)
	require.False(t, r.add(Mapping{Off: 2800, DSN: 1, Len: 1400}), "a contradiction")
	require.True(t, r.add(Mapping{Off: 1400 * 1000, DSN: 9e9, Len: 10}), "a jump in DSN space starts a new entry")
	require.Len(t, r.e, 2)
	require.True(t, r.add(Mapping{Off: 1400*1000 + 10, DSN: 9e9 + 10, Len: 10, HasChecksum: true}), "checksummed mappings stay apart")
	require.Len(t, r.e, 3)
	m, ok := r.find(1400*500 + 7)
	require.True(t, ok)
	require.Equal(t, uint64(5000), m.DSN)
	require.Equal(t, uint64(1400*500+7+5000), m.DSN+(1400*500+7-m.Off))
}
