// Package perf measures throughput with iperf3's own TCP control protocol,
// so that either end can be a stock iperf3 (3.x) and the other this
// package: over umptcp's userspace MPTCP stack, over the Linux kernel's
// MPTCP (`mptcpize run iperf3`), or over any net.Conn.
//
// A test is one control connection and Parallel data streams, all opened
// by the client to the same server port. The client sends a 37-byte
// cookie on each, the server drives the test by one-byte states on the
// control connection (PARAM_EXCHANGE, CREATE_STREAMS, TEST_START,
// TEST_RUNNING, then EXCHANGE_RESULTS, DISPLAY_RESULTS after the client's
// TEST_END), and both exchange JSON messages (the test's parameters, then
// each side's per-stream results) framed by a 4-byte big-endian length.
// In normal mode the client sends and the server receives; Reverse swaps
// them. A test ends after Duration, or once Bytes have been sent (or,
// in reverse mode, received by the client).
//
// RunClient runs one test as the client; Serve serves tests one at a time
// and turns other clients away as busy, as `iperf3 -s` does. When a data
// stream is a *stack.Conn (or anything with the same Stats method), every
// interval report and the result carry the stream's subflows: addresses,
// bytes each way in the interval, RTT, backup flag and state.
//
// Not supported: UDP, SCTP, --bidir, authentication, and file transfer
// (-F); a server refuses such tests with iperf3's "not implemented"
// error. TCP retransmissions are not reported (gVisor's counters are not
// exposed), so results say "sender_has_retransmits": 0 like a system
// without TCP_INFO.
package perf
