package stack

import "github.com/umptcp/umptcp/subflow"

// sendBuf holds the bytes of DSNs [una, nxt): written by the application
// and not yet acknowledged at the data level (DATA_ACK), so that any
// subflow can send them again. It is a ring that grows by doubling up to
// max bytes; the application blocks when it is full.
type sendBuf struct {
	buf      []byte // power-of-two length; DSN d lives at d & (len-1)
	una, nxt uint64
	max      int
}

const minSendBuf = 64 << 10

func newSendBuf(start uint64, max int) sendBuf {
	return sendBuf{una: start, nxt: start, max: max}
}

func (b *sendBuf) used() int { return int(b.nxt - b.una) }

// space is how many more bytes write takes now.
func (b *sendBuf) space() int { return max(b.max-b.used(), 0) }

// write copies as much of p as fits and returns how much.
func (b *sendBuf) write(p []byte) int {
	n := min(len(p), b.space())
	if n == 0 {
		return 0
	}
	if need := b.used() + n; need > len(b.buf) {
		b.grow(need)
	}
	mask := uint64(len(b.buf) - 1)
	at := int(b.nxt & mask)
	c := copy(b.buf[at:], p[:n])
	copy(b.buf, p[c:n])
	b.nxt += uint64(n)
	return n
}

func (b *sendBuf) grow(need int) {
	size := max(len(b.buf), minSendBuf)
	for size < need {
		size *= 2
	}
	nb := make([]byte, size)
	if b.used() > 0 {
		x, y := b.slices(b.una, b.nxt)
		mask := uint64(size - 1)
		at := int(b.una & mask)
		c := copy(nb[at:], x)
		copy(nb, x[c:])
		at = int((b.una + uint64(len(x))) & mask)
		c = copy(nb[at:], y)
		copy(nb, y[c:])
	}
	b.buf = nb
}

// ackTo frees the bytes below dsn; it reports whether anything was freed.
func (b *sendBuf) ackTo(dsn uint64) bool {
	dsn = min(dsn, b.nxt)
	if dsn <= b.una {
		return false
	}
	b.una = dsn
	return true
}

// slices returns the bytes of DSNs [from, to) as at most two slices (the
// ring wraps). una <= from <= to <= nxt.
func (b *sendBuf) slices(from, to uint64) (x, y []byte) {
	if from >= to {
		return nil, nil
	}
	s := int(from & uint64(len(b.buf)-1))
	n := int(to - from)
	if s+n <= len(b.buf) {
		return b.buf[s : s+n], nil
	}
	return b.buf[s:], b.buf[:s+n-len(b.buf)]
}

// payload is a tcpip.Payloader over two slices, reused for every write.
type payload struct {
	x, y []byte
	sf   *subflow.Subflow // told of every byte gVisor copies (Subflow.Taken)
}

func (p *payload) Len() int { return len(p.x) + len(p.y) }

func (p *payload) Read(dst []byte) (int, error) {
	n := copy(dst, p.x)
	p.x = p.x[n:]
	if n < len(dst) {
		m := copy(dst[n:], p.y)
		p.y = p.y[m:]
		n += m
	}
	if n > 0 && p.sf != nil {
		p.sf.Taken(n)
	}
	return n, nil
}
