// Package reasm is the connection-level receive buffer of an MPTCP
// connection: it reassembles bytes that arrive on several subflows, each
// tagged with its 64-bit data sequence number (DSN), and hands them to the
// application in DSN order, exactly once.
//
// Subflows deliver data out of order relative to each other and a sender may
// retransmit (reinject) the same DSN range on another subflow, so a Put may
// overlap bytes already held, straddle the in-order point, or reach beyond
// the connection-level receive window. A [Ring] copies each new byte once,
// straight to its final place in a fixed buffer, tracks the out-of-order
// parts as a short sorted list of DSN intervals, and allocates nothing per
// call once that list has reached its working size.
//
// DSNs are treated as unbounded 64-bit counters: wraparound at 2^64 is not
// handled, so the first DSN given to [New] or [Ring.Reset] must be below
// 2^63, which leaves 2^63 bytes before any arithmetic could overflow. The
// RFC 8684 IDSN is a hash and may lie anywhere in the 64-bit space; a caller
// whose IDSN is too large indexes the ring by DSN-IDSN (relative DSNs) and
// adds IDSN back when it builds a DATA_ACK.
package reasm
