package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTCPOptionsKernelSYN(t *testing.T) {
	// Linux 6.18 SYN: MSS, SACK-perm, TS, NOP, WS, MP_CAPABLE.
	opts := h(t, "020405b4 0402080a9f9b1c5300000000 0103030a 1e040101")
	var s Set
	require.NoError(t, ParseTCPOptions(opts, &s))
	require.Equal(t, uint16(1<<SubtypeMPCapable), s.Present)
	require.True(t, s.Has(SubtypeMPCapable))
	require.False(t, s.Has(SubtypeDSS))
	require.Equal(t, MPCapable{Version: 1, Flags: FlagHMACSHA256, Form: MPCSyn}, s.MPCapable)
	require.Zero(t, testing.AllocsPerRun(100, func() {
		s.Reset()
		_ = ParseTCPOptions(opts, &s)
	}))
	s.Reset()
	require.Equal(t, Set{}, s)
}

func TestParseTCPOptionsMultiple(t *testing.T) {
	// Linux 6.18 fast close: MP_FASTCLOSE + MP_TCPRST in one RST.
	var s Set
	require.NoError(t, ParseTCPOptions(h(t, "1e0c70000123456789abcdef1e048000"), &s))
	require.Equal(t, uint16(1<<SubtypeMPFastclose|1<<SubtypeMPTCPRST), s.Present)
	require.Equal(t, uint64(0x0123456789abcdef), s.MPFastclose.Key)

	// DSS then MP_PRIO, with padding, EOL ends the walk (garbage after).
	s.Reset()
	require.NoError(t, ParseTCPOptions(h(t, "1e0c2003570762cd38be9846 1e0351 00 ffff"), &s))
	require.True(t, s.Has(SubtypeDSS))
	require.True(t, s.Has(SubtypeMPPrio))
	require.True(t, s.MPPrio.Backup)

	// Every subtype in one (over-long, but the parser doesn't care) area.
	var all []byte
	for _, o := range []encoder{
		&MPCapable{Version: 1, Form: MPCSyn}, &MPJoin{Form: JoinSyn}, &DSS{HasDataAck: true},
		&AddAddr{Echo: true, Addr: netipV4()}, &RemoveAddr{N: 1}, &MPPrio{}, &MPFail{}, &MPFastclose{}, &TCPRST{},
	} {
		all = o.Append(all)
	}
	s.Reset()
	require.NoError(t, ParseTCPOptions(all, &s))
	require.Equal(t, uint16(0x1ff), s.Present)
	for st := SubtypeMPCapable; st <= SubtypeMPTCPRST; st++ {
		require.True(t, s.Has(st), st.String())
	}
	require.False(t, s.Has(15))
	require.False(t, s.Has(200))
}

func TestParseTCPOptionsLastWins(t *testing.T) {
	var s Set
	require.NoError(t, ParseTCPOptions(h(t, "1e0351 1e0350"), &s))
	require.False(t, s.MPPrio.Backup)
}

func TestParseTCPOptionsSkips(t *testing.T) {
	var s Set
	// Unknown MPTCP subtype 0xf (MP_EXPERIMENTAL) and 0x9 are skipped.
	require.NoError(t, ParseTCPOptions(h(t, "1e05f0aabb 1e039f 1e0351"), &s))
	require.Equal(t, uint16(1<<SubtypeMPPrio), s.Present)
	// Unknown TCP kinds are skipped by their length, NOPs one byte.
	s.Reset()
	require.NoError(t, ParseTCPOptions(h(t, "01 01 fd04abcd 1e0351"), &s))
	require.True(t, s.Has(SubtypeMPPrio))
	// Empty area.
	require.NoError(t, ParseTCPOptions(nil, &s))
}

func TestParseTCPOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts string
		err  error
		keep uint16
	}{
		{"missing length byte", "0101 02", ErrTruncated, 0},
		{"other kind length 0", "0800", ErrBadLength, 0},
		{"other kind length 1", "0801", ErrBadLength, 0},
		{"other kind too long", "080aaabb", ErrTruncated, 0},
		{"mptcp length 2", "1e02", ErrBadLength, 0},
		{"mptcp too long", "1e0c6000", ErrTruncated, 0},
		{"mptcp bad length", "1e0351 1e05 6000 00", ErrBadLength, 1 << SubtypeMPPrio},
		{"mpc v0", "1e0351 1e0c0081 1122334455667788", ErrBadVersion, 1 << SubtypeMPPrio},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Set
			require.ErrorIs(t, ParseTCPOptions(h(t, tc.opts), &s), tc.err)
			require.Equal(t, tc.keep, s.Present)
		})
	}
}

func TestSubtypeString(t *testing.T) {
	require.Equal(t, "MP_CAPABLE", SubtypeMPCapable.String())
	require.Equal(t, "MP_TCPRST", SubtypeMPTCPRST.String())
	require.Equal(t, "MP_EXPERIMENTAL", Subtype(15).String())
	require.Equal(t, "Subtype(9)", Subtype(9).String())
}
