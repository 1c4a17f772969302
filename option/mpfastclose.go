package option

import "encoding/binary"

// MPFastclose is the MP_FASTCLOSE option (RFC 8684 §3.5, Figure 14),
// length 12. Key is the key of the host *receiving* the option (the
// "Option Receiver's Key"), which authenticates the abrupt close.
type MPFastclose struct {
	Key uint64
}

// Len returns 12.
func (o *MPFastclose) Len() int { return 12 }

// Append appends the whole option to b.
func (o *MPFastclose) Append(b []byte) []byte {
	b = appendHeader(b, 12, SubtypeMPFastclose, 0)
	b = append(b, 0) // reserved
	return binary.BigEndian.AppendUint64(b, o.Key)
}

// ParseMPFastclose decodes an MP_FASTCLOSE option starting at the kind
// byte.
func ParseMPFastclose(b []byte) (MPFastclose, int, error) {
	var o MPFastclose
	n, err := header(b, SubtypeMPFastclose)
	if err != nil {
		return o, 0, err
	}
	if n != 12 {
		return o, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return o, 0, err
	}
	o.Key = binary.BigEndian.Uint64(b[4:])
	return o, n, nil
}
