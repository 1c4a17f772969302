package option

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// encoder is what every option type implements.
type encoder interface {
	Len() int
	Append([]byte) []byte
}

func h(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

// checkWire runs the checks every option gets: parse known bytes to the
// expected value, re-encode byte-identically, Len()==len(Append), trailing
// bytes are not consumed, every truncation fails cleanly, wrong kind and
// wrong subtype are rejected, and parse/append do not allocate.
func checkWire[T any, PT interface {
	*T
	encoder
}](t *testing.T, parse func([]byte) (T, int, error), wire []byte, want T) {
	t.Helper()
	got, n, err := parse(wire)
	require.NoError(t, err)
	require.Equal(t, len(wire), n)
	require.Equal(t, want, got)

	p := PT(&got)
	require.Equal(t, wire, p.Append(nil), "re-encoding")
	require.Equal(t, len(wire), p.Len())
	prefix := []byte{1, 1}
	require.Equal(t, append(append([]byte{}, prefix...), wire...), p.Append(prefix))

	longer := append(append([]byte{}, wire...), 1, 0, 0xff)
	got2, n2, err := parse(longer)
	require.NoError(t, err)
	require.Equal(t, len(wire), n2)
	require.Equal(t, want, got2)

	for k := 0; k < len(wire); k++ {
		_, n, err := parse(wire[:k])
		require.Zero(t, n)
		require.True(t, errors.Is(err, ErrTruncated) || errors.Is(err, ErrBadLength), "truncated to %d: %v", k, err)
	}

	bad := bytes.Clone(wire)
	bad[0] = Kind + 1
	_, _, err = parse(bad)
	require.ErrorIs(t, err, ErrNotMPTCP)

	bad = bytes.Clone(wire)
	bad[2] = (bad[2] + 0x10) // next subtype
	_, _, err = parse(bad)
	require.ErrorIs(t, err, ErrUnknownSubtype)

	require.Zero(t, testing.AllocsPerRun(200, func() { _, _, _ = parse(wire) }), "allocations in parse")
	buf := make([]byte, 0, 64)
	require.Zero(t, testing.AllocsPerRun(200, func() { buf = p.Append(buf[:0]) }), "allocations in Append")
}

// checkBadLengths asserts that the given length bytes are rejected with
// ErrBadLength even when the buffer is long enough.
func checkBadLengths[T any](t *testing.T, parse func([]byte) (T, int, error), wire []byte, lens ...int) {
	t.Helper()
	for _, l := range lens {
		b := make([]byte, 64)
		copy(b, wire)
		b[1] = byte(l)
		_, n, err := parse(b)
		require.ErrorIs(t, err, ErrBadLength, "length %d", l)
		require.Zero(t, n)
	}
}
