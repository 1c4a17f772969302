package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDSSForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire string
		want DSS
	}{
		// Linux: pure 64-bit DATA_ACK.
		{"ack64", "1e0c 2003 570762cd38be9846", DSS{HasDataAck: true, DataAck64: true, DataAck: 0x570762cd38be9846}},
		{"ack32", "1e08 2001 38be9846", DSS{HasDataAck: true, DataAck: 0x38be9846}},
		// Linux: ack64 + map64.
		{"ack64-map64", "1e1a 200f 570762cd38be9846 17e2d1fbed65544b 00000035 002b",
			DSS{HasDataAck: true, DataAck64: true, DataAck: 0x570762cd38be9846, HasMapping: true, DSN64: true, DSN: 0x17e2d1fbed65544b, SSN: 0x35, DataLen: 0x2b}},
		{"ack64-map64-csum", "1e1c 200f 570762cd38be9846 f16845f40dba751c 00000035 002b a493",
			DSS{HasDataAck: true, DataAck64: true, DataAck: 0x570762cd38be9846, HasMapping: true, DSN64: true, DSN: 0xf16845f40dba751c, SSN: 0x35, DataLen: 0x2b, HasChecksum: true, Checksum: 0xa493}},
		// Linux DATA_FIN: mapping with length 1, SSN 0.
		{"datafin", "1e1a 201f 570762cd38be9846 17e2d1fbed655476 00000000 0001",
			DSS{HasDataAck: true, DataAck64: true, DataAck: 0x570762cd38be9846, HasMapping: true, DSN64: true, DSN: 0x17e2d1fbed655476, DataLen: 1, DataFin: true}},
		{"map32", "1e0e 2004 11223344 00000001 0010", DSS{HasMapping: true, DSN: 0x11223344, SSN: 1, DataLen: 16}},
		{"map32-csum", "1e10 2004 11223344 00000001 0010 beef", DSS{HasMapping: true, DSN: 0x11223344, SSN: 1, DataLen: 16, HasChecksum: true, Checksum: 0xbeef}},
		{"ack32-map32", "1e12 2005 aabbccdd 11223344 00000001 0010", DSS{HasDataAck: true, DataAck: 0xaabbccdd, HasMapping: true, DSN: 0x11223344, SSN: 1, DataLen: 16}},
		{"ack32-map64-csum", "1e18 200d aabbccdd 0102030405060708 00000002 0003 0004",
			DSS{HasDataAck: true, DataAck: 0xaabbccdd, HasMapping: true, DSN64: true, DSN: 0x0102030405060708, SSN: 2, DataLen: 3, HasChecksum: true, Checksum: 4}},
		{"empty", "1e04 2000", DSS{}},
		{"fin-only", "1e04 2010", DSS{DataFin: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkWire(t, ParseDSS, h(t, tc.wire), tc.want)
		})
	}
}

func TestDSSBadLength(t *testing.T) {
	// Without a mapping the length is exact (no checksum possible).
	checkBadLengths(t, ParseDSS, h(t, "1e0c2003"), 0, 2, 3, 4, 8, 10, 14, 16)
	checkBadLengths(t, ParseDSS, h(t, "1e042000"), 3, 5, 6, 8)
	// With a mapping: exact or +2.
	checkBadLengths(t, ParseDSS, h(t, "1e1a200f"), 25, 27, 29, 30, 24)
}

// The a and m bits mean nothing without A and M; they must not change the
// length and are dropped on re-encoding.
func TestDSSMeaninglessSizeBits(t *testing.T) {
	o, n, err := ParseDSS(h(t, "1e04 200a"))
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Equal(t, DSS{}, o)
	// Reserved bits of byte 2 and 3 are ignored.
	o, _, err = ParseDSS(h(t, "1e08 2fe1 00000007"))
	require.NoError(t, err)
	require.Equal(t, DSS{HasDataAck: true, DataAck: 7}, o)

	// HasChecksum without a mapping is not encoded.
	d := DSS{HasChecksum: true, Checksum: 5}
	require.Equal(t, 4, d.Len())
	require.Equal(t, h(t, "1e042000"), d.Append(nil))
	// A 32-bit ack encodes only the low bits.
	d = DSS{HasDataAck: true, DataAck: 0x1122334455667788}
	require.Equal(t, h(t, "1e08200155667788"), d.Append(nil))
}
