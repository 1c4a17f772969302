package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// hdr builds a TCP header; ws >= 0 adds a window scale option.
func hdr(seq, ack uint32, flags header.TCPFlags, wnd uint16, ws int) header.TCP {
	n := header.TCPMinimumSize
	if ws >= 0 {
		n += 4
	}
	h := header.TCP(make([]byte, n))
	h.Encode(&header.TCPFields{SeqNum: seq, AckNum: ack, DataOffset: uint8(n), Flags: flags, WindowSize: wnd})
	if ws >= 0 {
		copy(h[header.TCPMinimumSize:], []byte{header.TCPOptionNOP, header.TCPOptionWS, 3, byte(ws)})
	}
	return h
}

// wrap turns a possibly negative sequence number into its 32-bit form.
func wrap(x int64) uint32 { return uint32(x) }

const (
	syn    = header.TCPFlagSyn
	ack    = header.TCPFlagAck
	rst    = header.TCPFlagRst
	fin    = header.TCPFlagFin
	synAck = syn | ack
)

// established returns a client's view after the handshake: our ISS 1000,
// the peer's 5000, both scaling by 2^4, our window 1000<<4, the peer's
// 2000<<4.
func established(t *testing.T) *tcpView {
	var v tcpView
	v.noteOut(hdr(1000, 0, syn, 65535, 4), 0)
	_, ok := v.acceptable(hdr(5000, 1001, synAck, 65535, 4), 0, 4)
	require.True(t, ok, "SYN-ACK")
	v.noteOut(hdr(1001, 5001, ack, 1000, -1), 0)
	_, ok = v.acceptable(hdr(5001, 1001, ack, 2000, -1), 100, 4)
	require.True(t, ok, "first data")
	return &v
}

func TestTCPViewHandshake(t *testing.T) {
	var v tcpView
	v.noteOut(hdr(1000, 0, syn, 65535, 4), 0)
	for _, tc := range []struct {
		name string
		h    header.TCP
		why  Counter
	}{
		{"SYN-ACK acking the wrong number", hdr(5000, 7777, synAck, 1, 4), InvalidAckSequence},
		{"plain ACK before the SYN-ACK", hdr(5000, 1001, ack, 1, -1), InvalidAckSequence},
		{"RST without ACK", hdr(5000, 0, rst, 0, -1), InvalidAckSequence},
	} {
		why, ok := v.acceptable(tc.h, 0, 4)
		require.False(t, ok, tc.name)
		require.Equal(t, tc.why, why, tc.name)
	}
	_, ok := v.acceptable(hdr(5000, 1001, synAck, 65535, 4), 0, 4)
	require.True(t, ok)

	// A server: the third ACK must acknowledge our SYN-ACK exactly.
	var s tcpView
	_, ok = s.acceptable(hdr(9000, 0, syn, 65535, 7), 0, 7)
	require.True(t, ok, "SYN")
	s.noteOut(hdr(3000, 9001, synAck, 65535, 7), 0)
	why, ok := s.acceptable(hdr(9001, 4000, ack, 100, -1), 0, 7)
	require.False(t, ok)
	require.Equal(t, InvalidAckSequence, why)
	why, ok = s.acceptable(hdr(9000+1<<30, 3001, ack, 100, -1), 0, 7)
	require.False(t, ok)
	require.Equal(t, InvalidSequence, why)
	_, ok = s.acceptable(hdr(9001, 3001, ack, 100, -1), 0, 7)
	require.True(t, ok, "third ACK")
	why, ok = s.acceptable(hdr(9001, 0, syn, 65535, 7), 0, 7)
	require.False(t, ok, "a SYN on a synchronized subflow")
	require.Equal(t, InvalidSequence, why)
}

func TestTCPViewEstablished(t *testing.T) {
	// rcvWup 5101 after the data is acknowledged below; window 16000.
	for _, tc := range []struct {
		name string
		h    header.TCP
		n    int
		why  Counter // 0: acceptable
	}{
		{"next in-order segment", hdr(5101, 1001, ack, 2000, -1), 1000, 0},
		{"segment reaching the right edge", hdr(5101+16000, 1001, ack, 2000, -1), 10, 0},
		{"beyond the right edge", hdr(5101+16001, 1001, ack, 2000, -1), 10, InvalidSequence},
		{"far out of window", hdr(5101+1<<30, 1001, ack, 2000, -1), 0, InvalidSequence},
		{"old duplicate", hdr(4000, 1001, ack, 2000, -1), 100, InvalidSequence},
		{"partly old", hdr(5050, 1001, ack, 2000, -1), 100, 0},
		{"pure ACK at RCV.NXT", hdr(5101, 1001, ack, 2000, -1), 0, 0},
		{"ack of unsent data", hdr(5101, 1001+1<<30, ack, 2000, -1), 0, AckUnsentData},
		{"ack one past SND.NXT", hdr(5101, 1002, ack, 2000, -1), 0, AckUnsentData},
		{"ack older than the largest window (the SYN-ACK's 65535)", hdr(5101, wrap(1001-65535-1), ack, 2000, -1), 0, TooOldAck},
		{"ack old but within a window", hdr(5101, 1001-100, ack, 2000, -1), 0, 0},
		{"no ACK flag", hdr(5101, 0, 0, 2000, -1), 0, InvalidAckSequence},
		{"RST at RCV.WUP", hdr(5101, 0, rst, 0, -1), 0, 0},
		{"RST one past", hdr(5102, 0, rst, 0, -1), 0, InvalidRst},
		{"RST out of window", hdr(5101+1<<30, 0, rst|ack, 0, -1), 0, InvalidRst},
		{"RST before RCV.WUP", hdr(5100, 1001, rst|ack, 0, -1), 0, InvalidRst},
		{"FIN at RCV.NXT", hdr(5101, 1001, ack|fin, 2000, -1), 0, 0},
	} {
		v := established(t)
		v.noteOut(hdr(1001, 5101, ack, 1000, -1), 0)
		why, ok := v.acceptable(tc.h, tc.n, 4)
		require.Equal(t, tc.why == 0, ok, tc.name)
		require.Equal(t, tc.why, why, tc.name)
	}
}

func TestTCPViewRstExact(t *testing.T) {
	// RFC 5961: a RST counts only at RCV.NXT, which the view follows from
	// the segments gVisor gets, holes and all.
	rstAt := func(v *tcpView, seq uint32) bool {
		_, ok := v.acceptable(hdr(seq, 0, rst, 0, -1), 0, 4)
		return ok
	}
	data := func(v *tcpView, seq uint32, n int) {
		_, ok := v.acceptable(hdr(seq, 1001, ack, 2000, -1), n, 4)
		require.True(t, ok, "data at %d", seq)
	}
	v := established(t) // [5001, 5101) received, RCV.WUP 5001
	for seq, want := range map[uint32]bool{5000: false, 5001: false, 5050: false, 5101: true, 5102: false} {
		require.Equal(t, want, rstAt(v, seq), "RST at %d", seq)
	}
	data(v, 5201, 100) // out of order: a hole at [5101, 5201)
	require.True(t, rstAt(v, 5101))
	require.False(t, rstAt(v, 5301))
	data(v, 5101, 100) // the hole fills: RCV.NXT jumps past the queued range
	require.False(t, rstAt(v, 5201))
	require.True(t, rstAt(v, 5301))

	// More holes than the view follows: RCV.NXT is known only to lie
	// between the in-order point and the highest byte received ...
	for i := uint32(0); i < 6; i++ {
		data(v, 5401+200*i, 100)
	}
	require.False(t, rstAt(v, 5300))
	require.True(t, rstAt(v, 5301))
	require.True(t, rstAt(v, 6000))
	require.True(t, rstAt(v, 6501))
	require.False(t, rstAt(v, 6502))
	// ... until gVisor's own ACK says where it is, and nothing is missing.
	v.noteOut(hdr(1001, 6501, ack, 1000, -1), 0)
	require.False(t, rstAt(v, 6500))
	require.True(t, rstAt(v, 6501))
}

func TestTCPViewWraps(t *testing.T) {
	// Sequence numbers wrap: a view around 2^32 behaves the same.
	var v tcpView
	v.noteOut(hdr(^uint32(0)-10, 0, syn, 65535, 0), 0)
	_, ok := v.acceptable(hdr(^uint32(0)-5, ^uint32(0)-9, synAck, 65535, 0), 0, 0)
	require.True(t, ok)
	v.noteOut(hdr(^uint32(0)-9, ^uint32(0)-4, ack, 65535, -1), 2000)
	_, ok = v.acceptable(hdr(^uint32(0)-4, 100, ack, 65535, -1), 1000, 0)
	require.True(t, ok, "data across the wrap, acking across it")
	why, ok := v.acceptable(hdr(70000, 100, ack, 65535, -1), 10, 0)
	require.False(t, ok)
	require.Equal(t, InvalidSequence, why)
}
