package subflow

import (
	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// inbound runs inboundLocked without the TCP acceptance check of receive:
// the unit tests feed it segments of subflows whose sequence space they
// never set up.
func (s *Subflow) inbound(h header.TCP, payloadLen int, set *option.Set, parseErr error) verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inboundLocked(h, payloadLen, set, parseErr)
}
