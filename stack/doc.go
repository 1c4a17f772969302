// Package stack is umptcp's public API: a userspace network stack (gVisor's
// netstack) that speaks Multipath TCP v1 (RFC 8684) over one or more link
// endpoints, with Dial and Listen returning ordinary net.Conn and
// net.Listener values.
//
// A Conn owns the data level of one MPTCP connection: 64-bit data sequence
// numbers (§3.3), the DSN-ordered receive buffer and DATA_ACK, DATA_FIN in
// both directions including half-close (§3.3.3), connection-level flow
// control, DSS checksums when either side asks (§3.3.1), and fallback to
// plain TCP when the peer does not answer with MP_CAPABLE (§3.7).
//
// Each subflow is a gVisor TCP endpoint; the MPTCP options of its segments
// are written and read by package subflow's Layer, which wraps every link
// the stack uses. This package never parses option bytes itself.
//
// Goroutines: each MPTCP Conn runs one reader per subflow (subflow bytes to
// the data level) and one control goroutine (DATA_FIN and close); both end
// when the connection is closed and its subflows are gone.
package stack
