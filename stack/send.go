package stack

import (
	"fmt"
	"net"
	"time"

	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Write copies b into the connection's send buffer; it blocks while the
// buffer is full. Every byte gets the next DSN.
func (c *Conn) Write(b []byte) (int, error) {
	if !c.mptcp {
		n, err := c.first.tc.Write(b)
		c.wmu.Lock()
		c.bytesSent += uint64(n)
		c.wmu.Unlock()
		return n, c.plainError("write", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for len(b) > 0 {
		switch {
		case c.wclosed:
			return total, opError("write", c, net.ErrClosed)
		case c.werr != nil:
			return total, opError("write", c, c.werr)
		}
		if n := c.sbuf.write(b); n > 0 {
			total += n
			c.bytesSent += uint64(n)
			b = b[n:]
			c.poke()
			continue
		}
		if !c.wdeadline.IsZero() && !time.Now().Before(c.wdeadline) {
			return total, opError("write", c, errTimeout)
		}
		c.wcond.Wait()
	}
	return total, nil
}

// CloseWrite half-closes the connection: the peer reads EOF once it has
// every byte (DATA_FIN, RFC 8684 §3.3.3) and can still send.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	if c.wclosed {
		c.wmu.Unlock()
		return nil
	}
	c.wclosed = true
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if !c.mptcp {
		return c.first.tc.CloseWrite()
	}
	c.poke() // the sender announces DATA_FIN once every byte is on a subflow
	return nil
}

// maxChunk bounds one write into a subflow endpoint, so that the scheduler
// decides again at least this often.
const maxChunk = 64 << 10

// staleRTOs is how many retransmission timeouts in a row, without the
// peer acknowledging anything, make a subflow stale: its unacknowledged
// data is sent again on the others and it gets no new data until it makes
// progress again (Linux's stale_loss_cnt, default 4, is the same idea).
const staleRTOs = 2

// Data-level retransmission: if the DATA_ACK does not move for this long
// while data is outstanding, the oldest unacknowledged bytes are sent again
// on the best subflow (the peer may have dropped them at the data level).
const (
	minDataRTO    = time.Second
	maxDataRTO    = 30 * time.Second
	dataRTOAmount = 256 << 10
)

// sender is the state of the connection's sender goroutine.
type sender struct {
	c        *Conn
	schedNxt uint64     // next new DSN to hand to a subflow
	reinject []dsnRange // DSNs to send again, oldest first
	finSet   bool       // our DATA_FIN is set
	fbFin    bool       // fell back: TCP's FIN sent as the DATA_FIN (fallback.go)

	subflowBusy bool      // at the last pump a subflow held bytes its peer had not acknowledged
	silentCheck time.Time // when a subflow may turn silent (checkSilent); zero: none

	lastUna  uint64
	unaSince time.Time
	dataRTO  time.Duration

	pl     payload
	paths  []*path
	usable []*path
	views  []scheduler.Path
}

func newSender(c *Conn) *sender {
	start := c.meta.LocalIDSN() + 1
	return &sender{c: c, schedNxt: start, lastUna: start, unaSince: time.Now(), dataRTO: minDataRTO}
}

// pump hands as much data to the subflows as they take now: reinjections
// first, then new data as the scheduler decides, then the DATA_FIN.
func (sn *sender) pump() {
	if sn.pumpFallback() {
		return
	}
	c := sn.c
	now := time.Now()
	una := c.meta.SndUna()
	c.wmu.Lock()
	if c.sbuf.ackTo(una) {
		c.wcond.Broadcast()
	}
	nxt := c.sbuf.nxt
	wclosed := c.wclosed
	sched := c.sched
	c.wmu.Unlock()

	c.pmu.Lock()
	sn.paths = append(sn.paths[:0], c.paths...)
	c.pmu.Unlock()
	sn.usable, sn.views = sn.usable[:0], sn.views[:0]
	sn.subflowBusy = false
	haveRegular := false
	for _, p := range sn.paths {
		p.sent.trim(una)
		if p.ended.Load() {
			if !p.retired {
				p.retired = true
				sn.reinject = p.sent.take(sn.reinject)
				if e := p.endErr.Load(); e != nil && isEOF(*e) {
					p.tc.CloseWrite() // the peer closed this subflow: so do we
				}
			}
			continue
		}
		select {
		case <-p.sf.Ready():
		default:
			continue
		}
		if failed, _ := p.sf.Failed(); failed {
			continue
		}
		if sn.finSet && !p.finSent {
			p.finSent = true
			p.sf.SendDataFin()
		}
		view, written, acked := p.state()
		if written != acked {
			sn.subflowBusy = true
		}
		if sn.checkStale(p, una, written, acked, now) {
			continue
		}
		if !view.Backup {
			haveRegular = true
		}
		sn.usable = append(sn.usable, p)
		sn.views = append(sn.views, view)
	}
	sn.checkDataRTO(una, now)
	sn.checkSilent(una, now)
	sn.resetDead(now)

	// Nothing goes beyond the peer's data-level receive window.
	limit := min(nxt, max(c.meta.SndWndEnd(), una))
	if len(sn.usable) > 0 {
		sn.sendReinjections(una, limit, sched)
		if d, ok := sched.(scheduler.Duplicating); ok && d.Duplicates() {
			sn.sendRedundant(una, limit, haveRegular)
		} else {
			sn.sendNew(limit, sched)
		}
	}
	if wclosed && !sn.finSet && sn.schedNxt == nxt && len(sn.reinject) == 0 {
		sn.finSet = true
		c.meta.SetDataFin(nxt)
		for _, p := range sn.usable {
			p.finSent = true
			p.sf.SendDataFin()
		}
	}
}

// idle reports whether nothing is outstanding: every byte written and the
// DATA_FIN (if sent) acknowledged, nothing queued to send again, and no
// subflow holding unacknowledged bytes (a dead one must still be found
// stale even when other subflows delivered its data).
func (sn *sender) idle() bool {
	c := sn.c
	una := c.meta.SndUna()
	c.wmu.Lock()
	nxt := c.sbuf.nxt
	c.wmu.Unlock()
	return una >= nxt && len(sn.reinject) == 0 && (!sn.finSet || c.meta.DataFinAcked()) && !sn.subflowBusy
}

// checkStale follows a subflow's progress; it reports whether the subflow
// is stale (see staleRTOs). At the first retransmission timeout since the
// subflow last made progress, everything it holds that the peer has not
// acknowledged at the data level goes out again on the others: a path that
// times out has often failed (a handover), its bytes are the holes that
// hold up the peer's reassembly, and waiting for the stale verdict would
// stall the connection for two more timeouts. If the subflow was only
// slow, the peer drops the duplicates.
func (sn *sender) checkStale(p *path, una, written, acked uint64, now time.Time) bool {
	if rtos := p.rtoCount(); rtos != p.seenRTOs {
		p.seenRTOs = rtos
		if !p.rtoReinjected {
			// Taken, not copied: the ranges now belong to the
			// reinjection queue, so the stale verdict does not queue
			// them a second time.
			p.rtoReinjected = true
			sn.reinject = p.sent.take(sn.reinject)
		}
	}
	if acked > p.progAcked || written == acked || p.zeroWnd {
		p.goodAt = now
		p.progAcked = acked
		p.progRTOs = p.rtoCount()
		p.rtoReinjected = false
		if p.stale {
			p.stale = false
			p.isStale.Store(false)
			sn.c.s.reg.MIB().Inc(subflow.SubflowRecover)
		}
		return false
	}
	if !p.stale && p.rtoCount() >= p.progRTOs+staleRTOs {
		p.stale = true
		p.staleSince = now
		p.isStale.Store(true)
		sn.reinject = p.sent.take(sn.reinject)
		sn.c.s.reg.MIB().Inc(subflow.SubflowStale)
	}
	return p.stale
}

// checkSilent sends again, on the other subflows, what a silent subflow
// holds, when it holds the byte the peer waits for (the DATA_ACK's): that
// subflow has had nothing acknowledged for a few of its round trips
// (silentAfter) while another subflow had bytes acknowledged, or nothing
// outstanding, since. That is a path that died (a handover), seen before
// its retransmission timer fires (≥ 200 ms): the peer's reassembly is
// blocked on that subflow's bytes while another path works. Once per
// silence, as for a timeout (rtoReinjected); if the path was only slow, the
// peer drops the duplicates. Linux waits for the timeout.
func (sn *sender) checkSilent(una uint64, now time.Time) {
	sn.silentCheck = time.Time{}
	if len(sn.usable) < 2 || una >= sn.schedNxt {
		return
	}
	for i, p := range sn.usable {
		if p.rtoReinjected || sn.views[i].InFlight == 0 {
			continue
		}
		after := silentAfter(sn.views[i])
		if at := p.goodAt.Add(after); now.Before(at) {
			// Look again then, not at the next tick: the pump may not
			// run in between (the DATA_ACK is stuck).
			if sn.silentCheck.IsZero() || at.Before(sn.silentCheck) {
				sn.silentCheck = at
			}
			continue
		}
		if len(p.sent.r) == 0 || p.sent.r[0].start > una {
			continue
		}
		for _, q := range sn.usable {
			if q != p && q.goodAt.After(p.goodAt.Add(after)) {
				p.rtoReinjected = true
				sn.reinject = p.sent.take(sn.reinject)
				sn.c.s.reg.MIB().Inc(subflow.SubflowSilentReinject)
				break
			}
		}
	}
}

// silentAfter is how long a subflow with bytes in flight may go without an
// acknowledgement before its bytes go out on another path. A working path
// with a queue still returns ACKs at its bottleneck's pace; the longest
// normal silence is about one round trip (the first ACK after an idle
// moment), so twice the smoothed RTT, or the RTT and four variations if
// larger (the RTO's formula without its 200 ms floor), and at least
// minSilent.
func silentAfter(v scheduler.Path) time.Duration {
	return max(2*v.RTT, v.RTT+4*v.RTTVar, minSilent)
}

// minSilent bounds silentAfter from below: shorter silences are normal
// jitter on a busy host.
const minSilent = 60 * time.Millisecond

// resetDead resets the subflows that have been stale for longer than the
// stack's SubflowTimeout while another subflow works: their path failed.
// The path manager learns it (SubflowClosed) and opens the subflow again
// once the path is back. The last working subflow is never reset: a lone
// path that comes back recovers by itself, as TCP does.
func (sn *sender) resetDead(now time.Time) {
	timeout := sn.c.s.sfTimeout
	if timeout < 0 || len(sn.usable) == 0 {
		return
	}
	for _, p := range sn.paths {
		if p.stale && !p.ended.Load() && now.Sub(p.staleSince) > timeout && p.closeWhy.Load() == nil {
			why := fmt.Sprintf("no progress for %v (path failed)", timeout)
			p.closeWhy.Store(&why)
			p.sf.SetResetReason(option.ReasonUnacceptablePerformance)
			p.ep.Abort()
		}
	}
}

// checkDataRTO queues the oldest outstanding bytes for another send when
// the DATA_ACK has not moved for a data-level RTO.
func (sn *sender) checkDataRTO(una uint64, now time.Time) {
	if una != sn.lastUna || una >= sn.schedNxt {
		sn.lastUna, sn.unaSince, sn.dataRTO = una, now, minDataRTO
		return
	}
	if now.Sub(sn.unaSince) < sn.dataRTO {
		return
	}
	sn.reinject = append(sn.reinject, dsnRange{una, min(sn.schedNxt, una+dataRTOAmount)})
	sn.unaSince = now
	sn.dataRTO = min(2*sn.dataRTO, maxDataRTO)
}

// sendReinjections sends queued ranges again on the subflows the
// scheduler picks (stale and ended subflows are not among them).
func (sn *sender) sendReinjections(una, limit uint64, sched scheduler.Scheduler) {
	for len(sn.reinject) > 0 {
		r := &sn.reinject[0]
		r.start = max(r.start, una)
		r.end = min(r.end, sn.schedNxt)
		if r.start >= r.end {
			sn.reinject = sn.reinject[1:]
			continue
		}
		if r.start >= limit {
			return // beyond the peer's window for now
		}
		n := int(r.end - r.start)
		i := sched.Pick(sn.views, n)
		if i < 0 || i >= len(sn.views) || sn.views[i].Room <= 0 {
			return
		}
		w := sn.write(i, r.start, min(n, int(limit-r.start), sn.views[i].Room, maxChunk))
		if w == 0 {
			continue
		}
		r.start += uint64(w)
		sn.c.pmu.Lock()
		sn.c.reinjected += uint64(w)
		sn.c.pmu.Unlock()
	}
	if len(sn.reinject) == 0 {
		sn.reinject = sn.reinject[:0:0] // let a large backing array go
	}
}

// sendNew hands new bytes below nxt to the subflows the scheduler picks.
func (sn *sender) sendNew(nxt uint64, sched scheduler.Scheduler) {
	for sn.schedNxt < nxt {
		pending := int(min(nxt-sn.schedNxt, 1<<30))
		i := sched.Pick(sn.views, pending)
		if i < 0 || i >= len(sn.views) || sn.views[i].Room <= 0 {
			return
		}
		w := sn.write(i, sn.schedNxt, min(pending, sn.views[i].Room, maxChunk))
		sn.schedNxt += uint64(w)
	}
}

// sendRedundant lets every subflow send, from its own position, everything
// the peer has not acknowledged: backup subflows only when no other one is
// usable.
func (sn *sender) sendRedundant(una, nxt uint64, haveRegular bool) {
	for i, p := range sn.usable {
		if haveRegular && sn.views[i].Backup {
			continue
		}
		p.redNxt = max(p.redNxt, una)
		for p.redNxt < nxt && sn.views[i].Room > 0 {
			w := sn.write(i, p.redNxt, int(min(nxt-p.redNxt, uint64(sn.views[i].Room), maxChunk)))
			if w == 0 {
				break
			}
			p.redNxt += uint64(w)
		}
		sn.schedNxt = max(sn.schedNxt, p.redNxt)
	}
}

// write hands DSNs [dsn, dsn+n) to usable subflow i and returns how many
// bytes its endpoint took. A subflow that takes nothing gets no more this
// round.
func (sn *sender) write(i int, dsn uint64, n int) int {
	p := sn.usable[i]
	w, err := sn.writeTo(p, dsn, uint64(n))
	if w > 0 {
		p.sent.add(dsn, dsn+uint64(w))
	}
	v := &sn.views[i]
	v.Room -= int(w)
	v.Queued += int(w)
	if w == 0 || err != nil {
		v.Room = 0
	}
	return int(w)
}

// writeTo hands the send buffer's bytes [dsn, dsn+n) to p's endpoint, with
// their mapping, and returns how many it took.
func (sn *sender) writeTo(p *path, dsn, n uint64) (int64, tcpip.Error) {
	c := sn.c
	c.wmu.Lock()
	x, y := c.sbuf.slices(dsn, dsn+n)
	c.wmu.Unlock()
	// The bytes stay put while we copy: only this goroutine frees them,
	// and the application writes only outside [una, nxt).
	sn.pl = payload{x: x, y: y, sf: p.sf}
	p.sf.WillWrite(dsn)
	w, err := p.ep.Write(&sn.pl, tcpip.WriteOptions{})
	p.sf.Wrote(int(w))
	sn.pl = payload{}
	return w, err
}
