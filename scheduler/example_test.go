package scheduler_test

import (
	"fmt"
	"time"

	"github.com/umptcp/umptcp/scheduler"
)

// mostRoom fills the non-backup subflow with the most room first. It keeps
// no state, never allocates, and returns -1 when no subflow can send.
type mostRoom struct{}

func (mostRoom) Pick(paths []scheduler.Path, pending int) int {
	best := -1
	for i, p := range paths {
		if p.Room > 0 && !p.Backup && (best < 0 || p.Room > paths[best].Room) {
			best = i
		}
	}
	return best
}

// A custom scheduler is any type with a Pick method.
func Example() {
	var s scheduler.Scheduler = mostRoom{}
	paths := []scheduler.Path{
		{ID: 1, RTT: 10 * time.Millisecond, Room: 2800},
		{ID: 2, RTT: 80 * time.Millisecond, Room: 65536},
		{ID: 3, RTT: 5 * time.Millisecond, Room: 1 << 20, Backup: true},
	}
	fmt.Println("mostRoom:", paths[s.Pick(paths, 100000)].ID)

	def, err := scheduler.New("default")
	if err != nil {
		panic(err)
	}
	fmt.Println("default:", paths[def.Pick(paths, 100000)].ID)

	_, err = scheduler.New("fastest")
	fmt.Println(err)
	// Output:
	// mostRoom: 2
	// default: 1
	// scheduler: unknown scheduler "fastest" (valid: default, minrtt, roundrobin, redundant, blest)
}
