package pm

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSubflowsFor(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	m := New([]Endpoint{
		{Addr: a("10.0.0.2"), ID: 1, Flags: Subflow},
		{Addr: a("10.0.1.2"), ID: 2, Flags: Subflow | Backup},
		{Addr: a("10.0.2.2"), ID: 3, Flags: Signal}, // not a subflow endpoint
		{Addr: a("fd00::2"), ID: 4, Flags: Subflow}, // other family
		{Addr: a("10.0.3.2"), ID: 5, Flags: Subflow},
	}, Limits{Subflows: 8})
	got := m.SubflowsFor(a("10.0.0.2"), a("10.9.9.9"))
	require.Equal(t, []uint8{2, 5}, ids(got), "every other IPv4 subflow endpoint, in order")
	require.NotZero(t, got[0].Flags&Backup)

	require.Equal(t, []uint8{4}, ids(m.SubflowsFor(a("fd00::9"), a("fd09::1"))))

	limited := New(m.Endpoints(), Limits{Subflows: 1})
	require.Equal(t, []uint8{2}, ids(limited.SubflowsFor(a("10.0.0.2"), a("10.9.9.9"))), "the subflows limit")
	require.Empty(t, New(m.Endpoints(), Limits{}).SubflowsFor(a("10.0.0.2"), a("10.9.9.9")))

	require.Equal(t, uint8(3), m.AddrIDs()[a("10.0.2.2")])
}

func ids(eps []Endpoint) []uint8 {
	var out []uint8
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}
