// Package netns manages short-lived, named Linux network namespaces for the
// conformance tests: it creates them with `ip netns add`, runs Go code inside
// them on a locked OS thread, runs commands in them with `ip netns exec`, sets
// their sysctls and deletes them again.
//
// Every namespace this package creates is named "umptcp-<prefix>-<random>" so
// that a leftover one is easy to recognise (and to delete with
// `ip netns del`). Nothing here touches the root namespace's configuration.
//
// All of it needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`.
package netns
