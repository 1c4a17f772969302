package conformance

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/internal/hostile"
	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The hostile-peer tests (issue 12): while the Linux kernel and umptcp
// move data over MPTCP, a segment forged from what the wire shows (the
// 4-tuple, sequence numbers, keys, DSNs of the initial subflow, learnt by
// a hostile.Tap) is handed to our stack as if the kernel had sent it.
//
// TestUmptcpKernelHostile: segments an off-path attacker could forge, or
// that a corrupting link could produce: out of the window, with a bad TCP
// checksum, or acknowledging data we never sent. A TCP receiver must drop
// them before looking at their options (RFC 9293 §3.10.7.4, RFC 5961,
// RFC 8684 §3: MPTCP options are only processed on acceptable segments),
// so each must have no effect at all: the transfer goes on intact, both
// ends succeed, no subflow appears or goes, nothing falls back, and none
// of our MPTCP counters that would show the option was acted on moves;
// and our stack counts the drop.

// spoof is one forged segment: its TCP flags and options, built by make
// from the flow's latest state: f, and in it what the forged sender (snd)
// and the receiver (rcv) were seen sending.
type spoof struct {
	name  string
	flags header.TCPFlags
	make  func(f *hostile.Flow, snd, rcv *hostile.Side) []hostile.Appender
}

// dataFin is a DSS whose DATA_FIN sits at dsn (a mapping of length 1 and
// SSN 0, as on a segment without data, RFC 8684 §3.3.3), with the peer's
// latest DATA_ACK beside it.
func dataFin(f *hostile.Flow, snd *hostile.Side, dsn uint64) []hostile.Appender {
	d := &option.DSS{HasDataAck: true, DataAck64: true, DataAck: snd.DataAck,
		HasMapping: true, DSN64: true, DSN: dsn, SSN: 0, DataLen: 1, DataFin: true}
	if f.Checksum() {
		hostile.SetDSSChecksum(d, nil)
	}
	return []hostile.Appender{d}
}

// spoofAddr is the address the ADD_ADDR spoofs announce: one the kernel
// could plausibly have, in its path 0 prefix.
func spoofAddr(f *hostile.Flow) netip.Addr {
	if f.V6() {
		return netip.MustParseAddr("fd77::99")
	}
	return netip.MustParseAddr("10.77.0.99")
}

// hostileSpoofs are the forged segments, each aimed at the initial subflow.
var hostileSpoofs = []spoof{
	{"RemoveAddr0", header.TCPFlagAck, func(_ *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.RemoveAddr{N: 1, IDs: [option.MaxRemoveAddrIDs]uint8{0}}}
	}},
	{"RemoveAddr1", header.TCPFlagAck, func(_ *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.RemoveAddr{N: 1, IDs: [option.MaxRemoveAddrIDs]uint8{1}}}
	}},
	{"RemoveAddr0and1", header.TCPFlagAck, func(_ *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.RemoveAddr{N: 2, IDs: [option.MaxRemoveAddrIDs]uint8{0, 1}}}
	}},
	// The DSN we expect next (our DATA_ACK) plus a little: once the
	// kernel's bytes up to it arrive, a believed DATA_FIN ends our
	// stream there, short.
	{"DataFinNextDSN", header.TCPFlagAck, func(f *hostile.Flow, snd, rcv *hostile.Side) []hostile.Appender {
		return dataFin(f, snd, rcv.DataAck+1000)
	}},
	// Inside the kernel's latest mapping: bytes already mapped would be
	// cut off.
	{"DataFinInMapping", header.TCPFlagAck, func(f *hostile.Flow, snd, _ *hostile.Side) []hostile.Appender {
		return dataFin(f, snd, snd.DSN+uint64(snd.DataLen)/2)
	}},
	{"MPFail", header.TCPFlagAck, func(_ *hostile.Flow, snd, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.MPFail{DSN: snd.DSN}}
	}},
	// MP_FASTCLOSE carries the receiver's key (RFC 8684 §3.5), here
	// wrong.
	{"MPFastcloseWrongKey", header.TCPFlagAck, func(_ *hostile.Flow, _, rcv *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.MPFastclose{Key: rcv.Key ^ 0x5a5a}}
	}},
	{"RstMPTCPRST", header.TCPFlagRst | header.TCPFlagAck, func(_ *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.TCPRST{Reason: option.ReasonMPTCPError}}
	}},
	{"AddAddrBadHMAC", header.TCPFlagAck, func(f *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.AddAddr{AddrID: 9, Addr: spoofAddr(f), HasHMAC: true, HMAC: 0x0123456789abcdef}}
	}},
	// With the HMAC right (the keys crossed the wire in clear).
	{"AddAddrValid", header.TCPFlagAck, func(f *hostile.Flow, snd, rcv *hostile.Side) []hostile.Appender {
		a := spoofAddr(f)
		hm := option.AddAddrHMAC(snd.Key, rcv.Key, 9, a, 0)
		return []hostile.Appender{&option.AddAddr{AddrID: 9, Addr: a, HasHMAC: true, HMAC: hm}}
	}},
	{"MPPrioBackup", header.TCPFlagAck, func(_ *hostile.Flow, _, _ *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.MPPrio{Backup: true}}
	}},
	{"DataAckBeyondSent", header.TCPFlagAck, func(_ *hostile.Flow, _, rcv *hostile.Side) []hostile.Appender {
		return []hostile.Appender{&option.DSS{HasDataAck: true, DataAck64: true, DataAck: rcv.MapEnd() + 1<<20}}
	}},
}

// dropCounters are the counters of our stack that must move when a
// segment is dropped at the given placement (at least one of them).
// A RST's acknowledgment number is not checked (RFC 9293 §3.10.7.4), and
// one at exactly RCV.NXT is accepted whatever it acknowledges, so the RST
// spoof of WrongAck is moved one byte into the window (SeqDelta 1): that
// makes it the blind reset of RFC 5961 §3.2, which only draws a challenge
// ACK; out of the window or in it, a RST that is not acted on may be
// counted as an invalid RST or an invalid sequence.
func dropCounters(s spoof, p hostile.Placement) []string {
	rst := s.flags.Contains(header.TCPFlagRst)
	switch {
	case p == hostile.BadChecksum:
		return []string{"TcpInCsumErrors"}
	case rst:
		return []string{"TcpExtTCPInvalidRst", "TcpExtTCPInvalidSequence"}
	case p == hostile.OutOfWindow:
		return []string{"TcpExtTCPInvalidSequence"}
	case p == hostile.WrongAck:
		return []string{"TcpExtTCPAckUnsentData"}
	}
	return nil
}

// effectCounters are our MPTCP counters that move only if a spoofed option
// was acted on (or, for the HMAC and key checks, even looked at: an
// unacceptable segment's options must not be parsed for meaning at all).
var effectCounters = []string{
	"MPTcpExtRmAddr", "MPTcpExtRmSubflow", "MPTcpExtAddAddr", "MPTcpExtEchoAddTx", "MPTcpExtAddAddrHMacFailure",
	"MPTcpExtAddAddrDrop", "MPTcpExtMPPrioRx", "MPTcpExtMPFailRx", "MPTcpExtMPFailTx", "MPTcpExtMPFastcloseRx",
	"MPTcpExtMPFastcloseBadKey", "MPTcpExtMPRstRx", "MPTcpExtMPRstTx", "MPTcpExtMPJoinSynTx",
	"MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset", "MPTcpExtInfiniteMapRx", "MPTcpExtInfiniteMapTx",
	"MPTcpExtDssFallback", "MPTcpExtDataCsumErr",
}

// offPathPlacements are the placements no receiver may act on.
var offPathPlacements = []hostile.Placement{hostile.OutOfWindow, hostile.BadChecksum, hostile.WrongAck}

// settleSpoof is how long a spoof is given to show an effect (a subflow
// closing, a join starting, the transfer failing) before the checks.
const settleSpoof = 100 * time.Millisecond

// hostileCases covers both roles, both families, checksums off and on,
// one and two subflows: one live connection each.
func hostileCases() []hostileCase {
	var cs []hostileCase
	for fam := range tunFamilies {
		for _, kernelServer := range []bool{true, false} {
			for _, csum := range []bool{false, true} {
				for _, n := range []int{1, 2} {
					cs = append(cs, hostileCase{fam, kernelServer, csum, n})
				}
			}
		}
	}
	return cs
}

// maxHostileConns bounds how many connections one case may set up: a
// spoof that takes effect breaks the connection and the next spoofs need
// a new one; beyond this many, the remaining spoofs fail unrun rather
// than stretch the run (every connection costs a namespace and ~1 s).
const maxHostileConns = 12

// TestUmptcpKernelHostile: every spoof of hostileSpoofs in every placement
// of offPathPlacements against each case of hostileCases. The spoofs of a
// case share a live connection in sequence; one that breaks it fails, and
// the next spoofs get a new connection.
func TestUmptcpKernelHostile(t *testing.T) {
	RequireRoot(t)
	type shot struct {
		s spoof
		p hostile.Placement
	}
	var shots []shot
	for _, s := range hostileSpoofs {
		for _, p := range offPathPlacements {
			shots = append(shots, shot{s, p})
		}
	}
	for _, c := range hostileCases() {
		t.Run(c.name(), func(t *testing.T) {
			next := 0
			for conn := 1; next < len(shots); conn++ {
				if conn > maxHostileConns {
					for _, sh := range shots[next:] {
						t.Run(sh.s.name+"/"+sh.p.String(), func(t *testing.T) {
							t.Fatalf("not run: %d connections were broken by earlier spoofs", maxHostileConns)
						})
					}
					return
				}
				t.Run(fmt.Sprintf("conn%d", conn), func(t *testing.T) {
					h := newHostileConn(t, c)
					for next < len(shots) {
						sh := shots[next]
						next++
						t.Run(sh.s.name+"/"+sh.p.String(), func(t *testing.T) { h.spoofNoEffect(t, sh.s, sh.p) })
						if why := h.broken(); why != "" {
							t.Logf("connection broken after %s/%v: %s; the next spoofs get a new one", sh.s.name, sh.p, why)
							return
						}
					}
					h.finish(t)
				})
			}
		})
	}
}

// spoofNoEffect injects s at placement p and checks it had no effect and
// was counted as dropped.
func (h *hostileConn) spoofNoEffect(t *testing.T, s spoof, p hostile.Placement) {
	t.Helper()
	before := h.state()
	spec := s.spec(hostile.FromPeer, p)
	if p == hostile.WrongAck && s.flags.Contains(header.TCPFlagRst) {
		spec.SeqDelta = 1 // see dropCounters
	}
	f, err := h.tap.Inject(h.local, h.remote, hostile.FromPeer, spec)
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	time.Sleep(settleSpoof)
	after := h.state()

	var problems []string
	if err := h.xfer.err(); err != nil {
		problems = append(problems, "the transfer failed: "+err.Error())
	}
	if after.ours != before.ours {
		problems = append(problems, fmt.Sprintf("our active subflows went from %d to %d", before.ours, after.ours))
	}
	if after.kernel != before.kernel {
		problems = append(problems, fmt.Sprintf("the kernel's subflows went from %d to %d", before.kernel, after.kernel))
	}
	if before.mptcp && !after.mptcp {
		problems = append(problems, "umptcp fell back to TCP")
	}
	for _, name := range effectCounters {
		if d := after.mib[name] - before.mib[name]; d != 0 {
			problems = append(problems, fmt.Sprintf("%s moved by %d (the option was acted on)", name, d))
		}
	}
	want := dropCounters(s, p)
	moved := slices.ContainsFunc(want, func(name string) bool { return after.mib[name] > before.mib[name] })
	if !moved {
		var have []string
		for _, name := range want {
			if _, ok := after.mib[name]; !ok {
				have = append(have, name+" (not exported)")
			}
		}
		problems = append(problems, fmt.Sprintf("no drop counted: none of %v moved %v", want, have))
	}
	if len(problems) > 0 {
		t.Errorf("%s %v on %v:\n  %s\nflow as built on: %v\n%s", s.name, p, h.local,
			joinLines(problems), &f, h.report())
	}
}

// spec is the hostile.Spec of s sent by dir at placement p.
func (s spoof) spec(dir hostile.Dir, p hostile.Placement) hostile.Spec {
	return hostile.Spec{Flags: s.flags, Place: p, Fill: func(f *hostile.Flow, sp *hostile.Spec) {
		sp.Options = s.make(f, &f.Side[dir], &f.Side[1-dir])
	}}
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

// kernelEffectCounters are the kernel's counters that move if it acted on
// a spoofed option.
var kernelEffectCounters = []string{
	"MPTcpExtRmAddr", "MPTcpExtRmSubflow", "MPTcpExtAddAddr", "MPTcpExtEchoAdd", "MPTcpExtMPPrioRx",
	"MPTcpExtMPFailRx", "MPTcpExtMPFastcloseRx", "MPTcpExtMPRstRx", "MPTcpExtDSSCorruptionFallback",
	"MPTcpExtDSSCorruptionReset", "MPTcpExtInfiniteMapRx",
}

// TestUmptcpKernelHostileReference: the same off-path spoofs, forged as if
// our stack had sent them, at the kernel (Tap.ToPeer). Linux validates a
// segment's sequence number, checksum and ACK before it reads its MPTCP
// options, so none has an effect there: this is the behaviour
// TestUmptcpKernelHostile asks of us, and it shows the forged segments
// are what they claim to be (a harness bug making them harmless to
// everyone would make this pass and the umptcp test pass for nothing; one
// making them acceptable would fail here).
func TestUmptcpKernelHostileReference(t *testing.T) {
	RequireRoot(t)
	for _, kernelServer := range []bool{true, false} {
		c := hostileCase{fam: 0, kernelServer: kernelServer, subflows: 1}
		t.Run(c.name(), func(t *testing.T) {
			h := newHostileConn(t, c)
			before, err := h.ns()
			require.NoError(t, err)
			for _, s := range hostileSpoofs {
				for _, p := range offPathPlacements {
					spec := s.spec(hostile.FromStack, p)
					if p == hostile.WrongAck && s.flags.Contains(header.TCPFlagRst) {
						spec.SeqDelta = 1 // see dropCounters
					}
					_, err := h.tap.Inject(h.local, h.remote, hostile.FromStack, spec)
					require.NoError(t, err, "inject %s %v", s.name, p)
					time.Sleep(10 * time.Millisecond)
				}
			}
			time.Sleep(settleSpoof)
			after, err := h.ns()
			require.NoError(t, err)
			diff := after.Diff(before)
			t.Logf("kernel counters changed: %v", NonZero(diff))
			RequireUnchanged(t, diff, kernelEffectCounters...)
			RequireIncreased(t, diff, "TcpInCsumErrors")
			require.Empty(t, h.broken(), "the connection after the spoofs")
			h.finish(t)
		})
	}
}
