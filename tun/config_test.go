package tun

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSpec(t *testing.T) {
	good := []struct {
		spec string
		want Config
	}{
		{"tun0,10.1.0.2/24,10.1.0.1", Config{Name: "tun0", StackAddr: netip.MustParsePrefix("10.1.0.2/24"), HostAddr: netip.MustParsePrefix("10.1.0.1/24")}},
		{" wan1 , 192.168.7.9/30 , 192.168.7.10 ", Config{Name: "wan1", StackAddr: netip.MustParsePrefix("192.168.7.9/30"), HostAddr: netip.MustParsePrefix("192.168.7.10/30")}},
		{"p2p,10.0.0.0/31,10.0.0.1", Config{Name: "p2p", StackAddr: netip.MustParsePrefix("10.0.0.0/31"), HostAddr: netip.MustParsePrefix("10.0.0.1/31")}},
		{"v6,fd00:1::2/64,fd00:1::1", Config{Name: "v6", StackAddr: netip.MustParsePrefix("fd00:1::2/64"), HostAddr: netip.MustParsePrefix("fd00:1::1/64")}},
		{"abcdefghijklmno,2001:db8::a/120,2001:db8::b", Config{Name: "abcdefghijklmno", StackAddr: netip.MustParsePrefix("2001:db8::a/120"), HostAddr: netip.MustParsePrefix("2001:db8::b/120")}},
	}
	for _, tc := range good {
		t.Run("good/"+tc.spec, func(t *testing.T) {
			got, err := ParseSpec(tc.spec)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, 1500, got.EffectiveMTU())
			again, err := ParseSpec(got.String())
			require.NoError(t, err)
			require.Equal(t, got, again)
		})
	}

	bad := []struct {
		spec, errPart string
	}{
		{"", "3 comma-separated fields"},
		{"tun0,10.1.0.2/24", "3 comma-separated fields"},
		{"tun0,10.1.0.2/24,10.1.0.1,x", "3 comma-separated fields"},
		{",10.1.0.2/24,10.1.0.1", "empty interface name"},
		{"abcdefghijklmnop,10.1.0.2/24,10.1.0.1", "at most 15"},
		{"tu/n,10.1.0.2/24,10.1.0.1", "invalid character"},
		{"tun0,10.1.0.2,10.1.0.1", "needs a prefix length"},
		{"tun0,10.1.0.2/33,10.1.0.1", "bad stack address/prefix"},
		{"tun0,10.1.0.2/x,10.1.0.1", "bad stack address/prefix"},
		{"tun0,10.1.0.2/32,10.1.0.1", "bad prefix length"},
		{"tun0,10.1.0.2/0,10.1.0.1", "bad prefix length"},
		{"tun0,fd00::2/128,fd00::1", "bad prefix length"},
		{"tun0,10.1.0.2/24,10.1.0.1/24", "must not carry a prefix"},
		{"tun0,10.1.0.2/24,10.1.0.x", "bad host address"},
		{"tun0,10.1.0.2/24,fd00::1", "mixed address families"},
		{"tun0,fd00::2/64,10.1.0.1", "mixed address families"},
		{"tun0,10.1.0.2/24,10.1.0.2", "equal"},
		{"tun0,fd00::2/64,fd00::2", "equal"},
		{"tun0,10.1.0.2/24,10.2.0.1", "not in the stack's prefix"},
		{"tun0,fd00:1::2/64,fd00:2::1", "not in the stack's prefix"},
		{"tun0,10.1.0.2/24,10.1.0.255", "broadcast"},
		{"tun0,0.0.0.0/24,0.0.0.1", "unspecified"},
		{"tun0,127.0.0.2/8,127.0.0.1", "loopback"},
		{"tun0,ff02::2/64,ff02::1", "multicast"},
		{"tun0,fe80::2%eth0/64,fe80::1", "bad stack address/prefix"},
		{"tun0,::ffff:10.1.0.2/120,::ffff:10.1.0.1", "IPv4-mapped"},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.spec, func(t *testing.T) {
			_, err := ParseSpec(tc.spec)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.errPart)
		})
	}
}

func TestConfigValidateMTU(t *testing.T) {
	c, err := ParseSpec("v6,fd00::2/64,fd00::1")
	require.NoError(t, err)
	c.MTU = 1279
	require.ErrorContains(t, c.Validate(), "MTU 1279 out of range 1280")
	c.MTU = 9000
	require.NoError(t, c.Validate())
	c4, err := ParseSpec("v4,10.0.0.2/24,10.0.0.1")
	require.NoError(t, err)
	c4.MTU = 576
	require.NoError(t, c4.Validate())
	c4.MTU = 70000
	require.Error(t, c4.Validate())
}

func TestParsePortSpec(t *testing.T) {
	for _, spec := range []string{"umta,10.91.0.1/24", "v6,fd91::1/64", "host,10.0.0.1/32", " p , 192.168.1.1/16 "} {
		c, err := ParsePortSpec(spec)
		require.NoError(t, err, spec)
		require.True(t, c.IsPort())
		require.NoError(t, c.Validate())
		again, err := ParsePortSpec(c.String())
		require.NoError(t, err)
		require.Equal(t, c, again)
	}
	for spec, errPart := range map[string]string{
		"umta":                        "2 comma-separated fields",
		"umta,10.91.0.2/24,10.91.0.1": "2 comma-separated fields",
		"umta,10.91.0.1":              "needs a prefix length",
		"umta,10.91.0.1/x":            "bad address/prefix",
		"umta,10.91.0.0/24":           "network or broadcast",
		"umta,10.91.0.1/0":            "bad prefix length",
		"umta,127.0.0.1/8":            "loopback",
		",10.91.0.1/24":               "empty interface name",
	} {
		_, err := ParsePortSpec(spec)
		require.ErrorContains(t, err, errPart, spec)
	}
	// A stack config is not a port; a zero stack address passes Validate.
	c, err := ParseSpec("tun0,10.1.0.2/24,10.1.0.1")
	require.NoError(t, err)
	require.False(t, c.IsPort())
	c.StackAddr = netip.Prefix{}
	require.NoError(t, c.Validate())
	c.MTU = 1279
	require.NoError(t, c.Validate(), "IPv4 MTU")
	c.MTU = 60
	require.ErrorContains(t, c.Validate(), "MTU 60 out of range 68")
}
