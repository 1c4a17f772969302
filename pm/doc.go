// Package pm will hold path management: endpoints and their flags, limits,
// ADD_ADDR/REMOVE_ADDR/MP_PRIO policy and an API for userspace path
// managers (RFC 8684 §3.4). Connections use a single subflow today; the
// package exists so the layout of DESIGN.md is in place for MP_JOIN.
package pm
