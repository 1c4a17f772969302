package stack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/umptcp/umptcp/internal/reasm"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Read reads in-order data; io.EOF after the peer's DATA_FIN.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.mptcp {
		n, err := c.first.tc.Read(b)
		return n, c.plainError("read", err)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.rclosed {
			return 0, opError("read", c, net.ErrClosed)
		}
		if isReset(c.rerr) { // Abort or MP_FASTCLOSE: unread data is gone
			return 0, opError("read", c, c.rerr)
		}
		if perr := c.meta.ProtocolErr(); perr != nil {
			// The reset is on its way (protocolReset): no more data,
			// and no EOF either.
			return 0, opError("read", c, protocolResetErr(perr))
		}
		if c.ring != nil && c.ring.Buffered() > 0 {
			if len(b) == 0 {
				return 0, nil
			}
			n := c.ring.Read(b)
			c.bytesRecv += uint64(n)
			c.rcond.Broadcast() // subflow readers may wait for room
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

// readLoop moves one subflow's bytes to the data level: each byte's DSN
// comes from the peer's mapping of its subflow offset. gVisor writes what
// it holds straight into the connection's ring (no intermediate buffer: an
// idle subflow holds no memory, and each byte is copied once less).
func (c *Conn) readLoop(p *path) {
	defer close(p.readerDone)
	w := &subflowReader{c: c, sf: p.sf}
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	p.wq.EventRegister(&we)
	defer p.wq.EventUnregister(&we)
	for {
		_, terr := p.ep.Read(w, tcpip.ReadOptions{})
		if w.err != nil {
			if w.err == errProtocolReset {
				// protocolReset resets every subflow, this one
				// included, with MP_FASTCLOSE.
				c.pathEnded(p, w.err)
				return
			}
			if c.readerFailed(p, w.err) {
				return
			}
			c.fail(w.err)
			c.abortPaths()
			c.pathEnded(p, w.err)
			return
		}
		if w.n > 0 {
			w.n = 0
			p.sf.AckIfStale()
		}
		if w.full {
			// Flow control: gVisor keeps the rest, its window closes,
			// and it goes on acknowledging what arrives.
			w.full = false
			c.waitRoom(w.fullAt)
			continue
		}
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			<-ready
		case *tcpip.ErrClosedForReceive:
			c.fallbackEOF(p, w.off)
			c.pathEnded(p, io.EOF)
			return
		default:
			c.pathEnded(p, subflowError(terr))
			return
		}
	}
}

// subflowReader is the io.Writer gVisor's endpoint reads into: it maps
// the bytes to DSNs and delivers them.
type subflowReader struct {
	c    *Conn
	sf   *subflow.Subflow
	off  uint64 // subflow offset of the next byte
	pend pending
	n    int   // bytes taken since the reader last looked
	err  error // a protocol error: the connection is done
	// full: the receive buffer had no room for the byte at DSN fullAt.
	full   bool
	fullAt uint64
}

func (r *subflowReader) Write(b []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	start := r.off
	if err := r.c.ingest(r.sf, b, &r.off, &r.pend); err != nil {
		n := int(r.off - start)
		r.n += n
		if full, ok := err.(errRingFull); ok {
			r.full, r.fullAt = true, full.dsn
			return n, err
		}
		r.err = err
		return 0, err
	}
	r.n += len(b)
	return len(b), nil
}

// subflowError turns a gVisor error into the one a reset or failed subflow
// reports, as package net would.
func subflowError(e tcpip.Error) error {
	switch e.(type) {
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	}
	return errors.New(e.String())
}

// pending collects one mapping's bytes until its DSS checksum is verified:
// with checksums, nothing of a mapping is delivered before that.
type pending struct {
	m    subflow.Mapping
	data []byte
	on   bool
	// ready is the verified tail of a mapping that did not fit in the
	// receive buffer yet (it aliases data); readyDSN is its DSN.
	ready    []byte
	readyDSN uint64
}

func (c *Conn) ingest(sf *subflow.Subflow, b []byte, off *uint64, p *pending) error {
	if len(p.ready) > 0 {
		n := c.deliver(p.readyDSN, p.ready)
		p.ready, p.readyDSN = p.ready[n:], p.readyDSN+uint64(n)
		if len(p.ready) > 0 {
			return errRingFull{p.readyDSN}
		}
	}
	for len(b) > 0 {
		m, ok := sf.MappingAt(*off)
		if !ok {
			return wrapf("%w: %d bytes at subflow offset %d have no DSS mapping", ErrProtocol, len(b), *off)
		}
		take := int(min(uint64(len(b)), m.Off+uint64(m.Len)-*off))
		if fin, ok := c.meta.PeerFin(); ok && m.DSN+(*off-m.Off)+uint64(take) > fin {
			// The option layer refuses mappings beyond an accepted
			// DATA_FIN; bytes that still get here (a fallback's
			// implicit mapping) cannot be both delivered and after
			// the end of the stream.
			err := wrapf("%w: %d bytes at DSN %d reach beyond the DATA_FIN at %d", ErrProtocol, take, m.DSN+(*off-m.Off), fin)
			c.meta.ProtocolError(err)
			return errProtocolReset
		}
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
					p.on = false
					if err := c.checksumFailed(sf, m); err != nil {
						return err
					}
				} else {
					p.on = false
					if n := c.deliver(m.DSN, p.data); n < len(p.data) {
						// Verified, but the ring is full: the rest
						// goes in first once the application reads.
						p.ready, p.readyDSN = p.data[n:], m.DSN+uint64(n)
						*off += uint64(take)
						return errRingFull{p.readyDSN}
					}
				}
			}
		} else if n := c.deliver(m.DSN+(*off-m.Off), b[:take]); n < take {
			*off += uint64(n)
			return errRingFull{m.DSN + (*off - m.Off)}
		}
		*off += uint64(take)
		b = b[take:]
	}
	return nil
}

// errRingFull stops a subflow's reader: the byte at dsn does not fit in
// the receive buffer until the application reads. The reader returns from
// gVisor's Read (which holds the endpoint's lock while it copies, so that
// waiting inside it would stop the endpoint's ACKs and make the peer time
// out) and waits for room outside.
type errRingFull struct{ dsn uint64 }

func (errRingFull) Error() string { return "umptcp: receive buffer full" }

// waitRoom waits until the byte at dsn fits in the receive buffer, or the
// connection is closed or failed.
func (c *Conn) waitRoom(dsn uint64) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for !c.rclosed && c.rerr == nil && c.ring != nil && dsn-c.meta.RemoteIDSN() >= c.ring.ReadPos()+uint64(c.ring.Cap()) {
		c.rcond.Wait()
	}
}

// deliver puts data with DSN dsn into the receive buffer, in its place
// among what other subflows delivered. Duplicates are dropped. Bytes
// beyond the buffer's window wait here, holding up this subflow's reader
// (so its TCP window closes), until the application reads.
func (c *Conn) deliver(dsn uint64, data []byte) int {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.discardLocked(dsn, len(data)) {
		return len(data)
	}
	if c.ring == nil {
		// The ring counts from the peer's IDSN: a 64-bit hash, which
		// absolute DSNs could wrap around.
		c.ring = reasm.New(c.s.rcvBuf, 1)
	}
	before := c.ring.Next()
	n := c.ring.Put(dsn-c.meta.RemoteIDSN(), data)
	if c.rclosed {
		c.ring.Discard(c.ring.Buffered())
	}
	if c.ring.Next() != before {
		c.checkFinLocked()
		c.meta.SetDataAck(c.dataAckLocked())
		c.rcond.Broadcast()
	}
	if c.rerr != nil || c.rclosed {
		return len(data) // nobody will read it
	}
	return n
}

// nextLocked is the next DSN expected in order.
func (c *Conn) nextLocked() uint64 {
	if c.ring == nil {
		return c.meta.RemoteIDSN() + 1
	}
	return c.meta.RemoteIDSN() + c.ring.Next()
}

// checkFinLocked notices that the peer's DATA_FIN is next in sequence.
// The stream ends only where the in-order point meets the DATA_FIN
// exactly: bytes at or beyond it (which the option layer and ingest
// refuse) would make it a protocol error, never a skipped EOF or an EOF
// with bytes acknowledged and thrown away.
func (c *Conn) checkFinLocked() bool {
	if c.eof {
		return false
	}
	fin, ok := c.meta.PeerFin()
	if !ok || c.meta.ProtocolErr() != nil {
		return false
	}
	switch next := c.nextLocked(); {
	case next == fin:
		c.eof = true
		c.meta.SetDataAck(c.dataAckLocked())
		c.rcond.Broadcast()
		return true
	case next > fin:
		c.meta.ProtocolError(fmt.Errorf("in-order data reached DSN %d, beyond the DATA_FIN at %d", next, fin))
	}
	return false
}

// dataAckLocked is what we acknowledge: every byte in order (delivered or
// in the ring), and the DATA_FIN once reached (it occupies one DSN).
func (c *Conn) dataAckLocked() uint64 {
	if c.eof {
		fin, _ := c.meta.PeerFin()
		return fin + 1
	}
	return c.nextLocked()
}

// errProtocolReset stops a subflow's reader on a protocol error that
// resets the whole connection (see protocolReset).
var errProtocolReset = errors.New("umptcp: protocol error: connection reset")

// pathEnded handles the end of a subflow's byte stream: the peer's TCP FIN
// (normal after DATA_FIN) or an error such as a reset. The connection
// carries on while another subflow lives; the sender sends the ended
// subflow's unacknowledged data again elsewhere.
func (c *Conn) pathEnded(p *path, err error) {
	p.endErr.Store(&err)
	perr := err
	if why := p.closeWhy.Load(); why != nil {
		perr = errors.New("umptcp: " + *why)
		if p.onPurpose.Load() {
			perr = fmt.Errorf("umptcp: %w: %s", pm.ErrClosedOnPurpose, *why)
		}
	} else if c.ending() {
		// Reset while the connection ends (a lingering FIN, the stack
		// closing): nothing for the path manager to repair.
		perr = fmt.Errorf("umptcp: %w: the connection is ending (%v)", pm.ErrClosedOnPurpose, err)
	}
	c.emit(p.event(pm.SubflowClosed, perr))
	c.pmu.Lock()
	p.ended.Store(true)
	live := 0
	for _, q := range c.paths {
		if !q.ended.Load() {
			live++
		}
	}
	c.pmu.Unlock()
	c.poke()
	if live > 0 {
		return
	}
	c.rmu.Lock()
	peerReset := isReset(c.rerr)
	c.rmu.Unlock()
	wasEnding := c.ending()
	c.pmu.Lock()
	c.pathsClosed = true // the connection is lost: no subflow is opened again for it
	c.pmu.Unlock()
	if !peerReset && !wasEnding {
		// The connection dies with its last subflow; a peer that did not
		// reset them itself must hear of it (subflow.Farewell).
		c.eachPath(func(p *path) {
			if p.sf != nil && p.sf.Farewell() {
				c.s.pmLog("connection lost with its last subflow: MP_FASTCLOSE to the peer on %s", p.sf.Tuple().Local)
			}
		})
	}
	c.rmu.Lock()
	c.checkFinLocked()
	if !c.eof && !c.rclosed {
		if isEOF(err) {
			err = wrapf("%w: subflow closed without DATA_FIN", io.ErrUnexpectedEOF)
		}
		if c.rerr == nil {
			c.rerr = err
		}
	}
	c.rcond.Broadcast()
	c.rmu.Unlock()
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = wrapf("connection lost: every subflow ended (%v)", err)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// fail ends the connection with err for readers and writers.
func (c *Conn) fail(err error) {
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.rmu.Lock()
	if c.rerr == nil {
		c.rerr = err
	}
	c.rcond.Broadcast()
	c.rmu.Unlock()
}
