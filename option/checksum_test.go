package option

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// refSum is the textbook RFC 1071 sum over 16-bit words.
func refSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestSumChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 500; iter++ {
		data := make([]byte, r.IntN(300))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if iter%7 == 0 {
			for i := range data {
				data[i] = 0xff // exercise carries
			}
		}
		want := refSum(data)
		var whole Sum
		whole.Add(data)
		require.Equal(t, want, whole.Value())
		var parts Sum
		for rest := data; len(rest) > 0; {
			n := 1 + r.IntN(min(len(rest), 11))
			parts.Add(rest[:n])
			parts.Add(nil)
			rest = rest[n:]
		}
		require.Equal(t, want, parts.Value(), "len %d", len(data))
	}
}

func TestSumAllocs(t *testing.T) {
	data := make([]byte, 1501)
	var s Sum
	require.Zero(t, testing.AllocsPerRun(100, func() {
		s.Add(data[:3])
		s.Add(data[3:])
	}))
}

func TestDSSChecksum(t *testing.T) {
	payload := []byte("hello umptcp, an odd-length payload!!")
	var s Sum
	s.Add(payload)

	dsn, ssn, dl := uint64(0x0123456789abcdef), uint32(77), uint16(len(payload))
	c := DSSChecksum(dsn, ssn, dl, s.Value())
	// Reference: invert the RFC 1071 sum of pseudo-header (checksum field
	// zero) followed by the payload.
	ph := binary.BigEndian.AppendUint64(nil, dsn)
	ph = binary.BigEndian.AppendUint32(ph, ssn)
	ph = binary.BigEndian.AppendUint16(ph, dl)
	ph = append(ph, 0, 0)
	require.Equal(t, ^refSum(append(ph, payload...)), c)

	require.True(t, VerifyDSSChecksum(dsn, ssn, dl, s.Value(), c))
	require.False(t, VerifyDSSChecksum(dsn, ssn, dl, s.Value(), c^1))
	require.False(t, VerifyDSSChecksum(dsn+1, ssn, dl, s.Value(), c))
	require.False(t, VerifyDSSChecksum(dsn, ssn+1, dl, s.Value(), c))
	require.False(t, VerifyDSSChecksum(dsn, ssn, dl+1, s.Value(), c))

	// All-zero input: the checksum is 0xffff and verifies.
	require.Equal(t, uint16(0xffff), DSSChecksum(0, 0, 0, 0))
	require.True(t, VerifyDSSChecksum(0, 0, 0, 0, 0xffff))
}
