package option

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTCPRST(t *testing.T) {
	// Linux 6.18 RST accompanying MP_FASTCLOSE: no flags, unspecified.
	checkWire(t, ParseTCPRST, h(t, "1e04 8000"), TCPRST{})
	checkWire(t, ParseTCPRST, h(t, "1e04 8101"), TCPRST{Flags: FlagTransient, Reason: ReasonMPTCPError})
	checkWire(t, ParseTCPRST, h(t, "1e04 8f06"), TCPRST{Flags: 0x0f, Reason: ReasonMiddleboxInterference})
	checkBadLengths(t, ParseTCPRST, h(t, "1e048000"), 0, 3, 5, 12)
	// Only the low nibble of Flags exists on the wire.
	o := TCPRST{Flags: 0xf1}
	require.Equal(t, h(t, "1e048100"), o.Append(nil))
}
