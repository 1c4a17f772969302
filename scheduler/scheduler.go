package scheduler

import (
	"fmt"
	"strings"
	"time"
)

// Path is what a scheduler knows about one subflow. Values are cheap
// snapshots taken by the stack for each call of [Scheduler.Pick].
type Path struct {
	ID       int           // stable for the subflow's life, unique within the connection (use it to keep per-path state)
	RTT      time.Duration // smoothed RTT; 0 before the first sample
	RTTVar   time.Duration
	Cwnd     int     // congestion window in bytes
	MSS      int     // maximum segment size in bytes
	InFlight int     // bytes sent on the wire and not yet acknowledged at the subflow level
	Queued   int     // bytes handed to the subflow that have not left yet
	Room     int     // bytes the subflow can take now (>0 means it can send); the stack computes it from cwnd and what is outstanding
	Backup   bool    // a backup subflow (MP_JOIN/MP_PRIO B bit): use only when no non-backup subflow is left
	Rate     float64 // recent delivery rate in bytes/second measured by the stack; 0 when unknown
}

// Scheduler chooses the subflow for the next bytes of a connection. One
// value serves one connection (it may keep state); the stack calls it from
// one goroutine.
type Scheduler interface {
	// Pick returns the index in paths of the subflow that sends the next
	// bytes, or -1 to send nothing now. paths is non-empty; pending (>0) is
	// how many new bytes wait to be sent.
	Pick(paths []Path, pending int) int
}

// Duplicating is implemented by schedulers that want every byte on every
// subflow. When Duplicates reports true, the stack lets each subflow send,
// from its own position, all data that the peer has not acknowledged yet,
// and Pick is not called.
type Duplicating interface {
	Scheduler
	Duplicates() bool
}

// builtins maps the names New accepts to constructors, in the order Names
// reports them.
var builtins = [...]struct {
	name string
	new  func() Scheduler
}{
	{"default", NewMinRTT},
	{"minrtt", NewMinRTT},
	{"roundrobin", NewRoundRobin},
	{"redundant", NewRedundant},
	{"blest", NewBLEST},
}

// New returns a fresh scheduler by name: "default" (alias "minrtt"),
// "roundrobin", "redundant", "blest". Unknown names give an error listing
// the valid ones.
func New(name string) (Scheduler, error) {
	for _, b := range builtins {
		if b.name == name {
			return b.new(), nil
		}
	}
	return nil, fmt.Errorf("scheduler: unknown scheduler %q (valid: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the built-in scheduler names in a stable order (for CLI
// help). Every name is accepted by New.
func Names() []string {
	names := make([]string, len(builtins))
	for i, b := range builtins {
		names[i] = b.name
	}
	return names
}

// useBackups reports whether backup paths are eligible. They are only when
// paths holds no non-backup path at all: a non-backup path that is merely
// full gets room again with its next ACK, and sending on a backup meanwhile
// would defeat the point of marking it backup (often a metered or slow
// link).
func useBackups(paths []Path) bool {
	for i := range paths {
		if !paths[i].Backup {
			return false
		}
	}
	return true
}

// faster reports whether a is preferred over b by RTT. An RTT of 0 (or
// less) is unknown and loses to any measured one; on equal RTTs the
// incumbent b stays, so among equals the earliest path wins.
func faster(a, b *Path) bool {
	return a.RTT > 0 && (b.RTT <= 0 || a.RTT < b.RTT)
}

// fastest returns the index of the eligible path with the lowest RTT, only
// among those with Room > 0 if withRoom, or -1 if there is none.
func fastest(paths []Path, withRoom bool) int {
	backup := useBackups(paths)
	best := -1
	for i := range paths {
		p := &paths[i]
		if p.Backup != backup || (withRoom && p.Room <= 0) {
			continue
		}
		if best < 0 || faster(p, &paths[best]) {
			best = i
		}
	}
	return best
}
