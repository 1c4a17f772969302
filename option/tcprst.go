package option

// MP_TCPRST flag bits (RFC 8684 §3.6, Figure 15): the low nibble of the
// third option byte, "U V W T". Only T is defined; U, V and W are for
// future use and are kept as they were received.
const (
	FlagTransient = 0x01 // T: the error is transient, the subflow may be retried
)

// MP_TCPRST reason codes (RFC 8684 §3.6).
const (
	ReasonUnspecified             = 0x00
	ReasonMPTCPError              = 0x01
	ReasonNoResources             = 0x02
	ReasonAdminProhibited         = 0x03
	ReasonTooMuchOutstanding      = 0x04
	ReasonUnacceptablePerformance = 0x05
	ReasonMiddleboxInterference   = 0x06
)

// TCPRST is the MP_TCPRST option (RFC 8684 §3.6), length 4, sent with a
// TCP RST to say why a subflow is being reset. Flags holds the 4 flag bits
// (only the low nibble is encoded).
type TCPRST struct {
	Flags  uint8
	Reason uint8
}

// Len returns 4.
func (o *TCPRST) Len() int { return 4 }

// Append appends the whole option to b.
func (o *TCPRST) Append(b []byte) []byte {
	b = appendHeader(b, 4, SubtypeMPTCPRST, o.Flags)
	return append(b, o.Reason)
}

// ParseTCPRST decodes an MP_TCPRST option starting at the kind byte.
func ParseTCPRST(b []byte) (TCPRST, int, error) {
	var o TCPRST
	n, err := header(b, SubtypeMPTCPRST)
	if err != nil {
		return o, 0, err
	}
	if n != 4 {
		return o, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return o, 0, err
	}
	o.Flags = b[2] & 0x0f
	o.Reason = b[3]
	return o, n, nil
}
