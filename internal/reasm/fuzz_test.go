package reasm

import (
	"bytes"
	"cmp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzRing delivers a fixed source stream as chunks chosen by the fuzz input
// and checks that the application reads exactly the source, once, in order.
//
// Input layout: data[0] picks the capacity (1..128) and, with its top bit,
// an interval list without spare room; data[1] picks the first DSN;
// then each 4-byte record is a chunk: 16-bit offset into the stream, length
// (0..95), and an action run after the Put: read (or, with the top bit set,
// Peek+Discard) up to the low 7 bits' worth of bytes. Records come in any
// order, overlap and repeat, which covers reordering across subflows and
// reinjection; at most 512 records are used, to bound the time per input.
// Unconsumed tails are re-offered after every read, as a subflow would keep
// them queued; a final in-order pass fills whatever the records left out, so
// the whole stream must come through.
func FuzzRing(f *testing.F) {
	f.Add([]byte{16, 0, 0, 0, 10, 5, 0, 10, 10, 5, 0, 20, 10, 5})
	f.Add([]byte{32, 1, 0, 40, 20, 0, 0, 20, 20, 0, 0, 0, 20, 0x90})
	f.Add([]byte{7, 2, 0, 3, 9, 0, 0, 1, 4, 2, 0, 0, 20, 7, 0, 5, 30, 0})
	f.Add([]byte{128, 255, 3, 200, 90, 127, 0, 0, 95, 0, 1, 0, 60, 0x8f})
	f.Add([]byte{1, 0, 0, 0, 1, 1, 0, 1, 1, 0x81, 0, 0, 2, 1})
	f.Add([]byte{64, 9})
	f.Add([]byte{0xc0, 3, 0, 1, 1, 0, 0, 5, 1, 0, 0, 3, 1, 0, 0, 9, 1, 0, 0, 7, 1, 0, 0, 2, 1, 0x82, 0, 0, 1, 0})

	const streamLen = 1024
	src := source(streamLen, 99)

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		size := int(data[0])%128 + 1
		start := uint64(data[1]) << 55 // up to 2^63-2^55: room for the stream
		noSpare := data[0]&0x80 != 0
		data = data[2:]
		r := New(size, start)
		if noSpare {
			// No spare interval capacity: exercises growth, and
			// reclaiming the popped prefix, far more often.
			r.ranges = nil
		}

		type chunk struct {
			dsn uint64
			b   []byte
		}
		var pending []chunk
		var got []byte
		lastNext := r.Next()

		put := func(dsn uint64, b []byte) int {
			// Plain checks, not require: this runs thousands of times per
			// input and testify's call-stack walking would dominate.
			n := r.Put(dsn, b)
			if n < 0 || n > len(b) {
				t.Fatalf("Put(%d, len %d) = %d", dsn, len(b), n)
			}
			if r.Next() < lastNext {
				t.Fatalf("Next went backwards: %d -> %d", lastNext, r.Next())
			}
			lastNext = r.Next()
			checkInvariants(t, r)
			if n < len(b) {
				// Not taken only because it does not fit yet.
				if dsn+uint64(n) < r.ReadPos()+uint64(r.Cap()) {
					t.Fatalf("Put(%d, len %d) = %d although DSN %d fits", dsn, len(b), n, dsn+uint64(n))
				}
				c := chunk{dsn + uint64(n), b[n:]}
				i, _ := slices.BinarySearchFunc(pending, c.dsn, func(c chunk, d uint64) int { return cmp.Compare(c.dsn, d) })
				pending = slices.Insert(pending, i, c)
			}
			return n
		}
		// Re-offer the queued tails that can now (partly) fit. Keeping them
		// sorted by DSN means the rest, which would just return 0, are not
		// retried: that would make long inputs quadratic.
		retry := func() {
			limit := r.ReadPos() + uint64(r.Cap())
			k := 0
			for k < len(pending) && pending[k].dsn < limit {
				k++
			}
			batch := slices.Clone(pending[:k])
			pending = pending[k:]
			for _, c := range batch {
				put(c.dsn, c.b) // a tail left by this starts at or past limit
			}
		}
		consumed := func(p []byte) {
			got = append(got, p...)
			if !bytes.Equal(src[len(got)-len(p):len(got)], p) {
				t.Fatalf("read stream diverged from source in [%d,%d)", len(got)-len(p), len(got))
			}
		}

		data = data[:min(len(data), 4*512)]
		for ; len(data) >= 4; data = data[4:] {
			off := (int(data[0])<<8 | int(data[1])) % streamLen
			end := min(off+int(data[2])%96, streamLen)
			put(start+uint64(off), src[off:end])

			k := int(data[3] & 0x7f)
			if data[3]&0x80 == 0 {
				p := make([]byte, k)
				consumed(p[:r.Read(p)])
			} else {
				k = min(k, r.Buffered())
				a, b := r.Peek()
				peeked := append(append([]byte(nil), a...), b...)
				require.Len(t, peeked, r.Buffered())
				r.Discard(k)
				consumed(peeked[:k])
			}
			retry()
		}

		// Fill the rest in order. Every round reads everything in order, so
		// the window is open and the put at Next makes progress.
		for rounds := 0; len(got) < streamLen; rounds++ {
			if rounds > 4*streamLen {
				t.Fatal("no progress")
			}
			consumed(readAll(r))
			retry()
			if off := int(r.Next() - start); off < streamLen {
				put(r.Next(), src[off:min(off+37, streamLen)])
			}
		}
		require.Equal(t, src, got)
		require.Equal(t, start+streamLen, r.Next())
	})
}
