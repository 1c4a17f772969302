package option

import "strconv"

// Kind is the TCP option kind assigned to MPTCP (RFC 8684 §3, IANA).
const Kind = 30

// Subtype is the 4-bit MPTCP option subtype, the high nibble of the third
// option byte (RFC 8684 §3, Table 1 / §8 IANA registry).
type Subtype uint8

// MPTCP option subtypes (RFC 8684 §8, Table 1).
const (
	SubtypeMPCapable   Subtype = 0
	SubtypeMPJoin      Subtype = 1
	SubtypeDSS         Subtype = 2
	SubtypeAddAddr     Subtype = 3
	SubtypeRemoveAddr  Subtype = 4
	SubtypeMPPrio      Subtype = 5
	SubtypeMPFail      Subtype = 6
	SubtypeMPFastclose Subtype = 7
	SubtypeMPTCPRST    Subtype = 8
)

var subtypeNames = [...]string{
	SubtypeMPCapable:   "MP_CAPABLE",
	SubtypeMPJoin:      "MP_JOIN",
	SubtypeDSS:         "DSS",
	SubtypeAddAddr:     "ADD_ADDR",
	SubtypeRemoveAddr:  "REMOVE_ADDR",
	SubtypeMPPrio:      "MP_PRIO",
	SubtypeMPFail:      "MP_FAIL",
	SubtypeMPFastclose: "MP_FASTCLOSE",
	SubtypeMPTCPRST:    "MP_TCPRST",
}

// String returns the RFC name of the subtype, e.g. "MP_CAPABLE".
func (t Subtype) String() string {
	if int(t) < len(subtypeNames) {
		return subtypeNames[t]
	}
	if t == 0xf {
		return "MP_EXPERIMENTAL"
	}
	return "Subtype(" + strconv.Itoa(int(t)) + ")"
}

// header checks the part shared by every sub-option: the kind byte and the
// subtype nibble. It returns the option length byte. It does not check the
// length against len(b); callers validate the length for their sub-option
// first (so a wrong length reports ErrBadLength even on a short buffer) and
// then call fits.
func header(b []byte, t Subtype) (int, error) {
	if len(b) > 0 && b[0] != Kind {
		return 0, ErrNotMPTCP
	}
	if len(b) < 3 {
		return 0, ErrTruncated
	}
	if Subtype(b[2]>>4) != t {
		return 0, ErrUnknownSubtype
	}
	return int(b[1]), nil
}

// fits reports ErrTruncated when b does not hold all n option bytes.
func fits(b []byte, n int) error {
	if len(b) < n {
		return ErrTruncated
	}
	return nil
}

// appendHeader appends kind, length and the subtype byte (subtype in the
// high nibble, low4 in the low nibble).
func appendHeader(b []byte, length int, t Subtype, low4 uint8) []byte {
	return append(b, Kind, byte(length), byte(t)<<4|low4&0x0f)
}
