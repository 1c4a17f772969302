// Package pm is the path manager: which local addresses (endpoints) a
// connection may use, with which flags, within which limits.
//
// It holds policy only; the stack asks it which subflows to open when a
// connection is established and how many to accept. The model is Linux's
// in-kernel path manager (`ip mptcp endpoint`, `ip mptcp limits`): an
// endpoint flagged Subflow makes a client open one additional subflow from
// that address to the peer's address of the initial subflow; Backup makes
// those subflows backup paths. Address announcement (ADD_ADDR, Signal) and
// removal come with a later issue and will grow here.
package pm
