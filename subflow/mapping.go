package subflow

// Subflow byte positions are kept as 64-bit offsets from the first data
// byte (offset 0 is relative subflow sequence number 1, RFC 8684 §3.3.1), so
// that a subflow can carry more than 4 GiB. The 32-bit numbers on the wire
// are expanded against a nearby 64-bit reference.

// expand returns the 64-bit value nearest to ref whose low 32 bits are v.
func expand(ref uint64, v uint32) uint64 {
	d := int64(int32(v - uint32(ref)))
	if d < 0 && uint64(-d) > ref {
		return uint64(v) // before the start: cannot go negative
	}
	return uint64(int64(ref) + d)
}

// expandDSN turns a 32-bit DSN or DATA_ACK into 64 bits near ref (§3.3.1:
// a 4-octet value is the low 32 bits of the 64-bit one).
func expandDSN(ref uint64, v uint32) uint64 {
	return ref + uint64(int64(int32(v-uint32(ref))))
}

// txEntry maps subflow offsets [off, off+n) to DSNs [dsn, dsn+n).
type txEntry struct {
	off uint64
	dsn uint64
	n   uint64
}

// txMap is the send-side mapping table of one subflow: what the stack wrote
// into the gVisor endpoint at which DSN. Each entry is also the DSS mapping
// that every segment of its bytes carries, so an entry never changes once
// a byte of it may have been sent: the peer rejects a segment whose mapping
// contradicts the one it is consuming (Linux: MPTcpExtDSSNotMatching). Only
// an entry nothing of which has been sent yet grows with the next
// contiguous bytes. Entries hold at most maxMapping bytes (a mapping's
// length is 16 bits).
type txMap struct {
	e    []txEntry
	head int
}

// maxMapping bounds one send mapping.
const maxMapping = 65535

func (m *txMap) live() []txEntry { return m.e[m.head:] }

// add records that n bytes at subflow offset off carry DSN dsn onwards.
// sent is the subflow's highest sent offset; entries are at most limit
// bytes long (≤ maxMapping; a multiple of the MSS keeps gVisor's segments
// inside one mapping each).
func (m *txMap) add(off, dsn, n, sent, limit uint64) {
	limit = min(max(limit, 1), maxMapping)
	if l := m.live(); len(l) > 0 {
		last := &m.e[len(m.e)-1]
		if last.off+last.n == off && last.dsn+last.n == dsn && sent <= last.off && last.n < limit {
			k := min(n, limit-last.n)
			last.n += k
			off, dsn, n = off+k, dsn+k, n-k
		}
	}
	for n > 0 {
		k := min(n, limit)
		m.e = append(m.e, txEntry{off: off, dsn: dsn, n: k})
		off, dsn, n = off+k, dsn+k, n-k
	}
}

// lookup returns the DSN of subflow offset off and how many bytes from off
// on its entry maps.
func (m *txMap) lookup(off uint64) (dsn, n uint64, ok bool) {
	e, ok := m.entry(off)
	if !ok {
		return 0, 0, false
	}
	return e.dsn + (off - e.off), e.off + e.n - off, true
}

// entry returns the entry (the mapping) holding subflow offset off.
func (m *txMap) entry(off uint64) (txEntry, bool) {
	l := m.live()
	for i := len(l) - 1; i >= 0; i-- {
		e := l[i]
		if off >= e.off && off < e.off+e.n {
			return e, true
		}
		if off >= e.off+e.n {
			break
		}
	}
	return txEntry{}, false
}

// ackTo drops the entries whose bytes all lie below offset una. A partly
// acknowledged entry stays whole: a retransmission repeats its mapping.
func (m *txMap) ackTo(una uint64) {
	for m.head < len(m.e) && m.e[m.head].off+m.e[m.head].n <= una {
		m.head++
	}
	if m.head > 32 && m.head*2 > len(m.e) {
		n := copy(m.e, m.e[m.head:])
		m.e = m.e[:n]
		m.head = 0
	}
}

// Mapping is a receive-side DSS mapping: subflow offsets [Off, Off+Len)
// carry DSNs [DSN, DSN+Len). Len counts data bytes only; a DATA_FIN in the
// same option is reported separately.
type Mapping struct {
	Off         uint64
	DSN         uint64
	Len         uint32
	WireLen     uint16 // data-level length as on the wire (includes DATA_FIN)
	SSN         uint32 // relative subflow sequence number as on the wire
	HasChecksum bool
	Checksum    uint16
}

// rxMap keeps the peer's mappings, sorted by offset, until the reader has
// consumed their bytes. Contiguous mappings without checksums are merged,
// so in steady state the table holds one entry and adding to it is O(1).
type rxMap struct {
	e []Mapping
}

// add records m. It returns false, changing nothing, when m contradicts a
// known mapping of the same subflow bytes.
func (r *rxMap) add(m Mapping) bool {
	if n := len(r.e); n > 0 {
		last := &r.e[n-1]
		end := last.Off + uint64(last.Len)
		switch {
		case m.Off == end && m.DSN == last.DSN+uint64(last.Len) && !m.HasChecksum && !last.HasChecksum &&
			uint64(last.Len)+uint64(m.Len) < 1<<31:
			last.Len += m.Len // the common case: the next segment's mapping
			return true
		case m.Off < end:
			if !r.consistent(m) {
				return false
			}
			if r.within(m) {
				return true // a retransmission of known bytes
			}
		}
	}
	r.insert(m)
	return true
}

// acceptable reports whether add would take m: it never contradicts a
// mapping it does not overlap, so only the tail is examined in order.
func (r *rxMap) acceptable(m Mapping) bool {
	if n := len(r.e); n == 0 || m.Off >= r.e[n-1].Off+uint64(r.e[n-1].Len) {
		return true
	}
	return r.consistent(m)
}

// within reports whether one known mapping covers all of m.
func (r *rxMap) within(m Mapping) bool {
	for i := len(r.e) - 1; i >= 0; i-- {
		e := r.e[i]
		if e.Off <= m.Off && m.Off+uint64(m.Len) <= e.Off+uint64(e.Len) && e.HasChecksum == m.HasChecksum {
			return true
		}
		if e.Off+uint64(e.Len) <= m.Off {
			break
		}
	}
	return false
}

// insert adds m unless a mapping with the same start is known already
// (retransmitted segments repeat their mapping).
func (r *rxMap) insert(m Mapping) {
	i := len(r.e)
	for i > 0 && r.e[i-1].Off > m.Off {
		i--
	}
	if i > 0 && r.e[i-1].Off == m.Off {
		if m.Len > r.e[i-1].Len { // a longer mapping of the same start supersedes
			r.e[i-1] = m
		}
		return
	}
	r.e = append(r.e, Mapping{})
	copy(r.e[i+1:], r.e[i:])
	r.e[i] = m
}

// find returns the mapping covering offset off, dropping mappings that end
// at or before off (the reader never goes back).
func (r *rxMap) find(off uint64) (Mapping, bool) {
	drop := 0
	for drop < len(r.e) && r.e[drop].Off+uint64(r.e[drop].Len) <= off && !(r.e[drop].Len == 0 && r.e[drop].Off == off) {
		drop++
	}
	if drop > 0 {
		n := copy(r.e, r.e[drop:])
		r.e = r.e[:n]
	}
	for _, m := range r.e {
		if m.Off <= off && off < m.Off+uint64(m.Len) {
			return m, true
		}
		if m.Off > off {
			break
		}
	}
	return Mapping{}, false
}

// covers reports whether the mappings cover every offset in [from, to).
func (r *rxMap) covers(from, to uint64) bool {
	for _, m := range r.e {
		if m.Off > from {
			return false
		}
		if end := m.Off + uint64(m.Len); end > from {
			from = end
			if from >= to {
				return true
			}
		}
	}
	return from >= to
}

// consistent reports whether m agrees with every known mapping it overlaps
// in subflow offsets: the same byte must always get the same DSN.
func (r *rxMap) consistent(m Mapping) bool {
	for _, e := range r.e {
		if e.Off < m.Off+uint64(m.Len) && m.Off < e.Off+uint64(e.Len) {
			if e.DSN-e.Off != m.DSN-m.Off {
				return false
			}
		}
	}
	return true
}
