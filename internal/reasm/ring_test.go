package reasm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// source returns n deterministic pseudo-random bytes, so that a misplaced
// byte is (almost always) a wrong byte.
func source(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// checkInvariants verifies the internal representation; the tests call it
// after every operation so that a bookkeeping slip shows up where it happens,
// not bytes later. Plain comparisons rather than require keep it cheap
// enough for the fuzzer's inner loop.
func checkInvariants(t testing.TB, r *Ring) {
	if msg := invariantError(r); msg != "" {
		t.Helper() // only here: it walks the stack, too slow for every call
		t.Fatal(msg)
	}
}

func invariantError(r *Ring) string {
	if r.rd > r.nxt || r.nxt > r.rd+r.size {
		return fmt.Sprintf("ReadPos %d, Next %d, Cap %d out of order", r.rd, r.nxt, r.size)
	}
	if r.base > r.rd {
		return fmt.Sprintf("base %d above ReadPos %d", r.base, r.rd)
	}
	if r.head > len(r.ranges) {
		return fmt.Sprintf("head %d beyond %d ranges", r.head, len(r.ranges))
	}
	sum := 0
	prev := r.nxt
	for k, sp := range r.ranges[r.head:] {
		// Strictly above the previous end: touching ranges must have merged.
		if sp.start <= prev || sp.start >= sp.end || sp.end > r.rd+r.size {
			return fmt.Sprintf("range %d %v bad (Next %d, limit %d): %v", k, sp, r.nxt, r.rd+r.size, r.ranges[r.head:])
		}
		sum += int(sp.end - sp.start)
		prev = sp.end
	}
	if sum != r.ooo || r.OutOfOrder() != sum {
		return fmt.Sprintf("OutOfOrder %d, ranges hold %d", r.ooo, sum)
	}
	if r.Buffered() != int(r.nxt-r.rd) || r.Window() != int(r.rd+r.size-r.nxt) || r.Cap() != int(r.size) {
		return "accessors disagree with state"
	}
	return ""
}

// readAll drains every in-order byte.
func readAll(r *Ring) []byte {
	out := make([]byte, r.Buffered())
	n := r.Read(out)
	return out[:n]
}

func TestInOrder(t *testing.T) {
	src := source(1000, 1)
	r := New(256, 5000)
	var got []byte
	for off := 0; off < len(src); off += 100 {
		end := min(off+100, len(src))
		require.Equal(t, end-off, r.Put(5000+uint64(off), src[off:end]))
		require.Equal(t, 5000+uint64(end), r.Next())
		require.Zero(t, r.OutOfOrder())
		checkInvariants(t, r)
		got = append(got, readAll(r)...)
		require.Equal(t, r.Next(), r.ReadPos())
		require.Equal(t, 256, r.Window())
	}
	require.Equal(t, src, got)
	require.Zero(t, r.Read(make([]byte, 10)), "nothing left")
}

func TestReverseOrder(t *testing.T) {
	src := source(200, 2)
	r := New(200, 0)
	for off := 190; off >= 0; off -= 10 {
		require.Equal(t, 10, r.Put(uint64(off), src[off:off+10]))
		checkInvariants(t, r)
		if off > 0 {
			require.Zero(t, r.Next())
			require.Equal(t, 200-off, r.OutOfOrder())
			// Each chunk touches the previous one, so they merge into one.
			require.Len(t, r.ranges[r.head:], 1)
		}
	}
	require.Equal(t, uint64(200), r.Next())
	require.Zero(t, r.OutOfOrder())
	require.Zero(t, r.Window())
	require.Equal(t, src, readAll(r))
}

func TestInterleavedSubflows(t *testing.T) {
	// Subflow A carries even 50-byte segments, B odd ones and lags three
	// segments behind; each delivers its own segments in order.
	const seg, nseg = 50, 40
	src := source(seg*nseg, 3)
	r := New(seg*10, 1<<40)
	var got []byte
	put := func(i int) {
		require.Equal(t, seg, r.Put(1<<40+uint64(i*seg), src[i*seg:(i+1)*seg]))
		checkInvariants(t, r)
	}
	for k := 0; k < nseg/2+3; k++ {
		if a := 2 * k; a < nseg {
			put(a)
		}
		if b := 2*(k-3) + 1; b >= 0 && b < nseg {
			put(b)
			// B just filled the hole at Next: in order through its segment
			// plus A's following one (if already sent).
			require.Equal(t, 1<<40+uint64(min(b+2, nseg)*seg), r.Next())
		}
		got = append(got, readAll(r)...)
	}
	require.Equal(t, src, got)
	require.Zero(t, r.OutOfOrder())
}

func TestDuplicates(t *testing.T) {
	src := source(100, 4)
	junk := make([]byte, 100)
	for i := range junk {
		junk[i] = ^src[i]
	}
	r := New(100, 0)

	// Out-of-order range, then a reinjection of it with different bytes:
	// consumed, but the first copy stays (no second copy).
	require.Equal(t, 20, r.Put(40, src[40:60]))
	require.Equal(t, 20, r.Put(40, junk[40:60]))
	require.Equal(t, 20, r.OutOfOrder())
	checkInvariants(t, r)

	// In order, then fully below Next: dropped but counted.
	require.Equal(t, 40, r.Put(0, src[:40]))
	require.Equal(t, uint64(60), r.Next())
	require.Equal(t, 30, r.Put(10, junk[10:40]))
	require.Equal(t, 60, r.Put(0, junk[:60]))
	require.Equal(t, uint64(60), r.Next())
	require.Zero(t, r.OutOfOrder())
	checkInvariants(t, r)

	// Still duplicates after they have been read.
	require.Equal(t, src[:60], readAll(r))
	require.Equal(t, 50, r.Put(0, junk[:50]))
	require.Equal(t, 0, r.Buffered())
	require.Equal(t, 40, r.Put(60, src[60:]))
	require.Equal(t, src[60:], readAll(r))
}

func TestPartialOverlap(t *testing.T) {
	src := source(300, 5)
	junk := make([]byte, 300)
	for i := range junk {
		junk[i] = ^src[i]
	}
	r := New(300, 1000)
	put := func(lo, hi int, data []byte) int {
		n := r.Put(1000+uint64(lo), data[lo:hi])
		checkInvariants(t, r)
		return n
	}
	// Three islands: [50,60) [80,90) [120,130).
	require.Equal(t, 10, put(50, 60, src))
	require.Equal(t, 10, put(120, 130, src))
	require.Equal(t, 10, put(80, 90, src))
	require.Len(t, r.ranges[r.head:], 3)
	require.Equal(t, 30, r.OutOfOrder())

	// Overlaps the first island's tail and ends inside the gap: only the new
	// part is copied, the island keeps its bytes (junk proves it).
	require.Equal(t, 15, put(55, 70, junk))
	require.Equal(t, 5, put(55, 60, src)) // no-op
	// Spans the gap between the two lower islands and touches the third:
	// everything merges into one range [40,130).
	require.Equal(t, 80, put(40, 120, src))
	require.Len(t, r.ranges[r.head:], 1)
	require.Equal(t, span{1040, 1130}, r.ranges[r.head])
	require.Equal(t, 90, r.OutOfOrder())

	// Straddles Next: starts at 0, fills to 45, overlapping the range.
	require.Equal(t, 45, put(0, 45, src))
	require.Equal(t, uint64(1130), r.Next())
	require.Zero(t, r.OutOfOrder())
	require.Empty(t, r.ranges[r.head:])

	// Starts below Next and ends above it: the duplicate prefix is counted.
	require.Equal(t, 70, put(100, 170, src))
	require.Equal(t, uint64(1170), r.Next())
	// [60,70) was first received from junk and kept; the rest is src.
	want := append([]byte(nil), src[:170]...)
	copy(want[60:70], junk[60:70])
	require.Equal(t, want, readAll(r))
}

func TestCapacityLimitAndResume(t *testing.T) {
	src := source(500, 6)
	r := New(100, 0)

	// Straddles the limit: only what fits is taken.
	require.Equal(t, 100, r.Put(0, src[:150]))
	require.Zero(t, r.Window())
	checkInvariants(t, r)
	// Entirely beyond the window: nothing taken.
	require.Zero(t, r.Put(100, src[100:150]))
	require.Zero(t, r.Put(400, src[400:450]))

	// Read 30: 30 more fit now; the caller re-offers the unconsumed tail.
	buf := make([]byte, 30)
	require.Equal(t, 30, r.Read(buf))
	require.Equal(t, src[:30], buf)
	require.Equal(t, 30, r.Window())
	require.Equal(t, 30, r.Put(100, src[100:150]))
	require.Equal(t, uint64(130), r.Next())
	checkInvariants(t, r)

	// An out-of-order range up against the limit, then one straddling it.
	require.Equal(t, 70, r.Read(make([]byte, 70)))
	require.Equal(t, 30, r.Put(170, src[170:200])) // [170,200) ends at the limit 200
	require.Zero(t, r.Put(200, src[200:201]))      // first DSN beyond it
	require.Equal(t, 30, r.OutOfOrder())
	// Starts below Next, ends beyond the window: duplicate prefix + fit.
	require.Equal(t, 100, r.Put(100, src[100:250]))
	require.Equal(t, uint64(200), r.Next())
	require.Zero(t, r.OutOfOrder())
	require.Zero(t, r.Window())
	checkInvariants(t, r)
	require.Equal(t, src[100:200], readAll(r))
}

func TestFarBeyondWindowAndZeroLength(t *testing.T) {
	r := New(64, 10)
	require.Zero(t, r.Put(10, nil))
	require.Zero(t, r.Put(5, []byte{}))
	require.Zero(t, r.Put(1<<50, make([]byte, 10)))
	require.Zero(t, r.Put(74, []byte{1}))
	require.Equal(t, 1, r.Put(73, []byte{1, 2}))
	require.Equal(t, uint64(10), r.Next())
	require.Equal(t, 1, r.OutOfOrder())
	require.Equal(t, 64, r.Window())
	checkInvariants(t, r)
}

func TestPeekDiscardWrap(t *testing.T) {
	src := source(300, 7)
	r := New(64, 0)
	require.Equal(t, 50, r.Put(0, src[:50]))
	r.Discard(46) // 4 bytes stay unread: the slots do not start afresh
	// The next 40 bytes occupy slots 50..63 and 0..25.
	require.Equal(t, 40, r.Put(50, src[50:90]))
	a, b := r.Peek()
	require.Equal(t, src[46:64], a)
	require.Equal(t, src[64:90], b)
	require.Equal(t, len(a), cap(a), "Peek must not let appends clobber the ring")
	require.Equal(t, len(b), cap(b))

	// Discard across the wrap point, then Peek again: one contiguous slice.
	r.Discard(24)
	a, b = r.Peek()
	require.Equal(t, src[70:90], a)
	require.Nil(t, b)
	require.Equal(t, 44, r.Window())
	checkInvariants(t, r)

	r.Discard(20)
	a, b = r.Peek()
	require.Nil(t, a)
	require.Nil(t, b)
	r.Discard(0)
	require.Panics(t, func() { r.Discard(1) })
	require.Panics(t, func() { r.Discard(-1) })

	// Emptied, the ring fills from the front of its buffer again.
	require.Equal(t, 10, r.Put(90, src[90:100]))
	require.Equal(t, src[90:100], r.buf[:10])
	r.Discard(6) // DSN 96 at slot 6 stays

	// An out-of-order range whose bytes wrap; Read wraps too.
	require.Equal(t, 30, r.Put(130, src[130:160])) // slots 40..63, 0..5
	require.Equal(t, 30, r.Put(100, src[100:130]))
	out := make([]byte, 64)
	require.Equal(t, 64, r.Read(out))
	require.Equal(t, src[96:160], out)
	checkInvariants(t, r)
}

func TestReset(t *testing.T) {
	src := source(100, 8)
	r := New(50, 0)
	require.Equal(t, 10, r.Put(0, src[:10]))
	require.Equal(t, 10, r.Put(20, src[20:30]))
	require.Equal(t, 10, r.Put(40, src[40:50]))
	buf := &r.buf[0]

	r.Reset(1 << 62)
	require.Equal(t, uint64(1<<62), r.Next())
	require.Equal(t, uint64(1<<62), r.ReadPos())
	require.Zero(t, r.Buffered())
	require.Zero(t, r.OutOfOrder())
	require.Equal(t, 50, r.Window())
	require.Equal(t, 50, r.Cap())
	require.Same(t, buf, &r.buf[0], "memory kept")
	checkInvariants(t, r)

	require.Equal(t, 10, r.Put(0, src[:10]), "old DSNs are now below Next: dropped")
	require.Zero(t, r.Buffered())
	require.Equal(t, 50, r.Put(1<<62, src[50:100]))
	require.Equal(t, src[50:100], readAll(r))
}

func TestNewPanics(t *testing.T) {
	require.Panics(t, func() { New(0, 0) })
	require.Panics(t, func() { New(-1, 0) })
}

// model is the obviously-correct reference: one map entry per held byte.
type model struct {
	have     map[uint64]byte
	rd, nxt  uint64
	capacity uint64
}

func (m *model) put(dsn uint64, b []byte) int {
	n := 0
	for k, c := range b {
		d := dsn + uint64(k)
		if d >= m.nxt {
			if d >= m.rd+m.capacity {
				break // and so is every later byte
			}
			if _, ok := m.have[d]; !ok {
				m.have[d] = c
			}
		}
		n++
	}
	for {
		if _, ok := m.have[m.nxt]; !ok {
			break
		}
		m.nxt++
	}
	return n
}

func (m *model) read(k int) []byte {
	var out []byte
	for ; k > 0 && m.rd < m.nxt; k-- {
		out = append(out, m.have[m.rd])
		delete(m.have, m.rd)
		m.rd++
	}
	return out
}

func (m *model) outOfOrder() int { return len(m.have) - int(m.nxt-m.rd) }

func TestRandomAgainstModel(t *testing.T) {
	for _, tc := range []struct {
		size  int
		start uint64
	}{
		{1, 0}, {7, 3}, {64, 1 << 62}, {100, 1<<63 - 1<<20}, {1000, 12345},
	} {
		rng := rand.New(rand.NewPCG(uint64(tc.size), 42))
		const streamLen, ops = 20000, 30000
		src := source(streamLen, uint64(tc.size)+100)
		r := New(tc.size, tc.start)
		if tc.size%2 == 0 {
			// No spare interval capacity: exercises growth, and
			// reclaiming the popped prefix, far more often.
			r.ranges = nil
		}
		m := &model{have: map[uint64]byte{}, rd: tc.start, nxt: tc.start, capacity: uint64(tc.size)}
		var got []byte
		size := uint64(tc.size)

		compare := func() {
			require.Equal(t, m.nxt, r.Next())
			require.Equal(t, m.rd, r.ReadPos())
			require.Equal(t, m.outOfOrder(), r.OutOfOrder())
			checkInvariants(t, r)
		}
		putAt := func(off uint64, l int) {
			end := min(off+uint64(l), streamLen)
			dsn := tc.start + off
			n := r.Put(dsn, src[off:end])
			require.Equal(t, m.put(dsn, src[off:end]), n, "Put(%d, len %d)", off, end-off)
		}
		for i := 0; i < ops; i++ {
			switch op := rng.IntN(100); {
			case op < 60:
				// Anywhere from a window below Next to a window beyond the
				// limit, so duplicates, straddles and misses all happen.
				lo := (m.nxt - tc.start) - min(m.nxt-tc.start, size)
				hi := min(m.rd-tc.start+2*size+1, streamLen)
				if lo >= hi {
					continue
				}
				l := rng.IntN(int(size)*3/2 + 2)
				if rng.IntN(3) == 0 {
					l = rng.IntN(4) // small pieces make many holes
				}
				putAt(lo+rng.Uint64N(hi-lo), l)
			case op < 85:
				p := make([]byte, rng.IntN(int(size)+2))
				n := r.Read(p)
				want := m.read(len(p))
				require.Equal(t, len(want), n)
				require.Equal(t, string(want), string(p[:n]))
				got = append(got, p[:n]...)
			default:
				a, b := r.Peek()
				require.Equal(t, r.Buffered(), len(a)+len(b))
				k := rng.IntN(r.Buffered() + 1)
				want := m.read(k)
				peeked := append(append([]byte(nil), a...), b...)
				require.Equal(t, string(want), string(peeked[:len(want)]))
				r.Discard(k)
				got = append(got, want...)
			}
			compare()
		}
		// Drain: feed the stream from Next in order; what was read must be
		// the source, exactly once.
		for len(got) < streamLen {
			if off := r.Next() - tc.start; off < streamLen {
				putAt(off, int(size))
			}
			got = append(got, readAll(r)...)
			m.read(streamLen)
			compare()
		}
		require.Equal(t, src, got, "size %d", tc.size)
	}
}
