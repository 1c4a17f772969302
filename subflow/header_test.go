package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tcpWithOptions builds a TCP header carrying opts (padded to 4 bytes).
func tcpWithOptions(opts []byte) header.TCP {
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	h := make(header.TCP, header.TCPMinimumSize+len(opts))
	h.Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, SeqNum: 3, AckNum: 4, DataOffset: uint8(len(h)), Flags: header.TCPFlagAck, WindowSize: 5})
	copy(h[header.TCPMinimumSize:], opts)
	return h
}

func sackBlocks(n int) []byte {
	b := []byte{header.TCPOptionSACK, byte(2 + 8*n)}
	for i := 0; i < n; i++ {
		b = append(b, 0, 0, 0, byte(10*i), 0, 0, 0, byte(10*i+5))
	}
	return b
}

func TestBuildTCPHeader(t *testing.T) {
	ts := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, 10, 1, 2, 3, 4, 5, 6, 7, 8}
	dss28 := make([]byte, 28)
	dss28[0], dss28[1], dss28[2] = 30, 28, 0x20
	dss12 := make([]byte, 12)
	dss12[0], dss12[1], dss12[2] = 30, 12, 0x20

	for _, tc := range []struct {
		name        string
		opts        []byte
		mp          []byte
		wantTrimmed bool
		wantSACK    int // SACK blocks left
	}{
		{name: "timestamps+full DSS", opts: ts, mp: dss28},
		{name: "timestamps+3 SACK blocks+DATA_ACK: one block fits", opts: append(append([]byte{}, ts...), append([]byte{1, 1}, sackBlocks(3)...)...), mp: dss12, wantTrimmed: true, wantSACK: 1},
		{name: "timestamps+1 SACK block+DATA_ACK: fits as is", opts: append(append([]byte{}, ts...), append([]byte{1, 1}, sackBlocks(1)...)...), mp: dss12, wantSACK: 1},
		{name: "timestamps+SACK+full DSS: no room for SACK", opts: append(append([]byte{}, ts...), append([]byte{1, 1}, sackBlocks(2)...)...), mp: dss28, wantTrimmed: true},
		{name: "no options", mp: dss28},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := tcpWithOptions(tc.opts)
			var buf [60]byte
			h, trimmed := buildTCPHeader(buf[:0], old, tc.mp)
			require.Equal(t, tc.wantTrimmed, trimmed)
			require.LessOrEqual(t, len(h), 60)
			require.Zero(t, len(h)%4)
			require.Equal(t, int(h.DataOffset()), len(h))
			require.Equal(t, old[:12], h[:12], "fixed header kept (up to the data offset)")
			parsed := header.ParseTCPOptions(h.Options())
			if len(tc.opts) > 0 {
				require.True(t, parsed.TS, "timestamps are never dropped")
				require.Equal(t, uint32(0x01020304), parsed.TSVal)
			}
			require.Len(t, parsed.SACKBlocks, tc.wantSACK)
			require.Contains(t, string(h.Options()), string(tc.mp), "the MPTCP option is there, intact")
		})
	}
}

func TestMSSClamp(t *testing.T) {
	mss := []byte{header.TCPOptionMSS, 4, 5, 180}
	sack := []byte{header.TCPOptionSACKPermitted, 2}
	ts := []byte{header.TCPOptionTS, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	require.Equal(t, 0, mssClamp(cat(mss, sack, ts)), "gVisor already reserves 40 bytes")
	require.Equal(t, 4, mssClamp(cat(mss, sack)), "gVisor reserves 36 bytes")
	require.Equal(t, 28, mssClamp(cat(mss, ts)))
	require.Equal(t, 28, mssClamp(mss))
	require.Equal(t, 28, mssClamp(nil))
}
