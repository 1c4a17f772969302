// Package subflow owns one MPTCP subflow below gVisor's TCP: its handshake
// state (MP_CAPABLE, RFC 8684 §3.1), keys, token and IDSN, the mapping
// tables between subflow sequence numbers and 64-bit data sequence numbers
// (§3.3.1), and the per-packet option rewriting for its 4-tuple.
//
// gVisor's TCP has no hook for TCP options, so each subflow is an ordinary
// gVisor TCP endpoint and the MPTCP options live in a link endpoint wrapper,
// the Layer, that sits between gVisor's network layer and the real link:
//
//   - outbound, it finds the subflow of a segment by 4-tuple, appends
//     MP_CAPABLE or DSS (DATA_ACK, mapping, DATA_FIN, checksum), trims SACK
//     blocks when the 40 bytes of option space run out, and fixes lengths and
//     checksums without touching the payload;
//   - inbound, it parses the MPTCP options, hands them to the subflow, clamps
//     the MSS of a peer that does not negotiate SACK (gVisor reserves the full
//     40 option bytes only when SACK is on), and passes the segment on;
//   - it sends pure ACKs of its own when the connection's DATA_ACK advanced
//     and no segment carried it, and to carry DATA_FIN.
//
// The package decides nothing about which subflow sends what; the stack
// package drives it through Subflow's methods.
package subflow
