package option

// MPFail is the MP_FAIL option (RFC 8684 §3.7, Figure 16), length 12: it
// reports a DSS checksum failure and carries the full 64-bit DSN from
// which the receiver of the MP_FAIL must fall back.
type MPFail struct {
	DSN uint64
}

// Len returns 12.
func (o *MPFail) Len() int { return word64Len }

// Append appends the whole option to b.
func (o *MPFail) Append(b []byte) []byte { return appendWord64(b, SubtypeMPFail, o.DSN) }

// ParseMPFail decodes an MP_FAIL option starting at the kind byte.
func ParseMPFail(b []byte) (MPFail, int, error) {
	v, n, err := parseWord64(b, SubtypeMPFail)
	return MPFail{DSN: v}, n, err
}
