package option

import "encoding/binary"

// MP_FAIL (§3.7) and MP_FASTCLOSE (§3.5) share one layout: kind, length
// 12, subtype and 12 reserved bits, then a 64-bit value (a DSN, a key).
const word64Len = 12

func appendWord64(b []byte, t Subtype, v uint64) []byte {
	b = appendHeader(b, word64Len, t, 0)
	b = append(b, 0) // reserved
	return binary.BigEndian.AppendUint64(b, v)
}

func parseWord64(b []byte, t Subtype) (uint64, int, error) {
	n, err := header(b, t)
	if err != nil {
		return 0, 0, err
	}
	if n != word64Len {
		return 0, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return 0, 0, err
	}
	return binary.BigEndian.Uint64(b[4:]), n, nil
}
