package conformance

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/hostile"
)

// TestUmptcpKernelHostileInWindow: the spoofs of hostileSpoofs from an
// on-path attacker, who sees the wire and puts each segment exactly where
// the receiver expects the next one (hostile.InWindow). Such a segment can
// legitimately hurt the connection (a RST at RCV.NXT resets a subflow), so
// nothing is required of its effect except that the two ends never
// disagree: either every byte arrives intact both ways and both ends
// succeed, or both ends report an error. One end reading a clean EOF
// early (or wrong bytes) while the other believes all was delivered is a
// failure, and so is a connection that stalls.
//
// Each spoof gets its own connection (the previous one may be dead), in
// both roles, IPv4, one subflow, no checksums: what differs across the
// other cases is covered by TestUmptcpKernelHostile.
func TestUmptcpKernelHostileInWindow(t *testing.T) {
	RequireRoot(t)
	for _, kernelServer := range []bool{true, false} {
		c := hostileCase{fam: 0, kernelServer: kernelServer, subflows: 1}
		for _, s := range hostileSpoofs {
			t.Run(c.name()+"/"+s.name, func(t *testing.T) {
				h := newHostileConn(t, c)
				time.Sleep(50 * time.Millisecond) // data in flight both ways
				before := h.st.MIB()
				h.inject(s.spec(hostile.FromPeer, hostile.InWindow))
				time.Sleep(settleSpoof)
				msg := h.xfer.agree(finishTimeout)
				t.Logf("OUTCOME umptcp-receiver %s %s: %s | our counters: %s | %s", roleName(kernelServer), s.name,
					inWindowVerdict(h.xfer, msg), strings.Join(oursMovedCounters(before, h.st.MIB()), " "), h.xfer.outcome())
				if msg != "" {
					t.Errorf("%s in window: the ends disagree: %s\n%s", s.name, msg, h.report())
				}
			})
		}
	}
}

// agree stops the transfer, waits for it (at most timeout) and returns ""
// if both ends agree: both saw every byte intact and no error, or both got
// an error. Otherwise it says how they disagree.
func (p *pacedTransfer) agree(timeout time.Duration) string {
	if !p.stopAndWait(timeout) {
		return fmt.Sprintf("stalled: not finished within %v (%s)", timeout, p.outcome())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Each end's verdict: it failed if any of its calls did.
	oursErr := p.errs[0] != nil || p.errs[3] != nil
	kernelErr := p.errs[1] != nil || p.errs[2] != nil
	var msg string
	// A clean EOF must come after exactly what was sent.
	if p.errs[3] == nil {
		if err := compare("kernel->umptcp", p.sent[1], p.got[1], p.sent[1].N); err != nil {
			msg += fmt.Sprintf("umptcp read a clean EOF but: %v; ", err)
		}
	}
	// The kernel's socket reports a reset once, to whichever call comes
	// first (sock_error consumes sk_err): when its writer got the
	// ECONNRESET of an MP_FASTCLOSE, its reader then sees a plain EOF.
	// That end did fail; a short EOF counts against it only when none
	// of its calls did.
	if p.errs[2] == nil && !kernelErr {
		if err := compare("umptcp->kernel", p.sent[0], p.got[0], p.sent[0].N); err != nil {
			msg += fmt.Sprintf("the kernel read a clean EOF but: %v; ", err)
		}
	}
	if oursErr != kernelErr {
		msg += "one end failed, the other did not; "
	}
	if msg != "" {
		msg += p.outcomeLocked()
	}
	return msg
}
