package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestPureAckRepeatsSndNxt: after gVisor retransmits an old segment, a pure
// ACK of ours must still carry the highest sequence number sent; an older
// one is outside the peer's window and the peer drops it (with any
// DATA_FIN on it).
func TestPureAckRepeatsSndNxt(t *testing.T) {
	s := &Subflow{}
	seg := func(seq, ack uint32) header.TCP {
		h := make(header.TCP, header.TCPMinimumSize)
		h.Encode(&header.TCPFields{SeqNum: seq, AckNum: ack, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 7})
		return h
	}
	s.noteLast(seg(1000, 50), 1100)
	s.noteLast(seg(500, 60), 600) // a retransmission, with a newer ACK
	require.Equal(t, uint32(1100), s.last.seq)
	require.Equal(t, uint32(60), s.last.ack)
	s.noteLast(seg(1100, 40), 1200) // an older ACK number never wins
	require.Equal(t, uint32(1200), s.last.seq)
	require.Equal(t, uint32(60), s.last.ack)
	s.noteLast(seg(0xfffffff0, 70), 0x10) // wraps around
	require.Equal(t, uint32(1200), s.last.seq, "0x10 is not after 1200")
	s2 := &Subflow{}
	s2.noteLast(seg(0xfffffff0, 1), 0xfffffffa)
	s2.noteLast(seg(0xfffffffa, 1), 0x20)
	require.Equal(t, uint32(0x20), s2.last.seq, "sequence space wraps")
}
