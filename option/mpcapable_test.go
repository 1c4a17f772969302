package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMPCapableForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire string
		want MPCapable
	}{
		// Linux 6.18 SYN: v1, H flag only.
		{"syn", "1e04 0101", MPCapable{Version: 1, Flags: FlagHMACSHA256, Form: MPCSyn}},
		{"syn-csum", "1e04 0181", MPCapable{Version: 1, Flags: FlagChecksum | FlagHMACSHA256, Form: MPCSyn}},
		{"synack", "1e0c 0101 08e2aefdeb94d3c0", MPCapable{Version: 1, Flags: 1, SenderKey: 0x08e2aefdeb94d3c0, Form: MPCSynAck}},
		{"ack", "1e14 0101 d6a54fc07972f898 0123456789abcdef",
			MPCapable{Version: 1, Flags: 1, SenderKey: 0xd6a54fc07972f898, ReceiverKey: 0x0123456789abcdef, Form: MPCAck}},
		{"ack-data", "1e16 0101 d6a54fc07972f898 0123456789abcdef 0034",
			MPCapable{Version: 1, Flags: 1, SenderKey: 0xd6a54fc07972f898, ReceiverKey: 0x0123456789abcdef, DataLen: 0x34, Form: MPCAckData}},
		{"ack-data-csum", "1e18 0181 d952613039f3da21 0123456789abcdef 0034 80c9",
			MPCapable{Version: 1, Flags: 0x81, SenderKey: 0xd952613039f3da21, ReceiverKey: 0x0123456789abcdef, DataLen: 0x34, Checksum: 0x80c9, Form: MPCAckDataCsum}},
		{"flags-bc", "1e04 0161", MPCapable{Version: 1, Flags: FlagExtensibility | FlagNoJoinSrc | FlagHMACSHA256, Form: MPCSyn}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkWire(t, ParseMPCapable, h(t, tc.wire), tc.want)
		})
	}
}

func TestMPCapableBadLength(t *testing.T) {
	checkBadLengths(t, ParseMPCapable, h(t, "1e040101"), 0, 1, 2, 3, 5, 8, 11, 13, 19, 21, 23, 25, 40, 255)
}

// Version 0 (RFC 6824) and future versions: the fields are decoded but
// ErrBadVersion tells a v1-only caller to treat the peer as not MPTCP v1.
func TestMPCapableVersion(t *testing.T) {
	o, n, err := ParseMPCapable(h(t, "1e0c 0081 1122334455667788"))
	require.ErrorIs(t, err, ErrBadVersion)
	require.Equal(t, 12, n)
	require.Equal(t, uint8(0), o.Version)
	require.Equal(t, uint64(0x1122334455667788), o.SenderKey)

	o, _, err = ParseMPCapable(h(t, "1e04 0201"))
	require.ErrorIs(t, err, ErrBadVersion)
	require.Equal(t, uint8(2), o.Version)

	// A bad length is reported before the version.
	_, _, err = ParseMPCapable(h(t, "1e05 0001 00"))
	require.ErrorIs(t, err, ErrBadLength)
}

func TestMPCapableUnknownForm(t *testing.T) {
	o := MPCapable{Version: 1, Form: 99, SenderKey: 1}
	require.Equal(t, 4, o.Len())
	require.Equal(t, h(t, "1e040100"), o.Append(nil))
	require.Equal(t, "ACK+data+csum", MPCAckDataCsum.String())
}
