package option

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func netipV4() netip.Addr { return netip.MustParseAddr("192.0.2.1") }

var testKeys = []uint64{0, 1, 0x0123456789abcdef, 0xd6a54fc07972f898, ^uint64(0)}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func TestTokenIDSN(t *testing.T) {
	for _, k := range testKeys {
		sum := sha256.Sum256(be64(k))
		require.Equal(t, binary.BigEndian.Uint32(sum[:4]), Token(k))
		require.Equal(t, binary.BigEndian.Uint64(sum[24:]), IDSN(k))
	}
	// Cross-checked against the kernel: MPTCP_INFO reported token
	// 0f8fd7fd for key 08e2aefdeb94d3c0 (testdata/kernel/passive-fastclose.hex).
	require.Equal(t, uint32(0x0f8fd7fd), Token(0x08e2aefdeb94d3c0))
}

func refHMAC(k1, k2 uint64, msg []byte) []byte {
	m := hmac.New(sha256.New, append(be64(k1), be64(k2)...))
	m.Write(msg)
	return m.Sum(nil)
}

func TestJoinHMAC(t *testing.T) {
	for _, a := range testKeys {
		for _, b := range testKeys {
			got := JoinHMAC(a, b, 0x01020304, 0xa0b0c0d0)
			want := refHMAC(a, b, []byte{1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0})
			require.Equal(t, want, got[:])
			require.Equal(t, binary.BigEndian.Uint64(want), TruncHMAC(got))
		}
	}
}

func TestAddAddrHMAC(t *testing.T) {
	v4 := netip.MustParseAddr("10.211.0.3")
	v6 := netip.MustParseAddr("fd00:211::3")
	for _, tc := range []struct {
		addr netip.Addr
		port uint16
		msg  []byte
	}{
		{v4, 0, append(append([]byte{5}, v4.AsSlice()...), 0, 0)},
		{v4, 5010, append(append([]byte{5}, v4.AsSlice()...), 0x13, 0x92)},
		{v6, 0, append(append([]byte{5}, v6.AsSlice()...), 0, 0)},
		{v6, 80, append(append([]byte{5}, v6.AsSlice()...), 0, 80)},
	} {
		want := refHMAC(1, 2, tc.msg)
		// Rightmost 64 bits.
		require.Equal(t, binary.BigEndian.Uint64(want[24:]), AddAddrHMAC(1, 2, 5, tc.addr, tc.port))
	}
}

func TestCryptoAllocs(t *testing.T) {
	require.Zero(t, testing.AllocsPerRun(100, func() {
		_ = Token(1)
		_ = IDSN(1)
		_ = JoinHMAC(1, 2, 3, 4)
		_ = AddAddrHMAC(1, 2, 3, netipV4(), 4)
	}))
}

func TestNewKey(t *testing.T) {
	a, err := NewKey()
	require.NoError(t, err)
	b, err := NewKey()
	require.NoError(t, err)
	require.NotEqual(t, a, b)
}
