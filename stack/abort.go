package stack

import (
	"fmt"
	"syscall"
	"time"

	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/subflow"
)

// Abort ends the connection at once, as a TCP reset ends a TCP connection
// (RFC 8684 §3.5). On an MPTCP connection every subflow is reset with a
// RST carrying MP_FASTCLOSE (with the peer's key) and MP_TCPRST
// ("unspecified", as Linux sends them when a socket is closed with unread
// data or with SO_LINGER {on, 0}); after fallback to TCP the one TCP
// connection is reset. No DATA_FIN or FIN is sent, data not yet
// acknowledged is lost and data not yet read is discarded. Pending and
// later Reads and Writes return an error that errors.Is ErrAborted; Close
// afterwards does nothing. Abort is idempotent; it returns nil.
func (c *Conn) Abort() error {
	if !c.mptcp {
		c.abortPlain()
		return nil
	}
	if c.resetErr(ErrAborted) {
		c.resetPaths(true, nil)
	}
	return nil
}

// abortPlain resets a plain TCP connection: gVisor's Abort sends the RST
// (the layer knows nothing of the tuple: a plain RST) and wakes a pending
// Read or Write, which then report ErrAborted (see plainError).
func (c *Conn) abortPlain() {
	c.rmu.Lock()
	if c.rerr == nil {
		c.rerr = ErrAborted
	}
	c.rmu.Unlock()
	c.abortOnce.Do(func() { close(c.aborted) })
	c.first.ep.Abort()
	c.closeOnce.Do(func() {
		c.first.tc.Close()
		c.s.untrack(c)
		close(c.done)
	})
}

// plainError is the error a Read or Write of a plain TCP connection
// returns: gVisor's, unless the connection was aborted with Abort.
func (c *Conn) plainError(op string, err error) error {
	if err == nil {
		return nil
	}
	c.rmu.Lock()
	aborted := c.rerr == ErrAborted
	c.rmu.Unlock()
	if aborted {
		return opError(op, c, ErrAborted)
	}
	return err
}

// isReset reports whether err ends the connection as a reset does: Read
// returns it at once, buffered data or not.
func isReset(err error) bool {
	_, proto := err.(*protocolResetError)
	return err == ErrAborted || err == ErrPeerFastclose || proto
}

// protocolResetError ends a connection whose peer broke the data-level
// rules in a way that leaves no consistent byte stream (a mapping beyond
// its DATA_FIN, two DATA_FINs): it wraps ErrProtocol and ECONNRESET.
type protocolResetError struct{ err error }

func (e *protocolResetError) Error() string { return e.err.Error() }
func (e *protocolResetError) Unwrap() error { return e.err }

// protocolReset ends the connection on a data-level protocol error, as
// Abort does (MP_FASTCLOSE on every subflow), so that the peer's
// application sees an error too: ending it quietly could leave one side
// with a clean EOF and the other with "all sent" while bytes were lost.
// The caller may hold a subflow's lock or the receive lock, so all of it
// runs on a goroutine of its own; Read checks the recorded error itself
// meanwhile (see protocolResetErr).
func (c *Conn) protocolReset(err error) {
	e := protocolResetErr(err)
	go func() {
		if c.resetErr(e) {
			c.resetPaths(true, nil)
		}
	}()
}

func protocolResetErr(err error) error {
	return &protocolResetError{fmt.Errorf("%w: %w; connection reset (%w)", ErrProtocol, err, syscall.ECONNRESET)}
}

// resetErr makes err the connection's error for readers and writers,
// replacing any other (a reset says what happened last and for good), and
// discards the data not yet read, as a TCP reset does. Only the first
// reset acts: it reports whether this was it.
func (c *Conn) resetErr(err error) bool {
	c.rmu.Lock()
	if isReset(c.rerr) {
		c.rmu.Unlock()
		return false
	}
	c.rerr = err
	if c.ring != nil {
		c.ring.Discard(c.ring.Buffered())
	}
	c.rcond.Broadcast()
	c.rmu.Unlock()
	c.wmu.Lock()
	c.werr = err
	c.wcond.Broadcast()
	c.wmu.Unlock()
	return true
}

// resetPaths resets and forgets every subflow and ends the connection's
// goroutines: no new subflow joins, the sender returns (Done is closed
// then), Close does nothing more. With fastclose (our Abort) each RST
// carries MP_FASTCLOSE: the subflow is marked before its endpoint is
// aborted, and gVisor writes the RST from inside Abort, so the option
// layer decorates it before the subflow is forgotten.
//
// spare, if not nil, is a subflow the peer has just reset (its RST is on
// its way into gVisor): it gets no RST of ours, which would only meet a
// closed socket. Its endpoint is aborted (silently) once gVisor took the
// peer's RST and its reader ended, or after sparedWait if gVisor
// refused that RST (not at the sequence number it expects; the RST gVisor
// then sends is plain, as the subflow saw the peer's RST).
func (c *Conn) resetPaths(fastclose bool, spare *subflow.Subflow) {
	c.pmu.Lock()
	c.pathsClosed = true // no new subflows
	c.pmu.Unlock()
	c.abortOnce.Do(func() { close(c.aborted) })
	c.closeOnce.Do(func() { close(c.closing) })
	c.eachPath(func(p *path) {
		if fastclose && p.sf != nil {
			p.sf.PrepareFastclose()
		}
		if spare != nil && p.sf == spare {
			select {
			case <-p.readerDone:
			case <-time.After(sparedWait):
			}
		}
		p.ep.Abort()
		p.tc.Close()
		if p.sf != nil {
			p.sf.Close()
		}
	})
}

// watchPeerFastclose has the option layer tell the connection when the
// peer aborts it with MP_FASTCLOSE.
func (c *Conn) watchPeerFastclose() { c.meta.OnPeerFastclose(c.peerFastclosed) }

// sparedWait bounds how long resetPaths waits for gVisor to take the
// peer's RST on the subflow that carried MP_FASTCLOSE.
const sparedWait = time.Second

// peerFastclosed runs on the goroutine delivering the peer's valid
// MP_FASTCLOSE, before gVisor sees that segment: the connection's error
// becomes ErrPeerFastclose at once (not the ECONNRESET of the subflow
// whose RST carried it), and the subflows are reset on another goroutine,
// which must not call gVisor from inside packet delivery. Our RSTs answer
// an MP_FASTCLOSE that came on an ACK (§3.5); the subflow whose RST
// carried it sends nothing, as Linux (which resets that subflow at once).
func (c *Conn) peerFastclosed(from *subflow.Subflow, onRST bool) {
	if !c.resetErr(ErrPeerFastclose) {
		return
	}
	if !onRST {
		from = nil
	}
	go c.resetPaths(false, from)
}

// resetReasons names the MP_TCPRST reasons of a subflow's resets, the
// peer's and ours ("" where none), for SubflowStats.
func resetReasons(sf *subflow.Subflow) (peer, ours string) {
	if r, ok := sf.PeerResetReason(); ok {
		peer = subflow.ResetReasonName(r)
	}
	if r, ok := sf.ResetReason(); ok {
		ours = subflow.ResetReasonName(r)
	}
	return peer, ours
}

// protocolResetReason is the MP_TCPRST reason of the subflow resets that
// end a connection on a protocol error (data without a mapping, a DSS
// checksum mismatch): Linux resets with "MPTCP-specific error" there.
const protocolResetReason = option.ReasonMPTCPError
