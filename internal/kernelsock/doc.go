// Package kernelsock makes Linux kernel TCP and MPTCP sockets inside a
// network namespace from this process, and reads the kernel's view of an
// MPTCP connection (MPTCP_INFO).
//
// A socket belongs to the namespace of the thread that created it, for
// good: Listen and Dial create it on a thread switched into the namespace
// (netns.NS.Do) and return it usable from any goroutine. The conformance
// tests and `umptcp bench` use it to put the kernel's MPTCP on the other
// end of a TUN device, or on both ends of emulated paths.
package kernelsock
