package option

// MaxRemoveAddrIDs is how many address IDs fit in one REMOVE_ADDR: the
// 40-octet TCP option space minus kind, length and subtype.
const MaxRemoveAddrIDs = 37

// RemoveAddr is the REMOVE_ADDR option (RFC 8684 §3.4.2, Figure 13): one
// or more address IDs. N counts the valid entries of IDs; values above
// MaxRemoveAddrIDs are treated as MaxRemoveAddrIDs.
type RemoveAddr struct {
	N   uint8
	IDs [MaxRemoveAddrIDs]uint8
}

func (r *RemoveAddr) n() int { return min(int(r.N), MaxRemoveAddrIDs) }

// List returns the valid IDs, r.IDs[:r.N] (aliasing r).
func (r *RemoveAddr) List() []uint8 { return r.IDs[:r.n()] }

// Len returns 3 + the number of IDs. A RemoveAddr with N == 0 encodes
// (as length 3) but is not valid on the wire and does not parse.
func (r *RemoveAddr) Len() int { return 3 + r.n() }

// Append appends the whole option to b.
func (r *RemoveAddr) Append(b []byte) []byte {
	b = appendHeader(b, r.Len(), SubtypeRemoveAddr, 0)
	return append(b, r.List()...)
}

// ParseRemoveAddr decodes a REMOVE_ADDR option starting at the kind byte.
// The length must be 4..40 (at least one ID).
func ParseRemoveAddr(b []byte) (RemoveAddr, int, error) {
	var r RemoveAddr
	n, err := header(b, SubtypeRemoveAddr)
	if err != nil {
		return r, 0, err
	}
	if n < 4 || n > 3+MaxRemoveAddrIDs {
		return r, 0, ErrBadLength
	}
	if err := fits(b, n); err != nil {
		return r, 0, err
	}
	r.N = uint8(copy(r.IDs[:], b[3:n]))
	return r, n, nil
}
