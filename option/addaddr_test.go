package option

import (
	"net/netip"
	"testing"
)

func TestAddAddrForms(t *testing.T) {
	v4 := netip.MustParseAddr("10.211.0.3")
	v6 := netip.MustParseAddr("fd00:211::3")
	for _, tc := range []struct {
		name string
		wire string
		want AddAddr
	}{
		// Linux 6.18 announcing 10.211.0.3 id 5.
		{"v4-hmac", "1e10 3005 0ad30003 01de46860c7a9eb4", AddAddr{AddrID: 5, Addr: v4, HasHMAC: true, HMAC: 0x01de46860c7a9eb4}},
		// Linux 6.18 announcing 10.211.0.4 port 5010 id 6.
		{"v4-port-hmac", "1e12 3006 0ad30004 1392 0b4988dc8390fa2d", AddAddr{AddrID: 6, Addr: netip.MustParseAddr("10.211.0.4"), HasPort: true, Port: 5010, HasHMAC: true, HMAC: 0x0b4988dc8390fa2d}},
		{"v4-echo", "1e08 3105 0ad30003", AddAddr{Echo: true, AddrID: 5, Addr: v4}},
		{"v4-echo-port", "1e0a 3106 0ad30004 1392", AddAddr{Echo: true, AddrID: 6, Addr: netip.MustParseAddr("10.211.0.4"), HasPort: true, Port: 5010}},
		{"v6-hmac", "1e1c 3008 fd000211000000000000000000000003 03c15130d5f49285", AddAddr{AddrID: 8, Addr: v6, HasHMAC: true, HMAC: 0x03c15130d5f49285}},
		{"v6-port-hmac", "1e1e 3008 fd000211000000000000000000000003 0050 03c15130d5f49285", AddAddr{AddrID: 8, Addr: v6, HasPort: true, Port: 80, HasHMAC: true, HMAC: 0x03c15130d5f49285}},
		{"v6-echo", "1e14 3108 fd000211000000000000000000000003", AddAddr{Echo: true, AddrID: 8, Addr: v6}},
		{"v6-echo-port", "1e16 3108 fd000211000000000000000000000003 0050", AddAddr{Echo: true, AddrID: 8, Addr: v6, HasPort: true, Port: 80}},
		// IPv4-mapped IPv6 stays a 16-octet address.
		{"v4in6-echo", "1e14 3101 00000000000000000000ffff0ad30003", AddAddr{Echo: true, AddrID: 1, Addr: netip.AddrFrom16(v4.As16())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkWire(t, ParseAddAddr, h(t, tc.wire), tc.want)
		})
	}
}

func TestAddAddrBadLength(t *testing.T) {
	checkBadLengths(t, ParseAddAddr, h(t, "1e103005"), 0, 3, 4, 7, 9, 11, 12, 15, 17, 19, 21, 23, 27, 29, 31, 40)
	// The HMAC must be present exactly when E is clear (RFC 8684 §3.4.1).
	checkBadLengths(t, ParseAddAddr, h(t, "1e083105"), 16, 18, 28, 30)
	checkBadLengths(t, ParseAddAddr, h(t, "1e103005"), 8, 10, 20, 22)
}
