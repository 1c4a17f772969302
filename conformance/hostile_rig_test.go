package conformance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/internal/hostile"
	"github.com/umptcp/umptcp/stack"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The hostile-peer rig: a live kernel<->umptcp MPTCP connection with a
// hostile.Tap between path 0's TUN device and our stack, carrying a paced
// transfer each way while crafted segments are injected.

// hostileCase is one connection setup of the hostile tests.
type hostileCase struct {
	fam          int  // index into tunFamilies / multiFamilies
	kernelServer bool // umptcp is the client
	csum         bool // DSS checksums: asked by us as client, by the kernel (sysctl) as server
	subflows     int  // 1, or 2 (the multipath rig, a join over path 1)
}

func (c hostileCase) name() string {
	return fmt.Sprintf("%s/%s/%s/%dsubflow", tunFamilies[c.fam].name,
		map[bool]string{true: "UmptcpClient", false: "UmptcpServer"}[c.kernelServer],
		map[bool]string{true: "Checksum", false: "NoChecksum"}[c.csum], c.subflows)
}

// hostileConn is one live connection under attack.
type hostileConn struct {
	t        *testing.T
	ctx      context.Context
	ours     *stack.Conn
	kernel   net.Conn
	st       *stack.Stack
	tap      *hostile.Tap // on path 0, under our stack
	ns       func() (Counters, error)
	report   func() string
	local    netip.AddrPort // our end of the initial subflow
	remote   netip.AddrPort // the kernel's end of it
	subflows int            // active subflows once set up
	xfer     *pacedTransfer
}

// newHostileConn sets up the rig and connection of c, starts the paced
// transfer and waits until the tap has learnt the initial subflow with
// DSS mappings and DATA_ACKs both ways.
func newHostileConn(t *testing.T, c hostileCase) *hostileConn {
	t.Helper()
	h := &hostileConn{t: t, subflows: c.subflows}
	wrap := func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
		h.tap = hostile.NewTap(ep)
		return h.tap
	}
	kernelOpts := RigOptions{Name: "hst", Checksum: c.csum && !c.kernelServer}
	ours := stack.Config{Checksum: c.csum && c.kernelServer}
	if c.subflows == 1 {
		u := newUmptcpRigWrapped(t, tunFamilies[c.fam], kernelOpts, ours, wrap)
		h.ctx, h.st = u.Ctx, u.stack
		h.ours, h.kernel = u.connect(t, c.kernelServer)
		h.ns = func() (Counters, error) { return Nstat(u.NS) }
		h.report = func() string {
			return fmt.Sprintf("%sour counters: %v", formatStats(h.ours.Stats()), changedMIB(h.st))
		}
		requireKernelMPTCP(t, h.kernel, c.csum)
		requireOursMPTCP(t, h.ours, h.kernel, c.csum)
	} else {
		u := newMultiRig(t, multiFamilies[c.fam], kernelOpts, ours, [2]func(gvstack.LinkEndpoint) gvstack.LinkEndpoint{wrap})
		h.ctx, h.st = u.Ctx, u.stack
		if c.kernelServer {
			h.ours, h.kernel = u.dialKernel(t)
		} else {
			h.ours, h.kernel = u.acceptKernel(t)
		}
		h.ns = func() (Counters, error) { return Nstat(u.NS) }
		h.report = func() string { return u.report(h.ours) }
		requireKernelMPTCP(t, h.kernel, c.csum)
		requireOursMPTCP(t, h.ours, h.kernel, c.csum)
		u.warmUp(t, h.ours, h.kernel)
		u.waitJoined(t, h.ours, h.kernel)
	}
	st := h.ours.Stats()
	h.local, h.remote = st.Subflows[0].Local, st.Subflows[0].Remote
	h.xfer = startPaced(h.ctx, h.ours, h.kernel)
	t.Cleanup(func() { h.xfer.abort() })
	if !poll(h.ctx, 10*time.Second, func() bool {
		f, ok := h.tap.Flow(h.local, h.remote)
		p, s := &f.Side[hostile.FromPeer], &f.Side[hostile.FromStack]
		return ok && f.Established() && p.HasMapping && s.HasMapping && p.HasDataAck && s.HasDataAck && p.HasKey && s.HasKey
	}) {
		f, _ := h.tap.Flow(h.local, h.remote)
		t.Fatalf("the tap did not learn the initial subflow %v<->%v with mappings and DATA_ACKs both ways: %v", h.local, h.remote, &f)
	}
	return h
}

// inject builds spec on the initial subflow's latest state and hands it
// to our stack as if the kernel had sent it.
func (h *hostileConn) inject(spec hostile.Spec) hostile.Flow {
	h.t.Helper()
	f, err := h.tap.Inject(h.local, h.remote, hostile.FromPeer, spec)
	require.NoError(h.t, err, "inject")
	return f
}

// state is what must not change when a spoof has no effect.
type hostileState struct {
	ours, kernel int // active subflows: ours, and the kernel's (MPTCP_INFO, additional subflows + 1)
	mptcp        bool
	mib          map[string]uint64
}

func (h *hostileConn) state() hostileState {
	s := hostileState{ours: activeSubflows(h.ours.Stats()), mptcp: h.ours.MultipathTCP(), mib: h.st.MIB()}
	if info, err := KernelMPTCPInfo(h.kernel); err == nil {
		s.kernel = int(info.Subflows) + 1
	} else {
		s.kernel = -1 // fell back or closed
	}
	return s
}

// broken reports why the connection can no longer serve as a live target
// (a transfer error, a subflow gone, a fallback), or "".
func (h *hostileConn) broken() string {
	if err := h.xfer.err(); err != nil {
		return "transfer failed: " + err.Error()
	}
	s := h.state()
	switch {
	case !s.mptcp:
		return "umptcp fell back to TCP"
	case s.ours != h.subflows:
		return fmt.Sprintf("umptcp has %d active subflows, had %d", s.ours, h.subflows)
	case s.kernel != h.subflows:
		return fmt.Sprintf("the kernel has %d subflows, had %d", s.kernel, h.subflows)
	}
	return ""
}

// finish stops the transfer and checks every byte arrived both ways and
// both ends report success.
func (h *hostileConn) finish(t *testing.T) {
	t.Helper()
	require.NoError(t, h.xfer.finish(finishTimeout), "the transfer across the spoofs\n%s", h.report())
}

// pacePeriod and paceChunk pace each direction of the transfer at about
// 3 MiB/s: it must outlive a whole series of spoofs without moving more
// than a few MiB.
const (
	pacePeriod = 5 * time.Millisecond
	paceChunk  = 16 << 10
	paceMin    = 1 << 20 // each direction sends at least this much
)

// pacedTransfer sends a deterministic stream each way (ours seed 1, the
// kernel's seed 2) until stopped, then half-closes, while each end reads
// to EOF; digests are compared at the end.
type pacedTransfer struct {
	stop      chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup
	cancelAbt func() bool
	ours, krn net.Conn

	mu    sync.Mutex
	sent  [2]Result // [0] ours->kernel, [1] kernel->ours
	got   [2]Result
	errs  [4]error // send ours, send kernel, recv kernel, recv ours
	first error
}

func startPaced(ctx context.Context, ours, kernel net.Conn) *pacedTransfer {
	p := &pacedTransfer{stop: make(chan struct{}), ours: ours, krn: kernel}
	p.cancelAbt = abortOnDone(ctx, ours, kernel)
	p.wg.Add(4)
	go p.send(0, ours, 1)
	go p.send(1, kernel, 2)
	go p.recv(0, kernel)
	go p.recv(1, ours)
	return p
}

func (p *pacedTransfer) fail(i int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs[i] = err
	if p.first == nil && err != nil {
		p.first = err
	}
}

func (p *pacedTransfer) send(dir int, c net.Conn, seed uint64) {
	defer p.wg.Done()
	h := sha256.New()
	src := Stream(seed, 1<<40)
	buf := make([]byte, paceChunk)
	var n int64
	tick := time.NewTicker(pacePeriod)
	defer tick.Stop()
	var err error
	for err == nil {
		select {
		case <-p.stop:
			if n >= paceMin {
				err = c.(HalfCloser).CloseWrite()
				p.setSent(dir, n, h)
				p.fail(dir, err)
				return
			}
		default:
		}
		<-tick.C
		io.ReadFull(src, buf)
		var w int
		w, err = c.Write(buf)
		h.Write(buf[:w])
		n += int64(w)
	}
	p.setSent(dir, n, h)
	p.fail(dir, fmt.Errorf("%s write: %w", map[int]string{0: "umptcp", 1: "kernel"}[dir], err))
}

func (p *pacedTransfer) setSent(dir int, n int64, h hash.Hash) {
	p.mu.Lock()
	p.sent[dir] = Result{N: n, Sum: sumOf(h)}
	p.mu.Unlock()
}

func (p *pacedTransfer) recv(dir int, c net.Conn) {
	defer p.wg.Done()
	r, err := Receive(c)
	p.mu.Lock()
	p.got[dir] = r
	p.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("%s read: %w", map[int]string{0: "kernel", 1: "umptcp"}[dir], err)
	}
	p.fail(2+dir, err)
}

// err returns the first error of any end so far.
func (p *pacedTransfer) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

// stopAndWait stops the senders and waits at most timeout for both ends
// to finish; a transfer that stalls is aborted, and it reports false.
func (p *pacedTransfer) stopAndWait(timeout time.Duration) bool {
	p.stopOnce.Do(func() { close(p.stop) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.cancelAbt()
		return true
	case <-time.After(timeout):
		p.abort()
		<-done
		return false
	}
}

// finish stops the senders and waits (at most timeout) for everything to
// arrive, then compares.
func (p *pacedTransfer) finish(timeout time.Duration) error {
	if !p.stopAndWait(timeout) {
		return fmt.Errorf("transfer did not finish within %v (stalled); errors: %v", timeout, p.outcome())
	}
	if err := errors.Join(p.errs[:]...); err != nil {
		return fmt.Errorf("%w (%s)", err, p.outcome())
	}
	return errors.Join(compare("umptcp->kernel", p.sent[0], p.got[0], p.sent[0].N),
		compare("kernel->umptcp", p.sent[1], p.got[1], p.sent[1].N))
}

// abort makes every blocked call of the transfer fail at once.
func (p *pacedTransfer) abort() {
	p.stopOnce.Do(func() { close(p.stop) })
	for _, c := range []net.Conn{p.ours, p.krn} {
		_ = c.SetDeadline(time.Unix(1, 0))
	}
}

// outcome summarises each end's view: what it sent and received and the
// error it got, if any.
func (p *pacedTransfer) outcome() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outcomeLocked()
}

func (p *pacedTransfer) outcomeLocked() string {
	return fmt.Sprintf("umptcp sent %d (err %v) received %d (err %v); kernel sent %d (err %v) received %d (err %v)",
		p.sent[0].N, p.errs[0], p.got[1].N, p.errs[3], p.sent[1].N, p.errs[1], p.got[0].N, p.errs[2])
}

// finishTimeout bounds the end of a paced transfer: in a healthy
// connection the last bytes and both DATA_FINs take milliseconds.
const finishTimeout = 10 * time.Second
