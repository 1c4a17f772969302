package stack

import (
	"errors"
	"fmt"
	"time"

	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Fallback after the handshake and MP_FAIL (RFC 8684 §3.7), at the
// connection level.
//
// What the application sees:
//   - A DSS checksum fails on one of several subflows (or on a connection
//     that ever had several): that subflow is reset with MP_FAIL; the
//     failed mapping is never delivered and the peer sends it again on
//     the other subflows (it was never DATA_ACKed). Reads and writes go
//     on, every byte intact. If no subflow is left, Read returns an error
//     wrapping ErrChecksum after the bytes before the failed mapping.
//   - A DSS checksum fails on the only subflow: MP_FAIL is sent and the
//     connection falls back to TCP once the peer's infinite mapping
//     arrives. The failed mapping's bytes are never delivered; a sender
//     that falls back does not send them again (Linux does not: it
//     delivered them itself, and its byte stream continues after them), so
//     Read returns every byte before the failed mapping and then an error
//     wrapping ErrChecksum. Writes go on, as plain TCP.
//   - We receive MP_FAIL (our data was changed on the way): we answer it,
//     send an infinite mapping and go on as plain TCP in both directions.
//     What we wrote is what we sent; a peer that delivers corrupted bytes
//     after MP_FAIL (Linux does, by design) gets them from the middlebox.
//   - MPTCP options stripped from data on the only subflow: fallback to
//     TCP, nothing lost. On one of several subflows: that subflow is reset.

// subflowFailed is a reader's error that ends its subflow only (it was
// reset with MP_FAIL); the connection goes on over the others.
type subflowFailed struct{ err error }

func (e *subflowFailed) Error() string { return e.err.Error() }
func (e *subflowFailed) Unwrap() error { return e.err }

// checksumFailed handles a mapping whose DSS checksum did not match. A nil
// result means the reader goes on past the mapping (whose bytes are
// dropped); otherwise the error ends the reader's subflow.
func (c *Conn) checksumFailed(sf *subflow.Subflow, m subflow.Mapping) error {
	c.pmu.Lock()
	sole := len(c.paths) == 1
	c.pmu.Unlock()
	err := fmt.Errorf("%w (DSN %d, %d bytes)", ErrChecksum, m.DSN, m.Len)
	if sf.ChecksumFailed(m, sole) == subflow.FailReset {
		return &subflowFailed{err}
	}
	c.rmu.Lock()
	if c.rerr == nil {
		c.rerr = &lostError{fmt.Errorf("%w: a middlebox changed the %d bytes at DSN %d; MPTCP fell back to TCP without them, so the byte stream ends before them", ErrChecksum, m.Len, m.DSN)}
	}
	c.discardLocked(m.DSN, int(m.Len))
	c.rcond.Broadcast()
	c.rmu.Unlock()
	return nil
}

// lostError ends the receive side of a connection that lost bytes in a
// fallback (see checksumFailed): what arrives afterwards is discarded.
type lostError struct{ err error }

func (e *lostError) Error() string { return e.err.Error() }
func (e *lostError) Unwrap() error { return e.err }

// discardLocked drops data arriving after the receive side lost bytes,
// and acknowledges it at the data level as consumed: Linux sends the
// infinite mapping that completes the fallback only with new data, which
// its data-level window (relative to our DATA_ACK, §3.3.4) would hold back
// behind the failed mapping forever. RFC 8684 asks that failed data not be
// DATA_ACKed, so that a sender may resend it; we have given up on it (the
// application got the error), so acknowledging it as discarded is what is
// true. It reports whether it dropped the data.
func (c *Conn) discardLocked(dsn uint64, n int) bool {
	if _, ok := c.rerr.(*lostError); !ok {
		return false
	}
	if end := dsn + uint64(n); end > c.meta.DataAck() {
		c.meta.SetDataAck(end)
	}
	return true
}

// readerFailed ends p after its reader hit err; it reports whether err
// concerned p only (see subflowFailed).
func (c *Conn) readerFailed(p *path, err error) bool {
	var sf *subflowFailed
	if !errors.As(err, &sf) {
		return false
	}
	p.ep.Abort()
	c.pathEnded(p, sf.err)
	return true
}

// fallbackEOF turns the end of a fallen-back subflow's stream at subflow
// offset off into the peer's DATA_FIN.
//
// TCP has only one FIN each way, so the peer's FIN is a half-close: the
// subflow still carries our data. The reader's subflow counts as ended
// (pathEnded) only once our side is through too: our FIN acknowledged
// (DATA_FIN acknowledged), the endpoint gone, or the connection aborted.
func (c *Conn) fallbackEOF(p *path, off uint64) {
	if p.sf == nil || !p.sf.FallbackFin(off) {
		return
	}
	c.rmu.Lock()
	c.checkFinLocked()
	c.rmu.Unlock()
	c.poke()
	t := time.NewTicker(fallbackPoll)
	defer t.Stop()
	for !c.meta.DataFinAcked() {
		switch tcp.EndpointState(p.ep.State()) {
		case tcp.StateClose, tcp.StateError, tcp.StateTimeWait:
			return
		}
		select {
		case <-t.C:
		case <-c.aborted:
			return
		case <-c.done:
			return
		}
	}
}

// fallbackPoll is how often a fallen-back subflow whose peer closed its
// side looks whether ours is closed too.
const fallbackPoll = 20 * time.Millisecond

// fellBack reports whether the connection fell back to TCP after the
// handshake, and why.
func (c *Conn) fellBack() (bool, string) {
	if !c.mptcp || c.first == nil || c.first.sf == nil || !c.first.sf.FellBack() {
		return false, ""
	}
	_, why := c.first.sf.MPTCP()
	return true, why
}

// pumpFallback is the sender of a connection that fell back: its only
// subflow takes the bytes in DSN order from where the subflow's stream
// stands (no mapping tells the peer otherwise), TCP's ACK is the
// DATA_ACK, and TCP's FIN the DATA_FIN. It reports false while the
// connection has not fallen back.
func (sn *sender) pumpFallback() bool {
	c := sn.c
	c.pmu.Lock()
	var p *path
	if len(c.paths) == 1 {
		p = c.paths[0]
	}
	c.pmu.Unlock()
	if p == nil || p.sf == nil {
		return false
	}
	next, ok := p.sf.FallbackNext()
	if !ok {
		return false
	}
	sn.reinject = sn.reinject[:0]
	sn.subflowBusy = false
	una := c.meta.SndUna()
	c.wmu.Lock()
	if c.sbuf.ackTo(una) {
		c.wcond.Broadcast()
	}
	nxt, wclosed := c.sbuf.nxt, c.wclosed
	c.wmu.Unlock()
	if p.ended.Load() || sn.fbFin {
		return true
	}
	if next < una || next > nxt {
		// Cannot happen while the sender writes in order; if it did,
		// the peer would misplace bytes: end the connection instead.
		c.fail(wrapf("%w: fallback to TCP at DSN %d outside the send buffer [%d, %d)", ErrProtocol, next, una, nxt))
		c.abortPaths()
		return true
	}
	for next < nxt {
		w, err := sn.writeTo(p, next, min(nxt-next, maxChunk))
		next += uint64(w)
		if w == 0 || err != nil {
			break
		}
	}
	sn.schedNxt = max(sn.schedNxt, next)
	if wclosed && next == nxt {
		sn.fbFin, sn.finSet = true, true
		c.meta.SetDataFin(nxt)
		p.tc.CloseWrite() // TCP's FIN is the DATA_FIN now
	}
	return true
}
