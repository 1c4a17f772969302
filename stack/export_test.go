package stack

import (
	"fmt"

	"github.com/umptcp/umptcp/subflow"
)

func SetTestHookIngest(f func(c *Conn, sf *subflow.Subflow, m subflow.Mapping, off uint64, data []byte)) {
	testHookIngest = f
}

func (c *Conn) Meta() *subflow.Meta { return c.meta }

func (c *Conn) DebugState() string {
	sn := c.dbgSender
	c.wmu.Lock()
	una, nxt := c.sbuf.una, c.sbuf.nxt
	c.wmu.Unlock()
	s := fmt.Sprintf("una=%d nxt=%d schedNxt=%d reinject=%v fin=%v metaUna=%d views=%+v", una-c.meta.LocalIDSN(), nxt-c.meta.LocalIDSN(), sn.schedNxt-c.meta.LocalIDSN(), len(sn.reinject), sn.finSet, c.meta.SndUna()-c.meta.LocalIDSN(), sn.views)
	c.rmu.Lock()
	if c.ring != nil {
		s += fmt.Sprintf(" ring next=%d buffered=%d ooo=%d window=%d", c.ring.Next(), c.ring.Buffered(), c.ring.OutOfOrder(), c.ring.Window())
	}
	c.rmu.Unlock()
	for _, p := range c.paths {
		w, snt, a := p.sf.Progress()
		s += fmt.Sprintf("\n  path %d written=%d sent=%d acked=%d stale=%v ended=%v rtos=%d sent=%v", p.id, w, snt, a, p.stale, p.ended.Load(), p.rtoCount(), len(p.sent.r))
	}
	return s
}
