// Package conformance holds the tests and scenarios that check umptcp
// against the Linux kernel's Multipath TCP implementation, with both ends
// inside network namespaces the tests create and delete (see
// internal/netns). It is never imported by the library.
//
// The non-test files are the rig:
//
//   - kernel peers made with Go's net package inside a namespace
//     (ListenMPTCP, DialMPTCP, ListenTCP, DialTCP) and the kernel's own view
//     of such a socket (KernelMPTCPInfo);
//   - the kernel's counters (Nstat, Counters.Diff, RequireIncreased,
//     RequireUnchanged) and MPTCP sockets (SSMptcp);
//   - deterministic data streams and transfers checked with SHA-256
//     (Exchange, HalfClose);
//   - Rig, one namespace with MPTCP sysctls set, cleaned up with the test.
//
// The tests need root; as another user they skip. As root, a setup failure
// is a test failure, never a skip. Run them with
//
//	sudo go test -count=1 ./conformance ./internal/netns
package conformance
