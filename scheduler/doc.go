// Package scheduler will choose which subflow carries the next bytes of an
// MPTCP connection (min-RTT default, round-robin, redundant, BLEST-style).
// With one subflow per connection today there is nothing to choose; the
// package exists so the layout of DESIGN.md is in place for MP_JOIN.
package scheduler
