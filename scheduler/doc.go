// Package scheduler chooses which subflow of a Multipath TCP connection
// carries the next bytes of application data (RFC 8684 leaves this policy
// to the implementation).
//
// The stack's sender loop calls [Scheduler.Pick] whenever new bytes wait to
// be sent, passing a snapshot ([Path]) of every usable subflow. Pick returns
// the index of the subflow to use; the stack writes min(Room, pending,
// 64 KiB) bytes to it and calls Pick again. Returning -1 sends nothing now:
// the stack asks again when any subflow's state changes (an ACK, more room,
// a new subflow), so a scheduler may wait for a better path without polling.
//
// The built-in schedulers, by the name [New] accepts:
//
//   - "default" (alias "minrtt"): the non-backup subflow with room and the
//     lowest smoothed RTT, like Linux's default MPTCP scheduler.
//   - "roundrobin": every non-backup subflow with room in turn, one chunk
//     each.
//   - "redundant": every byte on every subflow (see [Duplicating]); trades
//     bandwidth for latency and resilience.
//   - "blest": min-RTT, but holds data back rather than put it on a much
//     slower subflow when the fast one would soon carry it anyway (BLEST,
//     Ferlin et al., IFIP Networking 2016), which avoids head-of-line
//     blocking at the receiver.
//
// All of them treat backup subflows (the B bit of MP_JOIN and MP_PRIO) the
// same way: a backup is used only when no non-backup subflow is left at
// all, not when the non-backup ones are merely full. Their Pick methods do
// not allocate.
//
// # Writing a scheduler
//
// Any type with a Pick method is a [Scheduler]. One value serves one
// connection and is called from one goroutine, so it may keep per-path
// state, keyed by [Path.ID], without locking. Pick must return -1 or the
// index of a path with Room > 0, and should not allocate: it runs once per
// chunk sent. For example, a scheduler that fills the subflow with the most
// room first:
//
//	type mostRoom struct{}
//
//	func (mostRoom) Pick(paths []scheduler.Path, pending int) int {
//		best := -1
//		for i, p := range paths {
//			if p.Room > 0 && !p.Backup && (best < 0 || p.Room > paths[best].Room) {
//				best = i
//			}
//		}
//		return best
//	}
//
// A scheduler that wants every subflow to send all data also implements
// [Duplicating].
package scheduler
