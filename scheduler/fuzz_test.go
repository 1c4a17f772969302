package scheduler

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pathBytes is how many fuzz bytes describe one path.
const pathBytes = 7

// fuzzPaths turns fuzz input into pending and 1..8 paths; b[0:2] is
// pending, then pathBytes per path. IDs are unique, everything else may be
// zero, and Room may be negative.
func fuzzPaths(b []byte) (pending int, paths []Path) {
	if len(b) < 2+pathBytes {
		return 0, nil
	}
	pending = int(b[0])<<8 | int(b[1]) + 1
	b = b[2:]
	for i := 0; i < 8 && len(b) >= pathBytes; i++ {
		paths = append(paths, Path{
			ID:       int(b[0])<<3 | i,
			RTT:      time.Duration(b[1]) * time.Millisecond,
			RTTVar:   time.Duration(b[1]) * time.Millisecond / 4,
			MSS:      int(b[2]) * 8,
			Cwnd:     int(b[3]) * 1000,
			InFlight: int(b[4]) * 500,
			Queued:   int(b[5]&0x0f) * 1000,
			Backup:   b[5]&0x80 != 0,
			Room:     (int(b[6]) - 64) * 512,
		})
		b = b[pathBytes:]
	}
	return pending, paths
}

func FuzzPick(f *testing.F) {
	f.Add([]byte{0x01, 0x00, 1, 10, 175, 20, 56, 0, 64})                                   // one path, no room
	f.Add([]byte{0x01, 0x00, 1, 10, 175, 28, 56, 0, 64, 2, 80, 175, 64, 0, 0, 192})        // BLEST waits
	f.Add([]byte{0xff, 0xff, 1, 10, 175, 2, 56, 0, 64, 2, 80, 175, 64, 0, 0, 65})          // BLEST uses slow
	f.Add([]byte{0x10, 0x00, 1, 10, 175, 28, 56, 0, 0, 2, 5, 175, 64, 0, 0x80, 192})       // backup idle
	f.Add([]byte{0x10, 0x00, 1, 10, 175, 28, 56, 0x80, 0, 2, 5, 175, 64, 0, 0x80, 192})    // only backups
	f.Add([]byte{0x00, 0x01, 3, 0, 0, 0, 0, 0, 200, 1, 0, 0, 0, 0, 0, 200, 2, 9, 1, 1, 1}) // unknown RTTs, zero MSS/cwnd
	f.Fuzz(func(t *testing.T, b []byte) {
		pending, paths := fuzzPaths(b)
		if len(paths) == 0 {
			return
		}
		for _, s := range pickers {
			sched := s.new()
			// Several calls, one on a subset, to exercise state kept across calls.
			for call := range 4 {
				ps := paths
				if call == 2 {
					ps = paths[len(paths)/2:]
				}
				primary, canSend := eligibility(ps)
				i := sched.Pick(ps, pending)
				if i == -1 {
					require.True(t, !canSend || s.name == "blest", "%s returned -1 with an eligible path with room", s.name)
					continue
				}
				require.True(t, i >= 0 && i < len(ps), "%s: index %d of %d", s.name, i, len(ps))
				require.Positive(t, ps[i].Room, "%s picked a path without room", s.name)
				require.False(t, primary && ps[i].Backup, "%s picked a backup path while a non-backup path exists", s.name)
			}
		}
		// BLEST either agrees with min-RTT or waits, and never waits when alone.
		want := NewMinRTT().Pick(paths, pending)
		got := NewBLEST().Pick(paths, pending)
		require.True(t, got == -1 || got == want, "blest chose %d, minrtt %d", got, want)
		if _, canSend := eligibility(paths); len(paths) == 1 && canSend {
			require.Equal(t, 0, got)
		}
	})
}

// eligibility reports whether paths holds a non-backup path, and whether an
// eligible path (non-backup, or backup when there is no other) has room.
func eligibility(paths []Path) (primary, canSend bool) {
	var primaryRoom, room bool
	for _, p := range paths {
		primary = primary || !p.Backup
		primaryRoom = primaryRoom || !p.Backup && p.Room > 0
		room = room || p.Room > 0
	}
	return primary, primaryRoom || !primary && room
}
