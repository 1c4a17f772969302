package subflow

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestInfiniteMapRoom: our MP_CAPABLE SYN always announces an MSS that
// leaves room for the DSS of the peer's infinite mapping, our MP_CAPABLE
// SYN-ACK only when DSS checksums are in use (nothing else makes the peer
// send one); MP_JOIN handshakes never do (no infinite mapping once a
// subflow joined). Other options stay as they were.
func TestInfiniteMapRoom(t *testing.T) {
	syn := func(mss uint16) header.TCP {
		var opts [12]byte
		n := header.EncodeMSSOption(uint32(mss), opts[:])
		n += header.EncodeSACKPermittedOption(opts[n:])
		n += header.EncodeWSOption(7, opts[n:])
		n += header.AddTCPOptionPadding(opts[:], n)
		h := make(header.TCP, header.TCPMinimumSize+n)
		h.Encode(&header.TCPFields{DataOffset: uint8(len(h)), Flags: header.TCPFlagSyn, WindowSize: 100})
		copy(h[header.TCPMinimumSize:], opts[:n])
		return h
	}
	mssOf := func(h header.TCP) int {
		return int(header.ParseSynOptions(h.Options(), false).MSS)
	}
	for _, c := range []struct {
		name     string
		role     Role
		join     bool
		checksum bool
		mss      uint16
		want     int
	}{
		{"client", Client, false, false, 1460, 1460 - infiniteMapRoom},
		{"client/checksum", Client, false, true, 1440, 1440 - infiniteMapRoom},
		{"server", Server, false, false, 1460, 1460},
		{"server/checksum", Server, false, true, 1460, 1460 - infiniteMapRoom},
		{"join", Client, true, true, 1460, 1460},
		{"small", Client, false, true, 560, 560},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Subflow{role: c.role, join: c.join, meta: &Meta{}}
			s.meta.checksum.Store(c.checksum)
			h := syn(c.mss)
			before := append(header.TCP(nil), h...)
			s.reserveInfiniteMapRoomLocked(h)
			require.Equal(t, c.want, mssOf(h))
			require.Equal(t, before[header.TCPMinimumSize+4:], h[header.TCPMinimumSize+4:], "the other options")
		})
	}
}
