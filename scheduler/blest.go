package scheduler

// BLEST (Ferlin, Alay, Mehani, Boreli: "BLEST: Blocking Estimation-based
// MPTCP Scheduler for Heterogeneous Networks", IFIP Networking 2016).
//
// With a fast path f and a slow path s, data sent on s arrives about RTT_s
// later; if f could have carried it sooner, the receiver holds everything
// behind it (head-of-line blocking) and the bytes parked on s also occupy
// the connection's send window, which may then stop f. BLEST therefore
// sends on s only when f will not need that part of the window while the
// chunk is on its way.
//
// During one RTT_s, f gets through rtts = RTT_s/RTT_f round trips. Assuming
// Reno congestion avoidance (one more segment per round trip) starting from
// a window of cwnd_f segments, it sends
//
//	X = MSS_f * (cwnd_f + (rtts-1)/2) * rtts   bytes,
//
// the sum cwnd_f + (cwnd_f+1) + ... over rtts rounds. The paper waits for f
// when
//
//	X * lambda > W - bytes_s
//
// where W is what the send window allows and bytes_s what s would hold in
// it. We count bytes_s as s's outstanding bytes plus the new chunk, as the
// out-of-tree Linux MPTCP implementation does, rather than the cruder
// MSS_s * cwnd_s, which charges s for window it is not using. lambda scales
// how much X is trusted; the paper adapts it to observed blocking, we keep
// it at 1.
//
// The stack does not tell schedulers the peer's receive window, so W is
// approximated by the data the connection has to deliver: pending plus
// every path's outstanding (InFlight + Queued) bytes. With that, W - bytes_s
// is roughly what f would have left to carry if s took the chunk, and
// BLEST waits when f could send more than that before the chunk arrived on
// s: then s would not deliver the chunk sooner than f, only block behind it.
//
// The estimate assumes congestion avoidance, not slow start (the stack does
// not pass ssthresh), which underestimates X for a fast path still ramping
// up: BLEST then errs toward using the slow path, as min-RTT would.

// lambda scales the estimate X; see above.
const lambda = 1.0

// maxChunk mirrors the largest write the stack makes per Pick.
const maxChunk = 64 << 10

// blest is min-RTT that may decline a slower path; it keeps no state.
type blest struct{}

// NewBLEST returns a BLEST scheduler: like [NewMinRTT], except that when
// only a slower subflow has room it may return -1 to wait for the fastest
// one rather than cause head-of-line blocking. When the fastest subflow has
// room, or there is only one subflow, or RTT, MSS or cwnd are not known,
// it behaves as min-RTT.
func NewBLEST() Scheduler { return blest{} }

func (blest) Pick(paths []Path, pending int) int {
	s := fastest(paths, true)
	if s < 0 {
		return -1
	}
	f := fastest(paths, false)
	if !faster(&paths[f], &paths[s]) || !blocks(paths, f, s, pending) {
		return s
	}
	return -1
}

// blocks reports whether sending the next chunk on path si, which is slower
// than path fi, should wait for fi. paths[fi].RTT > 0 is known.
func blocks(paths []Path, fi, si, pending int) bool {
	f, s := &paths[fi], &paths[si]
	if s.RTT <= 0 || f.MSS <= 0 || f.Cwnd <= 0 {
		return false // nothing to estimate with: min-RTT's choice
	}
	rtts := float64(s.RTT) / float64(f.RTT)
	x := (float64(f.Cwnd) + float64(f.MSS)*(rtts-1)/2) * rtts // MSS_f * (cwnd_f/MSS_f + (rtts-1)/2) * rtts

	// W - bytes_s = pending + Σ outstanding - (outstanding_s + chunk).
	chunk := min(s.Room, pending, maxChunk)
	left := float64(pending) - float64(chunk)
	for i := range paths {
		if i != si {
			left += float64(paths[i].InFlight) + float64(paths[i].Queued)
		}
	}
	return x*lambda > left
}
