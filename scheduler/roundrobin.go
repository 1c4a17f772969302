package scheduler

// roundRobin remembers the ID of the path it chose last and next chooses
// the eligible path with the smallest ID above it, wrapping around. Going
// by ID rather than by index keeps the rotation intact when the stack adds,
// removes or reorders paths between calls.
type roundRobin struct {
	last    int  // ID of the path chosen last
	started bool // whether last holds anything yet
}

// NewRoundRobin returns a scheduler that gives each non-backup subflow with
// room one chunk in turn, ordered by [Path.ID]. A subflow without room
// loses its turn rather than stalling the others. Backup subflows are used
// only when no non-backup subflow is left.
func NewRoundRobin() Scheduler { return &roundRobin{} }

func (r *roundRobin) Pick(paths []Path, _ int) int {
	backup := useBackups(paths)
	next, first := -1, -1 // smallest ID above r.last; smallest ID overall, for the wrap-around
	for i := range paths {
		p := &paths[i]
		if p.Backup != backup || p.Room <= 0 {
			continue
		}
		if first < 0 || p.ID < paths[first].ID {
			first = i
		}
		if r.started && p.ID > r.last && (next < 0 || p.ID < paths[next].ID) {
			next = i
		}
	}
	if next < 0 {
		next = first
	}
	if next >= 0 {
		r.last, r.started = paths[next].ID, true
	}
	return next
}
