package stack

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// The send buffer must hand out exactly the bytes written at each DSN,
// across wraps and growth, and never take more than its limit.
func TestSendBufWrapAndGrow(t *testing.T) {
	const limit = 300 << 10
	start := uint64(1<<40 - 12345)
	b := newSendBuf(start, limit)
	rng := rand.New(rand.NewSource(1))
	src := make([]byte, 8<<20)
	rng.Read(src)
	written, acked := 0, 0
	for acked < len(src) {
		if written < len(src) {
			n := b.write(src[written:min(len(src), written+rng.Intn(100<<10))])
			written += n
			require.LessOrEqual(t, b.used(), limit)
		}
		// read back a random range of what is outstanding
		if out := written - acked; out > 0 {
			from := acked + rng.Intn(out)
			to := from + rng.Intn(written-from+1)
			x, y := b.slices(start+uint64(from), start+uint64(to))
			require.True(t, bytes.Equal(append(append([]byte{}, x...), y...), src[from:to]), "range %d-%d", from, to)
		}
		acked += rng.Intn(written - acked + 1)
		b.ackTo(start + uint64(acked))
		if written == len(src) && rng.Intn(4) == 0 {
			acked = written
			b.ackTo(start + uint64(acked))
		}
	}
	require.Equal(t, 0, b.used())
	require.LessOrEqual(t, len(b.buf), 512<<10, "grows to the power of two above its limit at most")
}

func TestPayloadReadsBothSlices(t *testing.T) {
	p := payload{x: []byte("hello "), y: []byte("world")}
	require.Equal(t, 11, p.Len())
	dst := make([]byte, 8)
	n, _ := p.Read(dst)
	require.Equal(t, "hello wo", string(dst[:n]))
	n, _ = p.Read(dst)
	require.Equal(t, "rld", string(dst[:n]))
	require.Equal(t, 0, p.Len())
}
