package reasm

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// twoSubflows replays the common steady state of a two-subflow connection:
// the scheduler alternates 1400-byte segments, subflow A carrying the even
// ones and B the odd ones, and B's path is three segments slower, so its
// segment fills the hole at Next while A's pile up as out-of-order ranges
// (about three holes at any time). The reader drains after every segment.
type twoSubflows struct {
	r       *Ring
	payload []byte
	scratch []byte
	k       int  // scheduling round: A sends 2k, B sends 2(k-3)+1
	onB     bool // whether B's turn in round k is next
}

const (
	segSize  = 1400
	ringSize = 4 << 20
	bLag     = 3
)

func newTwoSubflows() *twoSubflows {
	return &twoSubflows{
		r:       New(ringSize, 1<<32),
		payload: source(segSize, 1),
		scratch: make([]byte, 64<<10),
	}
}

// step delivers one segment and lets the reader drain; it returns how many
// bytes of the segment the ring consumed.
func (s *twoSubflows) step() int {
	var seg int
	if !s.onB {
		seg = 2 * s.k
		// B has nothing to send in its first bLag rounds.
		s.onB = s.k >= bLag
		if !s.onB {
			s.k++
		}
	} else {
		seg = 2*(s.k-bLag) + 1
		s.onB = false
		s.k++
	}
	n := s.r.Put(1<<32+uint64(seg)*segSize, s.payload)
	for s.r.Read(s.scratch) > 0 {
	}
	return n
}

func BenchmarkPutRead(b *testing.B) {
	s := newTwoSubflows()
	for range 1000 { // reach the steady state before timing
		s.step()
	}
	b.ReportAllocs()
	b.SetBytes(segSize)
	b.ResetTimer()
	for range b.N {
		if s.step() != segSize {
			b.Fatal("segment not fully taken")
		}
	}
}

func TestTwoSubflowsPattern(t *testing.T) {
	// The benchmark is only meaningful if the pattern really is out of
	// order and loses nothing: check both.
	s := newTwoSubflows()
	maxHoles := 0
	for range 10000 {
		require.Equal(t, segSize, s.step())
		checkInvariants(t, s.r)
		maxHoles = max(maxHoles, len(s.r.ranges)-s.r.head)
	}
	require.Equal(t, bLag, maxHoles)
	// Everything up to the segment B last sent is in order and was read.
	require.Equal(t, s.r.Next(), s.r.ReadPos())
	require.LessOrEqual(t, s.r.OutOfOrder(), bLag*segSize)
}

func TestSteadyStateNoAllocs(t *testing.T) {
	s := newTwoSubflows()
	for range 1000 {
		s.step()
	}
	// 10000 runs wrap the 4 MiB ring several times over.
	allocs := testing.AllocsPerRun(10000, func() { s.step() })
	require.Zero(t, allocs)
}
