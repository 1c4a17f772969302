package stack

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReceiveBufferStaysBounded: a reader that consumes in small pieces
// and never empties the buffer does not make it grow without bound.
func TestReceiveBufferStaysBounded(t *testing.T) {
	c := &Conn{s: &Stack{rcvBuf: 1 << 20}}
	c.rcond.L = &c.rmu
	chunk := make([]byte, 64<<10)
	out := make([]byte, 48<<10)
	for i := 0; i < 4096; i++ { // 256 MiB through the buffer
		c.appendLocked(chunk)
		for len(c.rbuf)-c.rhead > 32<<10 {
			c.rhead += copy(out, c.rbuf[c.rhead:])
		}
	}
	require.LessOrEqual(t, cap(c.rbuf), 1<<20, "capacity %d", cap(c.rbuf))
}
