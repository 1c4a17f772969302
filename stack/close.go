package stack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// lingerTimeout bounds a graceful close: waiting for the DATA_FIN
// exchange, then for the subflow's TCP FIN exchange. Past it the subflow is
// reset.
const lingerTimeout = 15 * time.Second

// Close closes the connection. Data written before Close is still
// delivered: Close sends DATA_FIN, and the subflow is closed (TCP FIN) in
// the background once both DATA_FINs are acknowledged, or after a timeout.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if !c.mptcp {
			c.tc.Close()
			go func() { // Done once the data and FIN are through
				waitClosed(c.ep, lingerTimeout)
				c.s.untrack(c)
				close(c.done)
			}()
			return
		}
		c.rmu.Lock()
		c.rclosed = true
		c.rbuf, c.rhead = nil, 0
		if c.rtimer != nil {
			c.rtimer.Stop()
		}
		c.rcond.Broadcast()
		c.rmu.Unlock()
		c.tc.SetWriteDeadline(time.Now()) // unblock a Write in progress
		c.CloseWrite()
		close(c.closing)
	})
	return nil
}

// controlLoop follows the data level: the peer's DATA_FIN arriving after
// all data, and the close of the subflow once the connection is closed at
// the data level in both directions (our DATA_FIN acknowledged, the peer's
// reached), as Linux does, or the application closed it and the peer did
// not answer within lingerTimeout.
func (c *Conn) controlLoop() {
	defer close(c.done)
	defer c.s.untrack(c)
	var deadline <-chan time.Time
	closing, readerDone := c.closing, c.readerDone
	for {
		select {
		case <-c.meta.Changed():
			c.rmu.Lock()
			reached := c.checkFinLocked()
			c.rmu.Unlock()
			if reached {
				c.sf.AckIfStale()
			}
		case <-closing:
			closing = nil
			deadline = time.After(lingerTimeout)
		case <-readerDone:
			readerDone = nil
		case <-deadline:
			c.finish(true)
			return
		}
		switch {
		case c.dataLevelClosed():
			// Both DATA_FINs are through: close the subflow with a TCP
			// FIN and wait for the peer's.
			c.tc.CloseWrite()
			if readerDone == nil {
				c.finish(false)
				return
			}
		case readerDone == nil && closing == nil:
			// The subflow ended (reset, or FIN without DATA_FIN) and the
			// application closed: nothing more can happen.
			c.finish(false)
			return
		}
	}
}

func (c *Conn) dataLevelClosed() bool {
	if !c.meta.DataFinAcked() {
		return false
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.eof
}

// finish releases the subflow: gracefully (the TCP FIN exchange is done or
// under way) or by reset.
func (c *Conn) finish(reset bool) {
	if reset {
		c.ep.Abort()
	} else {
		c.tc.CloseWrite()
	}
	select {
	case <-c.readerDone:
	case <-time.After(lingerTimeout):
		c.ep.Abort()
	}
	c.tc.Close()
	waitClosed(c.ep, lingerTimeout)
	c.sf.Close()
}

// waitClosed waits, at most limit, until gVisor has finished our side of
// the TCP close of ep: everything we sent, FIN included, is acknowledged
// (FIN-WAIT-2, TIME-WAIT or CLOSED). Closing the stack before then would
// reset the connection and lose data the peer has not read yet.
func waitClosed(ep tcpip.Endpoint, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		switch tcp.EndpointState(ep.State()) {
		case tcp.StateFinWait2, tcp.StateTimeWait, tcp.StateClose, tcp.StateError:
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// abort resets the connection at once (the stack is closing).
func (c *Conn) abort() {
	c.fail(errAborted)
	c.ep.Abort()
	c.tc.Close()
	if c.sf != nil {
		c.sf.Close()
	}
	c.closeOnce.Do(func() { close(c.closing) })
}

var errAborted = wrapf("connection aborted: stack closed")
