package option

// Set holds all MPTCP options of one TCP segment. Present has bit
// 1<<Subtype set for every sub-option that was decoded; the corresponding
// field is valid only when its bit is set.
//
// RFC 8684 does not define more than one instance of a sub-option per
// segment; if a segment carries several, the last one wins (as in Linux).
type Set struct {
	Present     uint16
	MPCapable   MPCapable
	MPJoin      MPJoin
	DSS         DSS
	AddAddr     AddAddr
	RemoveAddr  RemoveAddr
	MPPrio      MPPrio
	MPFail      MPFail
	MPFastclose MPFastclose
	TCPRST      TCPRST
}

// Has reports whether a sub-option of type t was decoded.
func (s *Set) Has(t Subtype) bool { return t < 16 && s.Present&(1<<t) != 0 }

// Reset clears s for reuse.
func (s *Set) Reset() { *s = Set{} }

// TCP option kinds that have no length byte (RFC 9293 §3.1).
const (
	tcpOptEOL = 0
	tcpOptNOP = 1
)

// ParseTCPOptions walks a TCP header's option area (the bytes after the
// 20-byte fixed header, i.e. data offset*4-20 bytes) and decodes every
// MPTCP option into s. It does not Reset s first.
//
// End-of-option-list stops the walk and NOP is one byte; every other kind
// must have a length byte of at least 2 that fits in opts, or the walk
// stops with ErrBadLength / ErrTruncated, since the rest of the area could
// not be framed. MPTCP options with a subtype this package does not know
// (e.g. MP_EXPERIMENTAL, 0xf) are skipped, so that a peer's future
// extensions do not break the connection; an MPTCP option too short to
// hold a subtype (length 2) is ErrBadLength.
//
// The first error is returned as is (a sentinel, see errors.go) and s
// keeps what was decoded before it. An MP_CAPABLE with a version other
// than 1 is reported as ErrBadVersion and is not stored.
func ParseTCPOptions(opts []byte, s *Set) error {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case tcpOptEOL:
			return nil
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return ErrTruncated
		}
		n := int(opts[i+1])
		if n < 2 {
			return ErrBadLength
		}
		if i+n > len(opts) {
			return ErrTruncated
		}
		if opts[i] == Kind {
			if err := s.parseOne(opts[i : i+n]); err != nil {
				return err
			}
		}
		i += n
	}
	return nil
}

// parseOne decodes one complete MPTCP option (b is exactly the option).
func (s *Set) parseOne(b []byte) error {
	if len(b) < 3 {
		return ErrBadLength
	}
	// Each case decodes into a local and stores it only on success: an
	// option that fails to parse must not overwrite one of the same
	// subtype decoded before it.
	t := Subtype(b[2] >> 4)
	switch t {
	case SubtypeMPCapable:
		v, _, err := ParseMPCapable(b)
		if err != nil {
			return err
		}
		s.MPCapable = v
	case SubtypeMPJoin:
		v, _, err := ParseMPJoin(b)
		if err != nil {
			return err
		}
		s.MPJoin = v
	case SubtypeDSS:
		v, _, err := ParseDSS(b)
		if err != nil {
			return err
		}
		s.DSS = v
	case SubtypeAddAddr:
		v, _, err := ParseAddAddr(b)
		if err != nil {
			return err
		}
		s.AddAddr = v
	case SubtypeRemoveAddr:
		v, _, err := ParseRemoveAddr(b)
		if err != nil {
			return err
		}
		s.RemoveAddr = v
	case SubtypeMPPrio:
		v, _, err := ParseMPPrio(b)
		if err != nil {
			return err
		}
		s.MPPrio = v
	case SubtypeMPFail:
		v, _, err := ParseMPFail(b)
		if err != nil {
			return err
		}
		s.MPFail = v
	case SubtypeMPFastclose:
		v, _, err := ParseMPFastclose(b)
		if err != nil {
			return err
		}
		s.MPFastclose = v
	case SubtypeMPTCPRST:
		v, _, err := ParseTCPRST(b)
		if err != nil {
			return err
		}
		s.TCPRST = v
	default:
		return nil
	}
	s.Present |= 1 << t
	return nil
}
