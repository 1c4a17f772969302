package option

// MPPrio is the MP_PRIO option (RFC 8684 §3.3.8, Figure 11): it changes
// the backup flag of the subflow it is sent on. RFC 8684 defines length 3;
// RFC 6824 (v0) had an optional address ID making it length 4, which is
// still accepted (HasAddrID) for robustness.
type MPPrio struct {
	Backup    bool
	HasAddrID bool
	AddrID    uint8
}

// Len returns 3, or 4 with HasAddrID.
func (o *MPPrio) Len() int {
	if o.HasAddrID {
		return 4
	}
	return 3
}

// Append appends the whole option to b.
func (o *MPPrio) Append(b []byte) []byte {
	var flags uint8
	if o.Backup {
		flags = 0x01
	}
	b = appendHeader(b, o.Len(), SubtypeMPPrio, flags)
	if o.HasAddrID {
		b = append(b, o.AddrID)
	}
	return b
}

// ParseMPPrio decodes an MP_PRIO option starting at the kind byte.
func ParseMPPrio(b []byte) (MPPrio, int, error) {
	var o MPPrio
	n, err := header(b, SubtypeMPPrio)
	if err != nil {
		return o, 0, err
	}
	if n != 3 && n != 4 {
		return o, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return o, 0, err
	}
	o.Backup = b[2]&0x01 != 0
	if n == 4 {
		o.HasAddrID = true
		o.AddrID = b[3]
	}
	return o, n, nil
}
