package option

import "testing"

func TestMPFail(t *testing.T) {
	// Linux 6.18 after a corrupted DSS checksum.
	checkWire(t, ParseMPFail, h(t, "1e0c 6000 570762cd38be9846"), MPFail{DSN: 0x570762cd38be9846})
	checkBadLengths(t, ParseMPFail, h(t, "1e0c6000"), 0, 3, 4, 8, 11, 13, 16)
}
