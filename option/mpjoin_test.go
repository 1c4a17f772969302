package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMPJoinForms(t *testing.T) {
	var hm [20]byte
	copy(hm[:], h(t, "16dfe3613e2490defd8246698d5f42ff05144c2a"))
	for _, tc := range []struct {
		name string
		wire string
		want MPJoin
	}{
		// From a Linux 6.18 join SYN: address ID 7, token, nonce.
		{"syn", "1e0c 1007 55c53f5d 5b6e7112", MPJoin{Form: JoinSyn, AddrID: 7, Token: 0x55c53f5d, Nonce: 0x5b6e7112}},
		{"syn-backup", "1e0c 1101 aabbccdd 01020304", MPJoin{Form: JoinSyn, Backup: true, AddrID: 1, Token: 0xaabbccdd, Nonce: 0x01020304}},
		{"synack", "1e10 1103 0102030405060708 5eed1234", MPJoin{Form: JoinSynAck, Backup: true, AddrID: 3, TruncHMAC: 0x0102030405060708, Nonce: 0x5eed1234}},
		{"ack", "1e18 1000 16dfe3613e2490defd8246698d5f42ff05144c2a", MPJoin{Form: JoinAck, HMAC: hm}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkWire(t, ParseMPJoin, h(t, tc.wire), tc.want)
		})
	}
}

func TestMPJoinBadLength(t *testing.T) {
	checkBadLengths(t, ParseMPJoin, h(t, "1e0c1007"), 0, 2, 3, 4, 11, 13, 15, 17, 23, 25, 40)
}

// The ACK form has no B flag or address ID: they are not encoded and
// reserved bits are ignored on input.
func TestMPJoinAckIgnoresReserved(t *testing.T) {
	o := MPJoin{Form: JoinAck, Backup: true, AddrID: 9}
	b := o.Append(nil)
	require.Equal(t, byte(0x10), b[2])
	require.Equal(t, byte(0), b[3])
	b[2], b[3] = 0x1f, 0xff
	p, _, err := ParseMPJoin(b)
	require.NoError(t, err)
	require.Equal(t, MPJoin{Form: JoinAck}, p)
}
