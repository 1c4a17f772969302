package stack

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/scheduler"
	"github.com/umptcp/umptcp/subflow"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// path is one subflow of a connection: a gVisor TCP endpoint and its MPTCP
// context. Its reader goroutine moves the bytes it receives to the
// connection; the connection's sender goroutine writes into it.
type path struct {
	id            int
	sf            *subflow.Subflow // nil on a plain-TCP connection
	ep            tcpip.Endpoint
	wq            *waiter.Queue
	tc            *gonet.TCPConn
	local, remote netip.AddrPort

	readerDone chan struct{}
	ended      atomic.Bool // the reader stopped: reset, FIN, or error
	isStale    atomic.Bool // mirrors stale, for Stats
	endErr     atomic.Pointer[error]
	closeWhy   atomic.Pointer[string] // we reset it, and why
	onPurpose  atomic.Bool            // ... because of a command or an address removal, not a failure
	wake       waiter.Entry           // pokes the sender when the endpoint errs or hangs up

	// owned by the sender goroutine
	sent          dsnRanges // DSN ranges handed to this subflow, not yet DATA_ACKed
	redNxt        uint64    // redundant scheduling: the next DSN this subflow sends
	stale         bool      // repeated RTOs without progress: no new data
	staleSince    time.Time // when it became stale
	zeroWnd       bool      // the peer's window is closed (see state)
	retired       bool      // ended, and its data was reinjected
	finSent       bool      // DATA_FIN announced on it
	progAcked     uint64    // subflow-level acked offset at the last progress
	goodAt        time.Time // the last progress: bytes acknowledged, or nothing outstanding
	progRTOs      uint64    // RTO count at the last progress
	seenRTOs      uint64    // RTO count at the last look
	rtoReinjected bool      // its data went out again at a timeout since its last progress
	info          scheduler.Path
	infoAt        time.Time
}

func newPath(id int, sf *subflow.Subflow, ep tcpip.Endpoint, wq *waiter.Queue) *path {
	tc := gonet.NewTCPConn(wq, ep)
	p := &path{id: id, sf: sf, ep: ep, wq: wq, tc: tc, readerDone: make(chan struct{}), goodAt: time.Now()}
	if a, ok := tc.LocalAddr().(*net.TCPAddr); ok {
		p.local = unmapAP(a.AddrPort())
	}
	if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		p.remote = unmapAP(a.AddrPort())
	}
	return p
}

// rtoCount is how many times the endpoint's retransmission timer expired.
func (p *path) rtoCount() uint64 {
	if st, ok := p.ep.Stats().(*tcp.Stats); ok {
		return st.SendErrors.Timeouts.Value()
	}
	return 0
}

// state refreshes what the scheduler needs to know: RTT and congestion
// window from gVisor, outstanding bytes from the option layer. limit is how
// far beyond what the peer acknowledged the subflow may be filled.
func (p *path) state() (sp scheduler.Path, written, acked uint64) {
	var info tcpip.TCPInfoOption
	p.ep.GetSockOpt(&info)
	pr := p.sf.Progress()
	mss := pr.MSS
	if mss <= 0 {
		mss = 1400 // nothing sent yet: a typical Ethernet MSS
	}
	cwnd := int(info.SndCwnd) * mss
	outstanding := int(pr.Written - pr.Acked)
	// Two congestion windows keep the pipe full while the next ACKs come
	// back; more would only queue bytes behind a slow subflow's window.
	limit := max(2*cwnd, minPathQueue)
	sp = scheduler.Path{
		ID:       p.id,
		RTT:      info.RTT,
		RTTVar:   info.RTTVar,
		Cwnd:     cwnd,
		MSS:      mss,
		InFlight: int(pr.Sent - pr.Acked),
		Queued:   int(pr.Written - pr.Sent),
		Room:     max(limit-outstanding, 0),
		Backup:   pr.Backup,
	}
	written, acked = pr.Written, pr.Acked
	// A closed window is the peer's flow control (its application does
	// not read): the timeouts gVisor counts meanwhile are window probes.
	p.zeroWnd = pr.PeerWindow < uint64(mss)
	return sp, written, acked
}

// minPathQueue is the least a subflow may hold unacknowledged, whatever its
// congestion window says (a fresh subflow starts with 10 segments).
const minPathQueue = 64 << 10

// dsnRange is a half-open range of data sequence numbers.
type dsnRange struct{ start, end uint64 }

// dsnRanges is an ordered list of ranges; adjacent ones are merged, so a
// subflow that sends in order keeps a single entry.
type dsnRanges struct{ r []dsnRange }

func (d *dsnRanges) add(start, end uint64) {
	if n := len(d.r); n > 0 && d.r[n-1].end == start {
		d.r[n-1].end = end
		return
	}
	d.r = append(d.r, dsnRange{start, end})
}

// trim forgets everything below una (DATA_ACKed). Ranges are mostly in
// order, but a reinjection can add a lower one after higher ones.
func (d *dsnRanges) trim(una uint64) {
	out := d.r[:0]
	for _, r := range d.r {
		if r.end <= una {
			continue
		}
		r.start = max(r.start, una)
		out = append(out, r)
	}
	d.r = out
}

// take moves every range into dst and empties d.
func (d *dsnRanges) take(dst []dsnRange) []dsnRange {
	dst = append(dst, d.r...)
	d.r = d.r[:0]
	return dst
}
