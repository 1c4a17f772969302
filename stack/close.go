package stack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// lingerTimeout bounds a graceful close: waiting for the DATA_FIN
// exchange, then for the subflows' TCP FIN exchanges. Past it the subflows
// are reset.
const lingerTimeout = 15 * time.Second

// tickInterval is how often the sender looks at its subflows even when
// nothing happened: stall detection, data-level retransmission.
const tickInterval = 50 * time.Millisecond

// Close closes the connection. Data written before Close is still
// delivered: Close sends DATA_FIN, and the subflows are closed (TCP FIN) in
// the background once both DATA_FINs are acknowledged, or after a timeout.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if !c.mptcp {
			c.first.tc.Close()
			go func() { // Done once the data and FIN are through
				waitClosed(c.first.ep, time.Now().Add(lingerTimeout))
				c.s.untrack(c)
				close(c.done)
			}()
			return
		}
		c.rmu.Lock()
		c.rclosed = true
		if c.ring != nil {
			c.ring.Discard(c.ring.Buffered())
		}
		if c.rtimer != nil {
			c.rtimer.Stop()
		}
		c.rcond.Broadcast()
		c.rmu.Unlock()
		c.SetWriteDeadline(time.Now()) // unblock a Write in progress
		c.CloseWrite()
		close(c.closing)
	})
	return nil
}

// run is the connection's sender and control goroutine. It hands data to
// the subflows (see sender), follows the data level (the peer's DATA_ACK
// and DATA_FIN), and closes the subflows once the connection is closed at
// the data level in both directions (our DATA_FIN acknowledged, the peer's
// reached), as Linux does, or the application closed it and the peer did
// not answer within lingerTimeout.
func (c *Conn) run() {
	defer close(c.done)
	defer c.stopPM(nil)
	defer c.s.untrack(c)
	defer c.s.unbindMeta(c.meta)
	sn := newSender(c)
	// The tick runs only while there is something to watch (data or a
	// DATA_FIN not yet acknowledged, a close in progress): an idle
	// connection costs no CPU.
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	tickC := tick.C
	var deadline <-chan time.Time
	// silent fires when a busy subflow may have gone silent (see
	// sender.checkSilent), which can come sooner than the next tick.
	silent := time.NewTimer(time.Hour)
	silent.Stop()
	defer silent.Stop()
	var silentAt time.Time
	closing := c.closing
	subflowsClosing := false
	var closedAt time.Time
	for {
		select {
		case <-c.wake:
		case <-c.meta.Changed():
		case <-tickC:
		case <-silent.C:
			silentAt = time.Time{}
		case <-closing:
			closing = nil
			deadline = time.After(lingerTimeout)
		case <-c.aborted:
			return
		case <-deadline:
			c.finish(true)
			return
		}
		c.rmu.Lock()
		reached := c.checkFinLocked()
		c.rmu.Unlock()
		if reached {
			c.eachPath(func(p *path) { p.sf.AckIfStale() })
		}
		sn.pump()
		if at := sn.silentCheck; !at.Equal(silentAt) {
			silentAt = at
			if at.IsZero() {
				silent.Stop()
			} else {
				silent.Reset(time.Until(at))
			}
		}
		switch watch := !sn.idle() || closing == nil; {
		case watch && tickC == nil:
			tick.Reset(tickInterval)
			tickC = tick.C
		case !watch && tickC != nil:
			tick.Stop()
			tickC = nil
		}
		live := c.livePaths()
		switch {
		case c.dataLevelClosed():
			// Both DATA_FINs are through: close the subflows with a TCP
			// FIN and wait for the peer's. A stale subflow would only
			// hold the close up: it is reset.
			if !subflowsClosing {
				subflowsClosing = true
				closedAt = time.Now()
				c.eachPath(func(p *path) {
					if p.isStale.Load() {
						p.ep.Abort()
					} else {
						p.tc.CloseWrite()
					}
				})
			}
			if time.Since(closedAt) > finGrace {
				// A subflow that could not deliver our FIN by now is
				// dead (a cut path): reset it rather than hold the close.
				c.eachPath(func(p *path) {
					if !p.ended.Load() && !finAcked(p.ep) {
						p.ep.Abort()
					}
				})
			}
			if live == 0 {
				c.finish(false)
				return
			}
		case live == 0 && closing == nil:
			// Every subflow ended (reset, or FIN without DATA_FIN) and
			// the application closed: nothing more can happen.
			c.finish(false)
			return
		}
	}
}

func (c *Conn) eachPath(f func(p *path)) {
	c.pmu.Lock()
	paths := append([]*path(nil), c.paths...)
	c.pmu.Unlock()
	for _, p := range paths {
		f(p)
	}
}

// livePaths counts the subflows whose reader still runs.
func (c *Conn) livePaths() int {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	n := 0
	for _, p := range c.paths {
		if !p.ended.Load() {
			n++
		}
	}
	return n
}

// ending reports whether the connection is closing its subflows: both
// DATA_FINs are through, or it stopped taking subflows (finish, abort).
func (c *Conn) ending() bool {
	c.pmu.Lock()
	closed := c.pathsClosed
	c.pmu.Unlock()
	return closed || c.dataLevelClosed()
}

func (c *Conn) dataLevelClosed() bool {
	if !c.meta.DataFinAcked() {
		return false
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.eof
}

// finish releases the subflows: gracefully (the TCP FIN exchanges are done
// or under way) or by reset.
func (c *Conn) finish(reset bool) {
	c.closePaths()
	deadline := time.Now().Add(lingerTimeout)
	c.eachPath(func(p *path) {
		if reset {
			p.ep.Abort()
		} else {
			p.tc.CloseWrite()
		}
	})
	c.eachPath(func(p *path) {
		select {
		case <-p.readerDone:
		case <-time.After(time.Until(deadline)):
			p.ep.Abort()
		}
	})
	// A reader may still wait in deliver for room that will never come.
	c.fail(errClosed)
	c.eachPath(func(p *path) {
		p.tc.Close()
		waitClosed(p.ep, deadline)
		p.wq.EventUnregister(&p.wake)
		p.sf.Close()
	})
}

// closePaths stops new subflows from joining.
func (c *Conn) closePaths() {
	c.pmu.Lock()
	c.pathsClosed = true
	c.pmu.Unlock()
}

// abortPaths resets every subflow (a protocol error ends the connection).
func (c *Conn) abortPaths() {
	c.eachPath(func(p *path) {
		if p.sf != nil {
			p.sf.SetResetReason(protocolResetReason) // carried by the RST (MP_TCPRST)
		}
		p.ep.Abort()
	})
}

// finGrace is how long, after both DATA_FINs, a subflow may take to have
// its FIN acknowledged before it is reset.
const finGrace = 3 * time.Second

// finAcked reports whether gVisor has everything we sent on ep, FIN
// included, acknowledged (or the endpoint is gone).
func finAcked(ep tcpip.Endpoint) bool {
	switch tcp.EndpointState(ep.State()) {
	case tcp.StateFinWait2, tcp.StateTimeWait, tcp.StateClose, tcp.StateError:
		return true
	}
	return false
}

// waitClosed waits, at most until deadline, until gVisor has finished our
// side of the TCP close of ep: everything we sent, FIN included, is
// acknowledged (FIN-WAIT-2, TIME-WAIT or CLOSED). Closing the stack before
// then would reset the connection and lose data the peer has not read yet.
func waitClosed(ep tcpip.Endpoint, deadline time.Time) {
	for time.Now().Before(deadline) && !finAcked(ep) {
		time.Sleep(5 * time.Millisecond)
	}
}

// abort resets the connection at once (the stack is closing).
func (c *Conn) abort() {
	c.closePaths()
	c.fail(errAborted)
	c.abortOnce.Do(func() { close(c.aborted) })
	c.eachPath(func(p *path) {
		p.ep.Abort()
		p.tc.Close()
		if p.sf != nil {
			p.sf.Close()
		}
	})
	c.closeOnce.Do(func() {
		close(c.closing)
		if !c.mptcp {
			c.s.untrack(c)
			close(c.done)
		}
	})
}

var errAborted = wrapf("connection aborted: stack closed")

var errClosed = wrapf("connection closed")
