package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRemoveAddr(t *testing.T) {
	// Linux 6.18 after "ip mptcp endpoint delete id 5".
	checkWire(t, ParseRemoveAddr, h(t, "1e04 4005"), RemoveAddr{N: 1, IDs: [37]uint8{5}})
	checkWire(t, ParseRemoveAddr, h(t, "1e06 4001 0203"), RemoveAddr{N: 3, IDs: [37]uint8{1, 2, 3}})

	full := []byte{Kind, 40, 0x40}
	var want RemoveAddr
	for i := range MaxRemoveAddrIDs {
		full = append(full, byte(i+1))
		want.IDs[i] = byte(i + 1)
	}
	want.N = MaxRemoveAddrIDs
	checkWire(t, ParseRemoveAddr, full, want)
	require.Len(t, want.List(), MaxRemoveAddrIDs)
}

func TestRemoveAddrBadLength(t *testing.T) {
	checkBadLengths(t, ParseRemoveAddr, h(t, "1e044005"), 0, 2, 3, 41, 255)
}

func TestRemoveAddrList(t *testing.T) {
	r := RemoveAddr{N: 2, IDs: [37]uint8{7, 9}}
	require.Equal(t, []uint8{7, 9}, r.List())
	r.N = 200 // out of range: clamped, never panics
	require.Len(t, r.List(), MaxRemoveAddrIDs)
	require.Equal(t, 40, r.Len())
	require.Len(t, r.Append(nil), 40)
}
