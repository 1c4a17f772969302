package stack

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/subflow"
)

// Read reads in-order data; io.EOF after the peer's DATA_FIN.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.mptcp {
		return c.tc.Read(b)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.rclosed {
			return 0, opError("read", c, net.ErrClosed)
		}
		if avail := len(c.rbuf) - c.rhead; avail > 0 {
			if len(b) == 0 {
				return 0, nil
			}
			wasFull := avail >= c.s.rcvBuf
			n := copy(b, c.rbuf[c.rhead:])
			c.rhead += n
			c.bytesRecv += uint64(n)
			if c.rhead == len(c.rbuf) {
				c.rbuf, c.rhead = c.rbuf[:0], 0
			}
			if wasFull {
				c.rcond.Broadcast() // the reader waits for room
			}
			return n, nil
		}
		if c.eof {
			return 0, io.EOF
		}
		if c.rerr != nil {
			return 0, opError("read", c, c.rerr)
		}
		if !c.rdeadline.IsZero() && !time.Now().Before(c.rdeadline) {
			return 0, opError("read", c, errTimeout)
		}
		c.rcond.Wait()
	}
}

// readLoop moves the subflow's bytes to the data level: each byte's DSN
// comes from the peer's mapping of its subflow offset.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	buf := make([]byte, 64<<10)
	var off uint64 // subflow offset of buf's next byte
	var pend pending
	for {
		c.rmu.Lock()
		for !c.rclosed && c.rerr == nil && len(c.rbuf)-c.rhead >= c.s.rcvBuf {
			c.rcond.Wait()
		}
		stop := c.rerr != nil
		c.rmu.Unlock()
		if stop {
			return
		}
		n, err := c.tc.Read(buf)
		if n > 0 {
			if perr := c.ingest(buf[:n], &off, &pend); perr != nil {
				c.fail(perr)
				c.ep.Abort()
				return
			}
			c.sf.AckIfStale()
		}
		if err != nil {
			c.subflowEnded(err)
			return
		}
	}
}

// pending collects one mapping's bytes until its DSS checksum is verified:
// with checksums, nothing of a mapping is delivered before that.
type pending struct {
	m    subflow.Mapping
	data []byte
	on   bool
}

func (c *Conn) ingest(b []byte, off *uint64, p *pending) error {
	for len(b) > 0 {
		m, ok := c.sf.MappingAt(*off)
		if !ok {
			return wrapf("%w: %d bytes at subflow offset %d have no DSS mapping", ErrProtocol, len(b), *off)
		}
		take := int(min(uint64(len(b)), m.Off+uint64(m.Len)-*off))
		if m.HasChecksum {
			if !p.on || p.m.Off != m.Off {
				if *off != m.Off {
					return wrapf("%w: checksummed mapping entered mid-way", ErrProtocol)
				}
				p.m, p.data, p.on = m, p.data[:0], true
			}
			p.data = append(p.data, b[:take]...)
			if len(p.data) == int(m.Len) {
				var sum option.Sum
				sum.Add(p.data)
				if !option.VerifyDSSChecksum(m.DSN, m.SSN, m.WireLen, sum.Value(), m.Checksum) {
					c.sf.CountChecksumFailure()
					return wrapf("%w (DSN %d, %d bytes)", ErrChecksum, m.DSN, m.Len)
				}
				c.deliver(m.DSN, p.data)
				p.on = false
			}
		} else {
			c.deliver(m.DSN+(*off-m.Off), b[:take])
		}
		*off += uint64(take)
		b = b[take:]
	}
	return nil
}

// deliver puts data with DSN dsn into the receive buffer. One subflow
// delivers in order; bytes the connection has already are dropped.
func (c *Conn) deliver(dsn uint64, data []byte) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	end := dsn + uint64(len(data))
	if end <= c.rcvNxt {
		return
	}
	if dsn < c.rcvNxt {
		data = data[c.rcvNxt-dsn:]
		dsn = c.rcvNxt
	}
	if dsn != c.rcvNxt {
		// A gap at the data level cannot happen on one subflow (TCP
		// delivers in order and mappings are contiguous); reordering
		// across subflows comes with MP_JOIN.
		c.rerr = wrapf("%w: data at DSN %d, expected %d", ErrProtocol, dsn, c.rcvNxt)
		c.rcond.Broadcast()
		return
	}
	if !c.rclosed {
		c.appendLocked(data)
	}
	c.rcvNxt = end
	c.checkFinLocked()
	c.meta.SetDataAck(c.dataAckLocked())
	c.rcond.Broadcast()
}

// appendLocked adds in-order data to the receive buffer. Bytes the
// application has read are dropped from the front once they are half of the
// buffer, so a reader that never quite catches up does not make it grow
// without bound.
func (c *Conn) appendLocked(data []byte) {
	if c.rhead > 0 && (c.rhead >= len(c.rbuf)/2 || len(c.rbuf)+len(data) > cap(c.rbuf)) {
		n := copy(c.rbuf, c.rbuf[c.rhead:])
		c.rbuf, c.rhead = c.rbuf[:n], 0
	}
	c.rbuf = append(c.rbuf, data...)
}

// checkFinLocked notices that the peer's DATA_FIN is next in sequence.
func (c *Conn) checkFinLocked() bool {
	if c.eof {
		return false
	}
	if fin, ok := c.meta.PeerFin(); ok && c.rcvNxt == fin {
		c.eof = true
		c.meta.SetDataAck(c.dataAckLocked())
		c.rcond.Broadcast()
		return true
	}
	return false
}

// dataAckLocked is what we acknowledge: every byte in order, and the
// DATA_FIN once reached (it occupies one DSN).
func (c *Conn) dataAckLocked() uint64 {
	if c.eof {
		return c.rcvNxt + 1
	}
	return c.rcvNxt
}

// subflowEnded handles the end of the subflow's byte stream: the peer's TCP
// FIN (normal after DATA_FIN) or an error such as a reset.
func (c *Conn) subflowEnded(err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.checkFinLocked()
	if c.eof || c.rclosed {
		c.rcond.Broadcast()
		return
	}
	if errors.Is(err, io.EOF) {
		err = wrapf("%w: subflow closed without DATA_FIN", io.ErrUnexpectedEOF)
	}
	if c.rerr == nil {
		c.rerr = err
	}
	c.rcond.Broadcast()
}

func (c *Conn) fail(err error) {
	c.rmu.Lock()
	if c.rerr == nil {
		c.rerr = err
	}
	c.rcond.Broadcast()
	c.rmu.Unlock()
}
