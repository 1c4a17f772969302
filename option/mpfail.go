package option

import "encoding/binary"

// MPFail is the MP_FAIL option (RFC 8684 §3.7, Figure 16), length 12: it
// reports a DSS checksum failure and carries the full 64-bit DSN from
// which the receiver of the MP_FAIL must fall back.
type MPFail struct {
	DSN uint64
}

// Len returns 12.
func (o *MPFail) Len() int { return 12 }

// Append appends the whole option to b.
func (o *MPFail) Append(b []byte) []byte {
	b = appendHeader(b, 12, SubtypeMPFail, 0)
	b = append(b, 0) // reserved
	return binary.BigEndian.AppendUint64(b, o.DSN)
}

// ParseMPFail decodes an MP_FAIL option starting at the kind byte.
func ParseMPFail(b []byte) (MPFail, int, error) {
	var o MPFail
	n, err := header(b, SubtypeMPFail)
	if err != nil {
		return o, 0, err
	}
	if n != 12 {
		return o, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return o, 0, err
	}
	o.DSN = binary.BigEndian.Uint64(b[4:])
	return o, n, nil
}
