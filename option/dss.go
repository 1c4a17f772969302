package option

import "encoding/binary"

// DSS flag bits of the fourth option byte (RFC 8684 §3.3, Figure 9).
const (
	dssDataAck   = 0x01 // A: Data ACK present
	dssDataAck64 = 0x02 // a: Data ACK is 8 octets
	dssMapping   = 0x04 // M: DSN, SSN, data-level length (+checksum) present
	dssDSN64     = 0x08 // m: DSN is 8 octets
	dssDataFin   = 0x10 // F: DATA_FIN
)

// DSS is the Data Sequence Signal option (RFC 8684 §3.3): an optional data
// ACK and an optional mapping from subflow to data sequence space.
//
// DataAck64 and DSN64 select the 8-octet encodings; when they are false the
// option carries only the low 32 bits of DataAck/DSN, and on parsing the
// high bits are zero: expanding a 32-bit value against the connection's
// 64-bit sequence space is the caller's job (§3.3.1).
//
// SSN is the subflow sequence number relative to the subflow's initial
// sequence number (§3.3.1: the SYN is 0, the first data byte 1).
//
// HasChecksum is only meaningful with HasMapping: the checksum field is
// part of the mapping and its presence is inferred from the option length
// when parsing (it is present iff checksums were negotiated with the
// MP_CAPABLE A flag). DataAck64 is only meaningful with HasDataAck, DSN64
// only with HasMapping; parsing leaves them false otherwise. DataFin is the
// raw F flag: per §3.3.3 a DATA_FIN is part of a mapping (it occupies one
// data-level octet), but the flag is decoded whatever the other flags say.
type DSS struct {
	HasDataAck bool
	DataAck64  bool
	DataAck    uint64

	HasMapping bool
	DSN64      bool
	DSN        uint64
	SSN        uint32
	DataLen    uint16

	HasChecksum bool
	Checksum    uint16

	DataFin bool
}

func (o *DSS) flags() uint8 {
	var f uint8
	if o.HasDataAck {
		f |= dssDataAck
		if o.DataAck64 {
			f |= dssDataAck64
		}
	}
	if o.HasMapping {
		f |= dssMapping
		if o.DSN64 {
			f |= dssDSN64
		}
	}
	if o.DataFin {
		f |= dssDataFin
	}
	return f
}

// dssLen returns the option length implied by the flags, without the
// optional 2 checksum octets.
func dssLen(f uint8) int {
	n := 4
	if f&dssDataAck != 0 {
		n += 4
		if f&dssDataAck64 != 0 {
			n += 4
		}
	}
	if f&dssMapping != 0 {
		n += 4 + 4 + 2 // DSN (32 bits), SSN, data-level length
		if f&dssDSN64 != 0 {
			n += 4
		}
	}
	return n
}

// Len returns the encoded length: 4 to 28 bytes.
func (o *DSS) Len() int {
	n := dssLen(o.flags())
	if o.HasMapping && o.HasChecksum {
		n += 2
	}
	return n
}

// Append appends the whole option to b.
func (o *DSS) Append(b []byte) []byte {
	f := o.flags()
	b = appendHeader(b, o.Len(), SubtypeDSS, 0)
	b = append(b, f)
	if o.HasDataAck {
		b = appendSeq(b, o.DataAck, o.DataAck64)
	}
	if o.HasMapping {
		b = appendSeq(b, o.DSN, o.DSN64)
		b = binary.BigEndian.AppendUint32(b, o.SSN)
		b = binary.BigEndian.AppendUint16(b, o.DataLen)
		if o.HasChecksum {
			b = binary.BigEndian.AppendUint16(b, o.Checksum)
		}
	}
	return b
}

// ParseDSS decodes a DSS option starting at the kind byte. The length must
// be exactly what the flags imply, or 2 more when a mapping is present (the
// checksum).
func ParseDSS(b []byte) (DSS, int, error) {
	var o DSS
	n, err := header(b, SubtypeDSS)
	if err != nil {
		return o, 0, err
	}
	if n < 4 {
		return o, 0, ErrBadLength
	}
	if len(b) < 4 {
		return o, 0, ErrTruncated
	}
	f := b[3]
	want := dssLen(f)
	switch {
	case n == want:
	case n == want+2 && f&dssMapping != 0:
		o.HasChecksum = true
	default:
		return DSS{}, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return DSS{}, 0, err
	}
	p := 4
	if f&dssDataAck != 0 {
		o.HasDataAck = true
		o.DataAck64 = f&dssDataAck64 != 0
		o.DataAck, p = readSeq(b, p, o.DataAck64)
	}
	if f&dssMapping != 0 {
		o.HasMapping = true
		o.DSN64 = f&dssDSN64 != 0
		o.DSN, p = readSeq(b, p, o.DSN64)
		o.SSN = binary.BigEndian.Uint32(b[p:])
		o.DataLen = binary.BigEndian.Uint16(b[p+4:])
		if o.HasChecksum {
			o.Checksum = binary.BigEndian.Uint16(b[p+6:])
		}
	}
	o.DataFin = f&dssDataFin != 0
	return o, n, nil
}

// appendSeq appends a sequence number as 8 octets, or its low 4 octets.
func appendSeq(b []byte, v uint64, wide bool) []byte {
	if wide {
		return binary.BigEndian.AppendUint64(b, v)
	}
	return binary.BigEndian.AppendUint32(b, uint32(v))
}

// readSeq reads a 4- or 8-octet sequence number (DATA_ACK or DSN) at b[p:]
// and returns it with the offset after it.
func readSeq(b []byte, p int, wide bool) (uint64, int) {
	if wide {
		return binary.BigEndian.Uint64(b[p:]), p + 8
	}
	return uint64(binary.BigEndian.Uint32(b[p:])), p + 4
}
