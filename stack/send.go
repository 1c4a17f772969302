package stack

import (
	"net"
)

// writeChunk bounds how much one mapping announcement covers.
const writeChunk = 256 << 10

// Write writes b; every byte gets the next DSN.
func (c *Conn) Write(b []byte) (int, error) {
	if !c.mptcp {
		n, err := c.tc.Write(b)
		c.wmu.Lock()
		c.bytesSent += uint64(n)
		c.wmu.Unlock()
		return n, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return 0, opError("write", c, net.ErrClosed)
	}
	total := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), writeChunk)]
		c.sf.WillWrite(c.sndNxt, len(chunk))
		n, err := c.tc.Write(chunk)
		c.sf.Wrote(len(chunk), n)
		c.sndNxt += uint64(n)
		c.bytesSent += uint64(n)
		total += n
		b = b[n:]
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// CloseWrite half-closes the connection: the peer reads EOF once it has
// every byte (DATA_FIN, RFC 8684 §3.3.3) and can still send.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return nil
	}
	c.wclosed = true
	if !c.mptcp {
		return c.tc.CloseWrite()
	}
	c.meta.SetDataFin(c.sndNxt)
	c.sf.SendDataFin()
	return nil
}
