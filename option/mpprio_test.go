package option

import "testing"

func TestMPPrio(t *testing.T) {
	// Linux 6.18 after "ip mptcp endpoint change id 7 backup".
	checkWire(t, ParseMPPrio, h(t, "1e03 51"), MPPrio{Backup: true})
	checkWire(t, ParseMPPrio, h(t, "1e03 50"), MPPrio{})
	// RFC 6824 form with address ID.
	checkWire(t, ParseMPPrio, h(t, "1e04 5107"), MPPrio{Backup: true, HasAddrID: true, AddrID: 7})
	checkBadLengths(t, ParseMPPrio, h(t, "1e0351"), 0, 2, 5, 12)
}
