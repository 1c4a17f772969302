package option

import (
	"encoding/binary"
	"net/netip"
)

// AddAddr is the ADD_ADDR option (RFC 8684 §3.4.1, Figure 12).
//
// The address family is inferred from the option length when parsing; on
// output an Addr for which Is4 reports true is sent as 4 octets and
// anything else (including IPv4-mapped IPv6 and the zero Addr, which goes
// out as ::) as 16.
//
// The truncated HMAC (rightmost 64 bits of HMAC-SHA256, see AddAddrHMAC)
// is present exactly when the E (echo) flag is clear: an echo only
// acknowledges an announcement. ParseAddAddr enforces that pairing (a
// length that contradicts the E flag is ErrBadLength, as in Linux);
// Append writes the fields HasHMAC/HasPort ask for, whatever Echo says.
type AddAddr struct {
	Echo    bool
	AddrID  uint8
	Addr    netip.Addr
	HasPort bool
	Port    uint16
	HasHMAC bool
	HMAC    uint64
}

// Len returns the encoded length: 8, 10, 16 or 18 for IPv4, 20, 22, 28 or
// 30 for IPv6.
func (o *AddAddr) Len() int {
	n := 4 + 16
	if o.Addr.Is4() {
		n = 4 + 4
	}
	if o.HasPort {
		n += 2
	}
	if o.HasHMAC {
		n += 8
	}
	return n
}

// Append appends the whole option to b.
func (o *AddAddr) Append(b []byte) []byte {
	var flags uint8
	if o.Echo {
		flags = 0x01
	}
	b = appendHeader(b, o.Len(), SubtypeAddAddr, flags)
	b = append(b, o.AddrID)
	if o.Addr.Is4() {
		a := o.Addr.As4()
		b = append(b, a[:]...)
	} else {
		a := o.Addr.As16()
		b = append(b, a[:]...)
	}
	if o.HasPort {
		b = binary.BigEndian.AppendUint16(b, o.Port)
	}
	if o.HasHMAC {
		b = binary.BigEndian.AppendUint64(b, o.HMAC)
	}
	return b
}

// ParseAddAddr decodes an ADD_ADDR option starting at the kind byte.
func ParseAddAddr(b []byte) (AddAddr, int, error) {
	var o AddAddr
	n, err := header(b, SubtypeAddAddr)
	if err != nil {
		return o, 0, err
	}
	// After the 4 fixed octets: address (4|16), port (0|2), HMAC (0|8).
	// All eight combinations have distinct lengths.
	var v6 bool
	switch n - 4 {
	case 4:
	case 4 + 2:
		o.HasPort = true
	case 4 + 8:
		o.HasHMAC = true
	case 4 + 2 + 8:
		o.HasPort, o.HasHMAC = true, true
	case 16:
		v6 = true
	case 16 + 2:
		v6, o.HasPort = true, true
	case 16 + 8:
		v6, o.HasHMAC = true, true
	case 16 + 2 + 8:
		v6, o.HasPort, o.HasHMAC = true, true, true
	default:
		return AddAddr{}, 0, ErrBadLength
	}
	o.Echo = b[2]&0x01 != 0
	if o.Echo == o.HasHMAC {
		return AddAddr{}, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return AddAddr{}, 0, err
	}
	o.AddrID = b[3]
	p := 4
	if v6 {
		o.Addr = netip.AddrFrom16([16]byte(b[p : p+16]))
		p += 16
	} else {
		o.Addr = netip.AddrFrom4([4]byte(b[p : p+4]))
		p += 4
	}
	if o.HasPort {
		o.Port = binary.BigEndian.Uint16(b[p:])
		p += 2
	}
	if o.HasHMAC {
		o.HMAC = binary.BigEndian.Uint64(b[p:])
	}
	return o, n, nil
}
