package scheduler

// minRTT sends on the eligible path with room and the lowest RTT. It keeps
// no state.
type minRTT struct{}

// NewMinRTT returns the default scheduler: among non-backup subflows with
// room, the one with the lowest smoothed RTT; subflows without an RTT
// sample yet come after measured ones, the first of them winning. Backup
// subflows are used only when no non-backup subflow is left.
func NewMinRTT() Scheduler { return minRTT{} }

func (minRTT) Pick(paths []Path, _ int) int { return fastest(paths, true) }

// redundant asks the stack to send everything on every subflow. Its Pick,
// which the stack does not call while Duplicates is true, is min-RTT so the
// value stays a sensible Scheduler on its own.
type redundant struct{ minRTT }

// NewRedundant returns a scheduler that sends every byte on every subflow:
// it implements [Duplicating] with Duplicates() == true. The first copy to
// arrive wins, so latency follows the best path at the cost of sending the
// data once per subflow.
func NewRedundant() Scheduler { return redundant{} }

func (redundant) Duplicates() bool { return true }
