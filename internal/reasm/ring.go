package reasm

// span is a half-open DSN interval [start, end).
type span struct{ start, end uint64 }

// Ring is a fixed-capacity receive buffer indexed by DSN. It holds the bytes
// from Read() position (the first byte the application has not read) up to
// Read()+Cap(): in-order bytes [ReadPos, Next) and out-of-order ranges above Next.
// Not safe for concurrent use (the caller holds a lock).
//
// The byte with DSN d lives at buf[(d-base)%Cap()]. Every DSN held lies in
// [ReadPos, ReadPos+Cap()), a window exactly Cap() wide, so no two held bytes
// share a slot and a byte never moves once written. Whenever the ring is
// empty, base moves to ReadPos: the next bytes go to the front of buf again,
// so a reader that keeps up works in the same few cache-warm kilobytes
// instead of sweeping the whole buffer.
type Ring struct {
	buf  []byte
	size uint64 // len(buf), kept as uint64 to avoid conversions in DSN math
	rd   uint64 // DSN of the first unread byte
	nxt  uint64 // first DSN not received in order
	base uint64 // a DSN whose slot is buf[0]; base <= rd

	// ranges[head:] are the out-of-order intervals: sorted, disjoint and
	// non-adjacent (touching intervals are merged), each with
	// nxt < start < end <= rd+size. Intervals filled at Next are popped by
	// advancing head rather than shifting the slice, so the common "hole at
	// Next filled" case is O(1); the dead prefix ranges[:head] is reclaimed
	// only when an insertion needs room, which keeps the backing array (and
	// therefore zero allocations) as long as the hole count does not exceed
	// its previous maximum.
	ranges []span
	head   int
	ooo    int // bytes held in ranges[head:]
}

// New returns a ring of capacity size bytes whose first expected DSN is start.
// It panics if size is not positive. start must be below 2^63 (see the
// package comment).
func New(size int, start uint64) *Ring {
	if size <= 0 {
		panic("reasm: non-positive ring size")
	}
	return &Ring{
		buf:  make([]byte, size),
		size: uint64(size),
		rd:   start,
		nxt:  start,
		base: start,
		// Room for a few holes up front: two or three subflows slightly
		// out of step rarely need more, so most rings never grow this.
		ranges: make([]span, 0, 8),
	}
}

// Put stores b, whose first byte has DSN dsn. Bytes below Next() are duplicates and are
// dropped; bytes at or beyond ReadPos()+Cap() do not fit and are not taken;
// bytes in between are copied in (a range already held is not copied again).
// It returns how many bytes from the front of b were consumed (dropped
// duplicates included): b[:n] needs no further handling; b[n:] must be offered
// again once the application has read (n < len(b) only when the rest does not fit yet).
// Next advances over every contiguous byte that is now present.
func (r *Ring) Put(dsn uint64, b []byte) (n int) {
	if len(b) == 0 {
		return 0
	}
	if dsn < r.nxt {
		dup := r.nxt - dsn
		if dup >= uint64(len(b)) {
			return len(b)
		}
		n = int(dup)
		b = b[dup:]
		dsn = r.nxt
	}
	limit := r.rd + r.size
	if dsn >= limit {
		return n
	}
	if room := limit - dsn; uint64(len(b)) > room {
		b = b[:room]
	}
	r.insert(dsn, b)
	return n + len(b)
}

// insert records b at DSN s, where Next <= s and s+len(b) <= ReadPos+Cap.
// It copies only the parts of b not already held, then merges [s, s+len(b))
// with every interval it overlaps or touches; if the result starts at Next
// it becomes in-order data instead of an interval.
func (r *Ring) insert(s uint64, b []byte) {
	e := s + uint64(len(b))
	rs := r.ranges
	i := r.head
	if s != r.nxt {
		i = r.find(s)
	}
	// rs[i:j] are the intervals that overlap or touch [s, e). Copy the gaps
	// between them: a reinjected range is usually already held in full, and
	// skipping it also keeps the first copy of each byte authoritative.
	cur, j, held := s, i, 0
	for ; j < len(rs) && rs[j].start <= e; j++ {
		if rs[j].start > cur {
			r.write(cur, b[cur-s:rs[j].start-s])
		}
		cur = max(cur, rs[j].end)
		held += int(rs[j].end - rs[j].start)
	}
	if cur < e {
		r.write(cur, b[cur-s:])
	}
	ms, me := s, e
	if j > i {
		ms, me = min(s, rs[i].start), max(e, rs[j-1].end)
	}
	r.ooo -= held

	if s == r.nxt {
		// Filled at Next: everything up to me is now in order. The next
		// interval, if any, starts after a gap, so nothing further merges.
		r.nxt = me
		r.head = j
		if r.head == len(rs) {
			r.ranges, r.head = rs[:0], 0
		}
		return
	}

	r.ooo += int(me - ms)
	switch j - i {
	case 0:
		r.insertAt(i, span{ms, me})
	case 1:
		rs[i] = span{ms, me}
	default:
		rs[i] = span{ms, me}
		r.ranges = append(rs[:i+1], rs[j:]...) // shifts down in place
	}
}

// find returns the index of the first live interval whose end is >= s (the
// first one [s, ...) could overlap or touch), or len(r.ranges) if none.
// Data usually arrives at or past the highest interval, so the last two are
// checked before falling back to binary search.
func (r *Ring) find(s uint64) int {
	rs := r.ranges
	lo, hi := r.head, len(rs)
	if lo == hi || rs[hi-1].end < s {
		return hi
	}
	hi--
	if lo == hi || rs[hi-1].end < s {
		return hi
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].end < s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// insertAt inserts sp before live index i (head <= i <= len).
func (r *Ring) insertAt(i int, sp span) {
	if i == r.head && r.head > 0 {
		r.head--
		r.ranges[r.head] = sp
		return
	}
	rs := r.ranges
	if len(rs) == cap(rs) && r.head > 0 {
		// Reclaim the popped prefix instead of growing the array.
		k := copy(rs, rs[r.head:])
		i -= r.head
		rs, r.head = rs[:k], 0
	}
	rs = append(rs, span{}) // allocates only when the hole count hits a new high
	copy(rs[i+1:], rs[i:])
	rs[i] = sp
	r.ranges = rs
}

// write copies b (len(b) <= Cap) to the slots of DSNs [s, s+len(b)),
// wrapping at the end of buf.
func (r *Ring) write(s uint64, b []byte) {
	k := copy(r.buf[(s-r.base)%r.size:], b)
	copy(r.buf, b[k:])
}

// Read copies in-order bytes into p and frees their space; it returns the count (0 when none).
func (r *Ring) Read(p []byte) int {
	n := min(uint64(len(p)), r.nxt-r.rd)
	if n == 0 {
		return 0
	}
	k := copy(p[:n], r.buf[(r.rd-r.base)%r.size:])
	copy(p[k:n], r.buf)
	r.rd += n
	r.rebase()
	return int(n)
}

// Peek returns the in-order bytes available without consuming them, as up to two slices (the ring wraps).
// The slices alias the ring: they are valid until the next Put, Read, Discard
// or Reset, and their capacity is clipped so that appending to them cannot
// overwrite the ring.
func (r *Ring) Peek() (a, b []byte) {
	avail := r.nxt - r.rd
	if avail == 0 {
		return nil, nil
	}
	off := (r.rd - r.base) % r.size
	first := min(avail, r.size-off)
	a = r.buf[off : off+first : off+first]
	if rest := avail - first; rest > 0 {
		b = r.buf[:rest:rest]
	}
	return a, b
}

// Discard frees n in-order bytes (n <= Buffered()) as if read.
// It panics if n is negative or exceeds Buffered().
func (r *Ring) Discard(n int) {
	if n < 0 || uint64(n) > r.nxt-r.rd {
		panic("reasm: Discard out of range")
	}
	r.rd += uint64(n)
	r.rebase()
}

// rebase starts the slots afresh at the front of buf when nothing is held.
func (r *Ring) rebase() {
	if r.rd == r.nxt && r.ooo == 0 {
		r.base = r.rd
	}
}

// Next is the first DSN not yet received in order (the DATA_ACK to send).
func (r *Ring) Next() uint64 { return r.nxt }

// ReadPos is the DSN of the first unread byte.
func (r *Ring) ReadPos() uint64 { return r.rd }

// Buffered is the number of in-order bytes not yet read: Next()-ReadPos().
func (r *Ring) Buffered() int { return int(r.nxt - r.rd) }

// OutOfOrder is the number of bytes held above Next().
func (r *Ring) OutOfOrder() int { return r.ooo }

// Cap is the capacity in bytes.
func (r *Ring) Cap() int { return len(r.buf) }

// Window is the number of bytes that can still be taken:
// ReadPos()+Cap()-Next() (the receive window to advertise relative to Next).
// Out-of-order bytes already held inside it are not subtracted, since the
// peer's window is relative to the DATA_ACK and it may resend them.
func (r *Ring) Window() int { return int(r.rd + r.size - r.nxt) }

// Reset empties the ring, expecting start next; it keeps the memory.
func (r *Ring) Reset(start uint64) {
	r.rd, r.nxt, r.base = start, start, start
	r.ranges, r.head, r.ooo = r.ranges[:0], 0, 0
}
