package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// rstSeg is a RST as gVisor's Abort sends it, with timestamps.
func rstSeg() header.TCP {
	ts := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, 10, 1, 2, 3, 4, 5, 6, 7, 8}
	h := make(header.TCP, header.TCPMinimumSize+len(ts))
	h.Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, SeqNum: 3, AckNum: 4, DataOffset: uint8(len(h)), Flags: header.TCPFlagRst | header.TCPFlagAck})
	copy(h[header.TCPMinimumSize:], ts)
	return h
}

func establishedForTest(reg *Registry) *Subflow {
	m := newMeta(0x1111, option.Token(0x1111), option.IDSN(0x1111))
	m.setRemoteKey(0x2222, option.IDSN(0x2222))
	s := newSubflow(reg, Tuple{}, Client, m)
	s.st = stateEstablished
	return s
}

// TestRstDecoration: gVisor's RST on an MPTCP subflow gets MP_TCPRST with
// the recorded reason, and MP_FASTCLOSE with the peer's key first when
// the connection is aborted; each is counted once per RST, without a heap
// allocation. Only the subflow's first RST is decorated. A fallen-back
// subflow's RST stays plain.
func TestRstDecoration(t *testing.T) {
	reg := NewRegistry(false)
	s := establishedForTest(reg)
	var buf [maxTCPOptions]byte
	out, runs := s.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, runs)
	var set option.Set
	require.NoError(t, option.ParseTCPOptions(out, &set))
	require.True(t, set.Has(option.SubtypeMPTCPRST))
	require.False(t, set.Has(option.SubtypeMPFastclose))
	require.Equal(t, uint8(option.ReasonUnspecified), set.TCPRST.Reason)
	require.EqualValues(t, 1, reg.MIB().Get(MPRstTx))
	r, ok := s.ResetReason()
	require.True(t, ok)
	require.Equal(t, uint8(option.ReasonUnspecified), r)

	// The RSTs that follow (gVisor answering segments still arriving
	// for the closed endpoint) are plain, as Linux's from no socket.
	out, _ = s.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, out, "a second RST on the subflow is plain")
	require.EqualValues(t, 1, reg.MIB().Get(MPRstTx))

	s = establishedForTest(reg)
	s.SetResetReason(option.ReasonTooMuchOutstanding)
	require.True(t, s.PrepareFastclose())
	out, _ = s.outbound(rstSeg(), 0, 0, buf[:0], nil)
	set = option.Set{}
	require.NoError(t, option.ParseTCPOptions(out, &set))
	require.True(t, set.Has(option.SubtypeMPFastclose))
	require.Equal(t, uint64(0x2222), set.MPFastclose.Key, "the receiver's key")
	require.True(t, set.Has(option.SubtypeMPTCPRST))
	require.Equal(t, uint8(option.ReasonTooMuchOutstanding), set.TCPRST.Reason)
	require.EqualValues(t, 2, reg.MIB().Get(MPRstTx))
	require.EqualValues(t, 1, reg.MIB().Get(MPFastcloseTx))
	hdr, trimmed := buildTCPHeader(nil, rstSeg(), out)
	require.False(t, trimmed, "timestamps, MP_FASTCLOSE and MP_TCPRST fit")
	require.LessOrEqual(t, len(hdr.Options()), maxTCPOptions)

	seg := rstSeg()
	allocs := testing.AllocsPerRun(100, func() {
		s.rst.sent = 0 // as if it were the subflow's first RST
		s.outbound(seg, 0, 0, buf[:0], nil)
	})
	require.Zero(t, allocs, "allocations per decorated RST")

	// After the peer's RST on a subflow while another lives, ours meet no
	// socket: plain, uncounted.
	pr := establishedForTest(reg)
	pr.meta.subflows.Store(2)
	sent := reg.MIB().Get(MPRstTx)
	pr.inbound(rstSeg(), 0, &option.Set{}, nil)
	out, _ = pr.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, out, "a RST after the peer's is plain")
	require.Equal(t, sent, reg.MIB().Get(MPRstTx))

	// After a RST on the connection's last subflow, which the peer may not
	// have sent (an in-window forgery), our next RST tells the peer that
	// the connection is gone: MP_FASTCLOSE, once (see Farewell).
	last := establishedForTest(reg)
	last.meta.subflows.Store(1)
	fcs := reg.MIB().Get(MPFastcloseTx)
	last.inbound(rstSeg(), 0, &option.Set{}, nil)
	out, _ = last.outbound(rstSeg(), 0, 0, buf[:0], nil)
	set = option.Set{}
	require.NoError(t, option.ParseTCPOptions(out, &set))
	require.True(t, set.Has(option.SubtypeMPFastclose), "the RST after the last subflow's")
	require.Equal(t, uint64(0x2222), set.MPFastclose.Key)
	require.Equal(t, fcs+1, reg.MIB().Get(MPFastcloseTx))
	out, _ = last.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, out, "only once")
	// Not when the peer's RST carried MP_FASTCLOSE itself: it knows.
	known := establishedForTest(reg)
	known.meta.subflows.Store(1)
	var withFC option.Set
	fc := option.MPFastclose{Key: 0x1111}
	require.NoError(t, option.ParseTCPOptions(fc.Append(nil), &withFC))
	known.inbound(rstSeg(), 0, &withFC, nil)
	out, _ = known.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, out, "a RST after the peer's MP_FASTCLOSE is plain")

	fb := establishedForTest(reg)
	fb.Fallback("test")
	require.False(t, fb.PrepareFastclose())
	out, _ = fb.outbound(rstSeg(), 0, 0, buf[:0], nil)
	require.Empty(t, out, "a fallen-back subflow's RST is plain")
}

// TestFastcloseIn: a wrong key is counted and ignored; the right one
// calls the hook once, with the subflow and the RST flag, whether the
// hook is registered before or after.
func TestFastcloseIn(t *testing.T) {
	reg := NewRegistry(false)
	s := establishedForTest(reg)
	calls := 0
	var from *Subflow
	var onRST bool
	s.meta.OnPeerFastclose(func(f *Subflow, r bool) { calls, from, onRST = calls+1, f, r })
	s.fastcloseIn(&option.MPFastclose{Key: 0x2222}, true) // the peer's own key: wrong
	require.EqualValues(t, 1, reg.MIB().Get(MPFastcloseBadKey))
	require.Zero(t, calls)
	require.False(t, s.meta.PeerFastclosed())
	s.fastcloseIn(&option.MPFastclose{Key: 0x1111}, true)
	s.fastcloseIn(&option.MPFastclose{Key: 0x1111}, false)
	require.Equal(t, 1, calls)
	require.Same(t, s, from)
	require.True(t, onRST)
	require.EqualValues(t, 2, reg.MIB().Get(MPFastcloseRx), "counted per option, as Linux")
	require.True(t, s.meta.PeerFastclosed())

	// Registered late: called at once.
	s2 := establishedForTest(reg)
	s2.fastcloseIn(&option.MPFastclose{Key: 0x1111}, false)
	late := 0
	s2.meta.OnPeerFastclose(func(*Subflow, bool) { late++ })
	require.Equal(t, 1, late)

	// Not MPTCP: ignored.
	s3 := establishedForTest(reg)
	s3.Fallback("test")
	s3.fastcloseIn(&option.MPFastclose{Key: 0x1111}, true)
	require.False(t, s3.meta.PeerFastclosed())

	require.Equal(t, "administratively prohibited", ResetReasonName(option.ReasonAdminProhibited))
	require.Equal(t, "reason 0x7f", ResetReasonName(0x7f))
}
