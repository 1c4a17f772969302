package option

// MPFastclose is the MP_FASTCLOSE option (RFC 8684 §3.5, Figure 14),
// length 12. Key is the key of the host *receiving* the option (the
// "Option Receiver's Key"), which authenticates the abrupt close.
type MPFastclose struct {
	Key uint64
}

// Len returns 12.
func (o *MPFastclose) Len() int { return word64Len }

// Append appends the whole option to b.
func (o *MPFastclose) Append(b []byte) []byte { return appendWord64(b, SubtypeMPFastclose, o.Key) }

// ParseMPFastclose decodes an MP_FASTCLOSE option starting at the kind
// byte.
func ParseMPFastclose(b []byte) (MPFastclose, int, error) {
	v, n, err := parseWord64(b, SubtypeMPFastclose)
	return MPFastclose{Key: v}, n, err
}
