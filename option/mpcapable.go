package option

import "encoding/binary"

// MPCForm is the variant of MP_CAPABLE, which RFC 8684 §3.1 (Figure 4)
// distinguishes only by the option length.
type MPCForm uint8

// MP_CAPABLE forms and their option lengths.
const (
	MPCSyn         MPCForm = iota // length 4: SYN, v1 carries no key
	MPCSynAck                     // length 12: SYN/ACK, sender's key
	MPCAck                        // length 20: third ACK, sender's and receiver's keys
	MPCAckData                    // length 22: first data, keys + data-level length
	MPCAckDataCsum                // length 24: as MPCAckData plus DSS checksum
)

var mpcLens = [...]int{MPCSyn: 4, MPCSynAck: 12, MPCAck: 20, MPCAckData: 22, MPCAckDataCsum: 24}

// String names the form after the segment that carries it.
func (f MPCForm) String() string {
	switch f {
	case MPCSyn:
		return "SYN"
	case MPCSynAck:
		return "SYN/ACK"
	case MPCAck:
		return "ACK"
	case MPCAckData:
		return "ACK+data"
	case MPCAckDataCsum:
		return "ACK+data+csum"
	}
	return "MPCForm(?)"
}

// MP_CAPABLE flag bits A..H of the fourth option byte (RFC 8684 §3.1).
// D, E, F and G are unassigned and must be sent as zero.
const (
	FlagChecksum      = 0x80 // A: DSS checksum required
	FlagExtensibility = 0x40 // B: reserved for extensibility, must be 0 in v1
	FlagNoJoinSrc     = 0x20 // C: do not send MP_JOIN to the source address of this SYN
	FlagHMACSHA256    = 0x01 // H: HMAC-SHA256 is the crypto algorithm (the only one)
)

// MPCapableVersion is the only version this package accepts (MPTCP v1).
const MPCapableVersion = 1

// MPCapable is the MP_CAPABLE option (RFC 8684 §3.1). Which fields are on
// the wire depends on Form: SenderKey from MPCSynAck on, ReceiverKey from
// MPCAck on, DataLen from MPCAckData on and Checksum only in
// MPCAckDataCsum. Fields the form does not carry are ignored by Append and
// zero after parsing.
//
// Note that in the SYN/ACK the "sender" is the passive opener, and in the
// third ACK SenderKey is the active opener's key and ReceiverKey the
// passive opener's key echoed back (v1 has no key in the SYN).
type MPCapable struct {
	Version     uint8 // 1 for MPTCP v1
	Flags       uint8 // bits A..H, see FlagChecksum etc.
	SenderKey   uint64
	ReceiverKey uint64
	DataLen     uint16 // data-level length of the mapping carried with data
	Checksum    uint16 // DSS checksum (§3.3.1) of that mapping
	Form        MPCForm
}

func (f MPCForm) length() int {
	if int(f) < len(mpcLens) {
		return mpcLens[f]
	}
	return mpcLens[MPCSyn] // an unknown Form encodes as the SYN form
}

// Len returns the encoded length in bytes (4, 12, 20, 22 or 24). An
// unknown Form is encoded as MPCSyn.
func (o *MPCapable) Len() int { return o.Form.length() }

// Append appends the whole option (kind, length, subtype...) to b.
func (o *MPCapable) Append(b []byte) []byte {
	n := o.Len()
	b = appendHeader(b, n, SubtypeMPCapable, o.Version)
	b = append(b, o.Flags)
	if n >= 12 {
		b = binary.BigEndian.AppendUint64(b, o.SenderKey)
	}
	if n >= 20 {
		b = binary.BigEndian.AppendUint64(b, o.ReceiverKey)
	}
	if n >= 22 {
		b = binary.BigEndian.AppendUint16(b, o.DataLen)
	}
	if n >= 24 {
		b = binary.BigEndian.AppendUint16(b, o.Checksum)
	}
	return b
}

// ParseMPCapable decodes an MP_CAPABLE option starting at b[0] (the kind
// byte). The form is inferred from the length. A version other than 1
// yields the decoded option together with ErrBadVersion (see there).
func ParseMPCapable(b []byte) (MPCapable, int, error) {
	var o MPCapable
	n, err := header(b, SubtypeMPCapable)
	if err != nil {
		return o, 0, err
	}
	switch n {
	case 4:
		o.Form = MPCSyn
	case 12:
		o.Form = MPCSynAck
	case 20:
		o.Form = MPCAck
	case 22:
		o.Form = MPCAckData
	case 24:
		o.Form = MPCAckDataCsum
	default:
		return MPCapable{}, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return MPCapable{}, 0, err
	}
	o.Version = b[2] & 0x0f
	o.Flags = b[3]
	if n >= 12 {
		o.SenderKey = binary.BigEndian.Uint64(b[4:])
	}
	if n >= 20 {
		o.ReceiverKey = binary.BigEndian.Uint64(b[12:])
	}
	if n >= 22 {
		o.DataLen = binary.BigEndian.Uint16(b[20:])
	}
	if n >= 24 {
		o.Checksum = binary.BigEndian.Uint16(b[22:])
	}
	if o.Version != MPCapableVersion {
		return o, n, ErrBadVersion
	}
	return o, n, nil
}
