package option

import "encoding/binary"

// JoinForm is the variant of MP_JOIN (RFC 8684 §3.2, Figures 5-7),
// distinguished by the option length.
type JoinForm uint8

// MP_JOIN forms.
const (
	JoinSyn    JoinForm = iota // length 12: B, address ID, receiver's token, sender's nonce
	JoinSynAck                 // length 16: B, address ID, truncated HMAC, sender's nonce
	JoinAck                    // length 24: 160 bits of HMAC
)

var joinLens = [...]int{JoinSyn: 12, JoinSynAck: 16, JoinAck: 24}

// String names the form after the segment that carries it.
func (f JoinForm) String() string {
	switch f {
	case JoinSyn:
		return "SYN"
	case JoinSynAck:
		return "SYN/ACK"
	case JoinAck:
		return "ACK"
	}
	return "JoinForm(?)"
}

// MPJoinHMACLen is the number of HMAC bytes carried in the third ACK of a
// join (RFC 8684 §3.2: 160 bits, the leftmost bits of the HMAC-SHA256).
const MPJoinHMACLen = 20

// MPJoin is the MP_JOIN option (RFC 8684 §3.2).
//
//   - JoinSyn uses Backup, AddrID, Token (the receiver's token, §3.1) and
//     Nonce (the sender's random number).
//   - JoinSynAck uses Backup, AddrID, TruncHMAC (leftmost 64 bits of the
//     sender's HMAC, see JoinHMAC/TruncHMAC) and Nonce.
//   - JoinAck uses HMAC (leftmost 160 bits of the sender's HMAC); it has no
//     B flag or address ID, so those are zero after parsing.
type MPJoin struct {
	Form      JoinForm
	Backup    bool
	AddrID    uint8
	Token     uint32
	Nonce     uint32
	TruncHMAC uint64
	HMAC      [MPJoinHMACLen]byte
}

// Len returns the encoded length (12, 16 or 24). An unknown Form encodes
// as JoinSyn.
func (o *MPJoin) Len() int {
	if int(o.Form) < len(joinLens) {
		return joinLens[o.Form]
	}
	return joinLens[JoinSyn]
}

// Append appends the whole option to b.
func (o *MPJoin) Append(b []byte) []byte {
	n := o.Len()
	if n == joinLens[JoinAck] {
		b = appendHeader(b, n, SubtypeMPJoin, 0)
		b = append(b, 0) // reserved
		return append(b, o.HMAC[:]...)
	}
	var flags uint8
	if o.Backup {
		flags = 0x01
	}
	b = appendHeader(b, n, SubtypeMPJoin, flags)
	b = append(b, o.AddrID)
	if n == joinLens[JoinSyn] {
		b = binary.BigEndian.AppendUint32(b, o.Token)
	} else {
		b = binary.BigEndian.AppendUint64(b, o.TruncHMAC)
	}
	return binary.BigEndian.AppendUint32(b, o.Nonce)
}

// ParseMPJoin decodes an MP_JOIN option starting at the kind byte; the
// form is inferred from the length.
func ParseMPJoin(b []byte) (MPJoin, int, error) {
	var o MPJoin
	n, err := header(b, SubtypeMPJoin)
	if err != nil {
		return o, 0, err
	}
	switch n {
	case 12:
		o.Form = JoinSyn
	case 16:
		o.Form = JoinSynAck
	case 24:
		o.Form = JoinAck
	default:
		return MPJoin{}, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return MPJoin{}, 0, err
	}
	switch o.Form {
	case JoinSyn:
		o.Backup = b[2]&0x01 != 0
		o.AddrID = b[3]
		o.Token = binary.BigEndian.Uint32(b[4:])
		o.Nonce = binary.BigEndian.Uint32(b[8:])
	case JoinSynAck:
		o.Backup = b[2]&0x01 != 0
		o.AddrID = b[3]
		o.TruncHMAC = binary.BigEndian.Uint64(b[4:])
		o.Nonce = binary.BigEndian.Uint32(b[12:])
	case JoinAck:
		copy(o.HMAC[:], b[4:24])
	}
	return o, n, nil
}
