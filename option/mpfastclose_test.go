package option

import "testing"

func TestMPFastclose(t *testing.T) {
	// Linux 6.18 close() with SO_LINGER 0: carries our (the receiver's) key.
	checkWire(t, ParseMPFastclose, h(t, "1e0c 7000 0123456789abcdef"), MPFastclose{Key: 0x0123456789abcdef})
	checkBadLengths(t, ParseMPFastclose, h(t, "1e0c7000"), 0, 3, 4, 11, 13, 20)
}
