package perf

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/stack"
)

// Statser is what a data stream's connection offers for per-subflow
// numbers; *stack.Conn has it.
type Statser interface {
	Stats() stack.ConnStats
}

var _ Statser = (*stack.Conn)(nil)

// Start describes a test once its streams are connected, just before data
// flows.
type Start struct {
	Client  bool      // this side is the client
	Time    time.Time // when the server said TEST_START
	Cookie  string
	Params  Params
	Control ConnInfo // the control connection
	Streams []StreamInfo
}

// ConnInfo describes one connection.
type ConnInfo struct {
	Local, Remote net.Addr
	// HasStats: the connection is a Statser, so MPTCP, FallbackReason
	// and the subflows are known.
	HasStats       bool
	MPTCP          bool
	FallbackReason string
}

// StreamInfo describes one data stream.
type StreamInfo struct {
	ID     int  // iperf3's stream ID: 1, 3, 4, 5, ... (both sides agree on it)
	Sender bool // this side sends on it
	ConnInfo
}

// Interval is one reporting interval.
type Interval struct {
	// Start and End are measured from the start of the test; omitted
	// intervals from the start of the omitted period.
	Start, End time.Duration
	Omitted    bool // within the leading period left out of the results (-O)
	Bytes      int64
	Streams    []StreamInterval
}

// StreamInterval is one stream's share of an interval.
type StreamInterval struct {
	ID       int
	Sender   bool
	Bytes    int64     // sent (Sender) or received in the interval
	Subflows []Subflow // nil unless the connection is a Statser
}

// Subflow is one subflow of a stream's MPTCP connection (or its single
// TCP connection after fallback), with the bytes it carried in an
// interval or, in a Result, over the whole test.
type Subflow struct {
	ID             int
	Local, Remote  netip.AddrPort
	Sent, Received uint64 // payload bytes on the wire, retransmissions and duplicates included
	RTT            time.Duration
	Backup, Join   bool
	State          string // "active", "stale" or "closed"
}

// Result is a finished test as this side saw it, with the peer's figures.
type Result struct {
	Start   Start
	Elapsed time.Duration // from the start of the test (after -O) to its end
	Streams []StreamResult
	CPU     CPU // this process, during the test
	PeerCPU CPU
}

// StreamResult is one stream's totals.
type StreamResult struct {
	StreamInfo
	Bytes   int64 // sent (Sender) or received by this side
	Elapsed time.Duration

	// What the peer reported for the stream: bytes it received (if this
	// side sent) or sent, over how long; retransmissions, -1 if unknown.
	PeerBytes       int64
	PeerElapsed     time.Duration
	PeerRetransmits int64

	Checksum   bool      // DSS checksums (Statser only)
	Subflows   []Subflow // totals over the test (Statser only)
	Reinjected uint64    // bytes sent again on another subflow during the test
}

// Side is one direction's totals over all streams.
type Side struct {
	Bytes   int64
	Elapsed time.Duration
}

// Bitrate is the side's throughput in bits per second.
func (s Side) Bitrate() float64 { return Bitrate(s.Bytes, s.Elapsed) }

// Totals returns what the sender sent and the receiver received over all
// streams, each over its own side's time (the longest stream's).
func (r Result) Totals() (sent, received Side) {
	for _, s := range r.Streams {
		mine, peer := Side{s.Bytes, s.Elapsed}, Side{s.PeerBytes, s.PeerElapsed}
		if !s.Sender {
			mine, peer = peer, mine
		}
		sent.Bytes += mine.Bytes
		sent.Elapsed = max(sent.Elapsed, mine.Elapsed)
		received.Bytes += peer.Bytes
		received.Elapsed = max(received.Elapsed, peer.Elapsed)
	}
	return sent, received
}

// MPTCP reports whether every data stream is known to use MPTCP.
func (r Result) MPTCP() bool {
	for _, s := range r.Streams {
		if !s.HasStats || !s.MPTCP {
			return false
		}
	}
	return len(r.Streams) > 0
}

// Bitrate returns bytes over d in bits per second (0 if d is 0).
func Bitrate(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds()
}

// sfCount is a subflow's byte counters at one moment.
type sfCount struct{ sent, recv uint64 }

// stream is one data stream of a running test.
type stream struct {
	StreamInfo
	conn  net.Conn
	stats Statser // nil: no subflow numbers

	bytes atomic.Int64 // counted bytes (sent or received while counting)

	// Owned by the reporter while it runs, then by stop.
	last       int64
	lastSF     map[int]sfCount
	base       int64 // bytes when the results' period began
	baseSF     map[int]sfCount
	baseReinj  uint64
	finalStats stack.ConnStats
}

func newStream(id int, c net.Conn, sender bool) *stream {
	s := &stream{StreamInfo: StreamInfo{ID: id, Sender: sender, ConnInfo: connInfo(c)}, conn: c}
	s.stats, _ = c.(Statser)
	return s
}

// connInfo describes c.
func connInfo(c net.Conn) ConnInfo {
	ci := ConnInfo{Local: c.LocalAddr(), Remote: c.RemoteAddr()}
	if st, ok := c.(Statser); ok {
		s := st.Stats()
		ci.HasStats, ci.MPTCP, ci.FallbackReason = true, s.MPTCP, s.FallbackReason
	}
	return ci
}

// streamID is iperf3's ID of the i-th stream (0-based): 1, then 3, 4, ...
// (iperf3 numbers the second stream from 2 plus the streams before it,
// and keeps that for compatibility).
func streamID(i int) int {
	if i == 0 {
		return 1
	}
	return i + 2
}

// run is the data phase of a test on one side: goroutines moving bytes
// on the streams, and a reporter cutting intervals.
type run struct {
	p          Params
	streams    []*stream
	block      []byte
	budget     int64 // bytes to send in all; 0: until stopped
	watchRecv  bool  // end the test once budget bytes are received (client in reverse mode)
	interval   time.Duration
	onInterval func(Interval)

	reserved atomic.Int64 // bytes of budget claimed by senders
	received atomic.Int64
	inflight atomic.Int32 // writes begun while counting, not yet counted
	counting atomic.Bool
	stopped  atomic.Bool
	stopCh   chan struct{}

	sendersLeft atomic.Int32
	sendDone    chan struct{} // closed when every sender used up the budget
	recvDone    chan struct{} // closed when budget bytes were received (watchRecv)
	recvOnce    sync.Once

	failOnce sync.Once
	failErr  error
	failed   chan struct{}

	wg      sync.WaitGroup
	repDone chan struct{}
	// omitDone is closed when the omitted period ends (-O).
	omitDone chan struct{}

	// Set by begin; then owned by the reporter, then by stop.
	t0, start, omitEnd, lastTick, end time.Time
	omitting                          bool
	cpu0, cpu1                        cpuSample
}

func newRun(p Params, streams []*stream, interval time.Duration, onInterval func(Interval)) *run {
	r := &run{p: p, streams: streams, budget: p.budget(), interval: interval, onInterval: onInterval,
		stopCh: make(chan struct{}), sendDone: make(chan struct{}), recvDone: make(chan struct{}),
		failed: make(chan struct{}), repDone: make(chan struct{}), omitDone: make(chan struct{})}
	// Random payload, as iperf3 sends, so that nothing on the way can
	// compress it; one block shared read-only by every sender.
	r.block = make([]byte, p.BlockSize)
	rand.Read(r.block)
	return r
}

// begin starts counting and moving data.
func (r *run) begin() {
	now := time.Now()
	r.t0, r.lastTick = now, now
	r.omitting = r.p.Omit > 0
	r.omitEnd = now.Add(r.p.Omit)
	r.resetBase(now, false)
	senders := 0
	for _, s := range r.streams {
		if s.Sender {
			senders++
		}
	}
	r.sendersLeft.Store(int32(senders)) // before any sender can finish
	r.counting.Store(true)
	for _, s := range r.streams {
		r.wg.Add(1)
		if s.Sender {
			go r.send(s)
		} else {
			go r.recv(s)
		}
	}
	go r.reporter()
}

// resetBase starts the results' period now: what was counted so far
// (omitted) no longer counts. With atLast, the period starts where the
// interval just reported ended, so that the intervals after it add up
// to the totals exactly.
func (r *run) resetBase(now time.Time, atLast bool) {
	r.start = now
	r.cpu0 = readCPU()
	for _, s := range r.streams {
		var st stack.ConnStats
		if s.stats != nil {
			st = s.stats.Stats()
		}
		if !atLast {
			s.last = s.bytes.Load()
			s.lastSF = countSF(st)
		}
		s.base, s.baseSF, s.baseReinj = s.last, copySF(s.lastSF), st.Reinjected
	}
}

func countSF(st stack.ConnStats) map[int]sfCount {
	m := make(map[int]sfCount, len(st.Subflows))
	for _, sf := range st.Subflows {
		m[sf.ID] = sfCount{sf.BytesSent, sf.BytesReceived}
	}
	return m
}

func copySF(m map[int]sfCount) map[int]sfCount {
	c := make(map[int]sfCount, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// fail ends the test with err (the first one wins).
func (r *run) fail(err error) {
	r.failOnce.Do(func() {
		r.failErr = err
		close(r.failed)
	})
}

// streamErr reports a stream's I/O error unless the test is over (then
// the peer closing its streams is expected).
func (r *run) streamErr(s *stream, op string, err error) {
	if r.stopped.Load() {
		return
	}
	if errors.Is(err, io.EOF) {
		r.fail(fmt.Errorf("stream %d: closed by the peer during the test", s.ID))
		return
	}
	r.fail(fmt.Errorf("stream %d: %s: %w", s.ID, op, err))
}

func (r *run) send(s *stream) {
	defer r.wg.Done()
	var sent int64 // for pacing
	var pace *time.Timer
	for !r.stopped.Load() {
		n := len(r.block)
		if r.budget > 0 {
			end := r.reserved.Add(int64(n))
			if over := end - r.budget; over > 0 {
				n -= int(min(over, int64(n)))
				if n == 0 {
					if r.sendersLeft.Add(-1) == 0 {
						close(r.sendDone)
					}
					return
				}
			}
		}
		if r.p.Bitrate > 0 {
			// Pace each stream to Bitrate on average since the start,
			// as iperf3's -b does for TCP.
			due := r.t0.Add(time.Duration(float64(sent) * 8 / float64(r.p.Bitrate) * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if pace == nil {
					pace = time.NewTimer(wait)
				} else {
					pace.Reset(wait)
				}
				select {
				case <-pace.C:
				case <-r.stopCh:
					return
				}
			}
		}
		// A write that began while counting counts whole, even if the
		// test ends meanwhile: its bytes reach the peer before TEST_END
		// does, and the peer counts them. stop waits for such writes
		// (inflight is raised before counting is read, so that stop,
		// which clears counting before reading inflight, sees it).
		r.inflight.Add(1)
		counting := r.counting.Load()
		w, err := s.conn.Write(r.block[:n])
		sent += int64(w)
		if counting {
			s.bytes.Add(int64(w))
		}
		r.inflight.Add(-1)
		if err != nil {
			r.streamErr(s, "write", err)
			return
		}
	}
}

// recv reads until the stream ends. After the test it keeps reading
// (uncounted) so that a sending peer never blocks before it sees the end.
func (r *run) recv(s *stream) {
	defer r.wg.Done()
	buf := make([]byte, r.p.BlockSize)
	for {
		n, err := s.conn.Read(buf)
		if n > 0 && r.counting.Load() {
			s.bytes.Add(int64(n))
			if r.watchRecv && r.budget > 0 && r.received.Add(int64(n)) >= r.budget {
				r.recvOnce.Do(func() { close(r.recvDone) })
			}
		}
		if err != nil {
			r.streamErr(s, "read", err)
			return
		}
	}
}

// reporter cuts the intervals, and ends the omitted period.
func (r *run) reporter() {
	defer close(r.repDone)
	var t *time.Timer
	// Ticks are due at fixed steps from the start (or from the end of
	// the omitted period), as iperf3's periodic timers are, so that a
	// late tick does not shift the ones after it.
	due := r.lastTick
	for {
		var next time.Time
		if r.interval > 0 {
			due = due.Add(r.interval)
			for !due.After(r.lastTick) { // skip ticks missed entirely
				due = due.Add(r.interval)
			}
			next = due
		}
		if r.omitting && (next.IsZero() || r.omitEnd.Before(next)) {
			next = r.omitEnd
		}
		if next.IsZero() {
			<-r.stopCh
			return
		}
		if t == nil {
			t = time.NewTimer(time.Until(next))
		} else {
			t.Reset(time.Until(next))
		}
		select {
		case <-r.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
		now := time.Now()
		if r.omitting && !now.Before(r.omitEnd) {
			if r.interval > 0 {
				r.emit(now, true)
			}
			r.omitting = false
			r.resetBase(now, r.interval > 0)
			r.lastTick, due = now, now
			close(r.omitDone)
			continue
		}
		r.emit(now, r.omitting)
		r.lastTick = now
	}
}

// emit reports the interval from lastTick to now.
func (r *run) emit(now time.Time, omitted bool) {
	ref := r.start
	if omitted {
		ref = r.t0
	}
	iv := Interval{Start: r.lastTick.Sub(ref), End: now.Sub(ref), Omitted: omitted}
	for _, s := range r.streams {
		cur := s.bytes.Load()
		si := StreamInterval{ID: s.ID, Sender: s.Sender, Bytes: cur - s.last}
		s.last = cur
		if s.stats != nil {
			st := s.stats.Stats()
			si.Subflows = subflowDeltas(st, s.lastSF)
			s.lastSF = countSF(st)
		}
		iv.Bytes += si.Bytes
		iv.Streams = append(iv.Streams, si)
	}
	if r.onInterval != nil {
		r.onInterval(iv)
	}
}

// subflowDeltas lists st's subflows with the bytes each carried since
// the counters in prev (a subflow not in prev counts from zero).
func subflowDeltas(st stack.ConnStats, prev map[int]sfCount) []Subflow {
	out := make([]Subflow, 0, len(st.Subflows))
	for _, sf := range st.Subflows {
		p := prev[sf.ID]
		out = append(out, Subflow{ID: sf.ID, Local: sf.Local, Remote: sf.Remote,
			Sent: sf.BytesSent - min(p.sent, sf.BytesSent), Received: sf.BytesReceived - min(p.recv, sf.BytesReceived),
			RTT: sf.RTT, Backup: sf.Backup, Join: sf.Join, State: sf.State})
	}
	return out
}

// stop ends counting (idempotent): data moved from now on does not
// count. It reports the last, partial interval unless it is a sliver
// without data (a common artefact of the control message racing the
// data, which iperf3 also drops).
func (r *run) stop() {
	if r.stopped.Swap(true) {
		return
	}
	r.counting.Store(false)
	close(r.stopCh)
	<-r.repDone
	r.end = time.Now() // not before: the reporter may have cut an interval meanwhile
	// Let writes begun while counting finish (the peer still reads: it
	// has not seen the end yet), so that the last interval and the
	// totals include them. A write stuck longer is left out.
	for deadline := time.Now().Add(time.Second); r.inflight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	r.cpu1 = readCPU()
	if r.omitting { // the test ended within the omitted period
		r.omitting = false
		r.start = r.t0
	}
	for _, s := range r.streams {
		if s.stats != nil {
			s.finalStats = s.stats.Stats()
		}
	}
	if r.interval > 0 {
		iv := r.end.Sub(r.lastTick)
		var moved bool
		for _, s := range r.streams {
			moved = moved || s.bytes.Load() != s.last
		}
		if iv >= r.interval/10 || moved {
			r.emit(r.end, false)
		}
	}
}

// results returns this side's totals (after stop).
func (r *run) results() []StreamResult {
	var out []StreamResult
	for _, s := range r.streams {
		sr := StreamResult{StreamInfo: s.StreamInfo, Bytes: s.bytes.Load() - s.base, Elapsed: r.end.Sub(r.start), PeerRetransmits: -1}
		if s.stats != nil {
			st := s.finalStats
			sr.MPTCP, sr.FallbackReason, sr.Checksum = st.MPTCP, st.FallbackReason, st.Checksum
			sr.Subflows = subflowDeltas(st, s.baseSF)
			sr.Reinjected = st.Reinjected - min(s.baseReinj, st.Reinjected)
		}
		out = append(out, sr)
	}
	return out
}

// wireResults is this side's results message.
func (r *run) wireResults(sender bool) wireResults {
	cpu := r.cpu0.until(r.cpu1)
	w := wireResults{CPUTotal: cpu.Total, CPUUser: cpu.User, CPUSystem: cpu.System}
	// iperf3 sends -1 from a receiving side; 0 from a sender that cannot
	// count retransmissions, which tells the peer to leave them out.
	if !sender {
		w.SenderHasRetransmits = -1
	}
	w.Streams = []wireStream{}
	for _, s := range r.streams {
		w.Streams = append(w.Streams, wireStream{ID: s.ID, Bytes: s.bytes.Load() - s.base, Retransmits: -1,
			EndTime: r.end.Sub(r.start).Seconds()})
	}
	return w
}

// result assembles the Result, merging the peer's figures by stream ID.
func (r *run) result(start Start, peer PeerResults) (Result, error) {
	res := Result{Start: start, Elapsed: r.end.Sub(r.start), Streams: r.results(), CPU: r.cpu0.until(r.cpu1), PeerCPU: peer.CPU}
	for _, ps := range peer.Streams {
		found := false
		for i := range res.Streams {
			if res.Streams[i].ID == ps.ID {
				res.Streams[i].PeerBytes, res.Streams[i].PeerElapsed, res.Streams[i].PeerRetransmits = ps.Bytes, ps.Elapsed, ps.Retransmits
				found = true
			}
		}
		if !found {
			return res, fmt.Errorf("the peer's results name stream %d, which this test does not have", ps.ID)
		}
	}
	return res, nil
}

// CPU is processor use during a test, in percent of the wall-clock time
// (iperf3's cpu_util: more than 100 when several cores are busy).
type CPU struct {
	Total, User, System float64
}

// cpuSample is the process's CPU time at one moment.
type cpuSample struct {
	wall      time.Time
	user, sys time.Duration
}

func (a cpuSample) until(b cpuSample) CPU {
	wall := b.wall.Sub(a.wall).Seconds()
	if wall <= 0 || a.wall.IsZero() {
		return CPU{}
	}
	u := (b.user - a.user).Seconds() / wall * 100
	s := (b.sys - a.sys).Seconds() / wall * 100
	return CPU{Total: u + s, User: u, System: s}
}
