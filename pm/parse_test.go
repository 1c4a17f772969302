package pm

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Endpoint
	}{
		{"10.0.1.2,subflow", Endpoint{Addr: netip.MustParseAddr("10.0.1.2"), Flags: Subflow}},
		{"10.0.1.2:8080,signal", Endpoint{Addr: netip.MustParseAddr("10.0.1.2"), Port: 8080, Flags: Signal}},
		{"10.0.1.2,signal,subflow,backup", Endpoint{Addr: netip.MustParseAddr("10.0.1.2"), Flags: Signal | Subflow | Backup}},
		{"fd00::2,subflow,fullmesh,id=7", Endpoint{Addr: netip.MustParseAddr("fd00::2"), ID: 7, Flags: Subflow | Fullmesh}},
		{"[fd00::2]:443,signal", Endpoint{Addr: netip.MustParseAddr("fd00::2"), Port: 443, Flags: Signal}},
		{"[fd00::2],signal", Endpoint{Addr: netip.MustParseAddr("fd00::2"), Flags: Signal}},
		{"::ffff:10.0.0.1,subflow", Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Flags: Subflow}},
	} {
		got, err := ParseEndpoint(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
	for in, msg := range map[string]string{
		"10.0.1.2":                 "needs signal, subflow or fullmesh",
		"10.0.1.2,backup":          "needs signal, subflow or fullmesh",
		"10.0.1.2:80,subflow":      "a port needs the signal flag",
		"10.0.1.2,signal,fast":     "unknown flag",
		"10.0.1.2,signal,id=0":     "id must be 1-255",
		"10.0.1.2,signal,id=256":   "id must be 1-255",
		"host,signal":              "not an IP address",
		"0.0.0.0,signal":           "cannot be a local endpoint",
		"10.0.1.2:0,signal":        "port 0",
		"10.0.1.2,signal,fullmesh": "exclude each other",
		"":                         "not an IP address",
	} {
		_, err := ParseEndpoint(in)
		require.ErrorContains(t, err, msg, in)
	}
}

func TestParseLimits(t *testing.T) {
	l, err := ParseLimits("subflows=2,add_addr_accepted=3", DefaultLimits)
	require.NoError(t, err)
	require.Equal(t, Limits{Subflows: 2, AddAddrAccepted: 3}, l)
	l, err = ParseLimits("add_addr_accepted=0", DefaultLimits)
	require.NoError(t, err)
	require.Equal(t, Limits{Subflows: 8, AddAddrAccepted: 0}, l, "an omitted limit keeps its default")
	for _, bad := range []string{"subflows=9", "subflows=-1", "subflows", "paths=1", "subflows=x", ""} {
		_, err := ParseLimits(bad, DefaultLimits)
		require.Error(t, err, bad)
	}
}

func TestCheckEndpoints(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	require.NoError(t, CheckEndpoints([]Endpoint{{Addr: a, ID: 1}, {Addr: b, ID: 2}}))
	require.ErrorContains(t, CheckEndpoints([]Endpoint{{Addr: a, ID: 1}, {Addr: a, ID: 2}}), "twice")
	require.ErrorContains(t, CheckEndpoints([]Endpoint{{Addr: a, ID: 1}, {Addr: b, ID: 1}}), "share id 1")
}

func TestNewAssignsFreeIDs(t *testing.T) {
	m := New([]Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.1"), ID: 1, Flags: Subflow},
		{Addr: netip.MustParseAddr("10.0.0.2"), Flags: Signal},
		{Addr: netip.MustParseAddr("10.0.0.3"), ID: 3, Flags: Signal},
	}, DefaultLimits)
	var ids []uint8
	for _, e := range m.Endpoints() {
		ids = append(ids, e.ID)
	}
	require.Equal(t, []uint8{1, 2, 3}, ids)
	e, err := m.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.4"), Flags: Subflow})
	require.NoError(t, err)
	require.Equal(t, uint8(4), e.ID)
	_, err = m.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.4"), Flags: Subflow})
	require.ErrorContains(t, err, "already an endpoint")
	_, err = m.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.5"), ID: 1, Flags: Subflow})
	require.ErrorContains(t, err, "already used")
	require.NoError(t, m.RemoveEndpoint(2))
	require.Error(t, m.RemoveEndpoint(2))
	require.NoError(t, m.SetBackup(1, true))
	require.NotZero(t, m.Endpoints()[0].Flags&Backup)
	require.Error(t, m.SetLimits(Limits{Subflows: 9}))
}

// FuzzParseEndpoint: any string either parses into an endpoint that prints
// back into something that parses the same, or is refused with an error.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"10.0.1.2,subflow", "10.0.1.2:8080,signal", "[fd00::2]:443,signal,backup", "fd00::2,subflow,fullmesh,id=7", "1.2.3.4,,", ",signal", "[::1]:1,signal,id=255"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEndpoint(s)
		if err != nil {
			return
		}
		require.True(t, e.Addr.IsValid())
		require.NotZero(t, e.Flags&(Signal|Subflow|Fullmesh))
		addr := e.Addr.String()
		if e.Port != 0 {
			addr = netip.AddrPortFrom(e.Addr, e.Port).String()
		}
		again, err := ParseEndpoint(addr + "," + e.Flags.String() + idSuffix(e.ID))
		require.NoError(t, err)
		require.Equal(t, e, again)
	})
}

func idSuffix(id uint8) string {
	if id == 0 {
		return ""
	}
	return ",id=" + strconv.Itoa(int(id))
}

// FuzzParseLimits: whatever parses is within Linux's bounds.
func FuzzParseLimits(f *testing.F) {
	for _, s := range []string{"subflows=2,add_addr_accepted=3", "subflows=8", "add_addr_accepted=0", "subflows=1,subflows=2", "=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLimits(s, DefaultLimits)
		if err != nil {
			return
		}
		require.True(t, l.Subflows >= 0 && l.Subflows <= MaxLimit && l.AddAddrAccepted >= 0 && l.AddAddrAccepted <= MaxLimit)
	})
}
