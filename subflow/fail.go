package subflow

import (
	"time"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Fallback after the handshake (RFC 8684 §3.7): MP_FAIL, the infinite
// mapping, and middleboxes that strip MPTCP options from data.
//
// A subflow that falls back mid-connection keeps the DSNs it had: every
// byte at subflow offset txOff or later continues the data sequence from
// txDSN (send side); every byte the peer sent without a mapping continues
// from the end of the last mapping consumed, or from an infinite mapping's
// DSN (receive side). The stack keeps its data-level machinery and simply
// writes contiguous DSNs (FallbackNext); DATA_ACK and DATA_FIN come from
// the subflow's TCP ACK and FIN (see fallbackAckLocked, FallbackFin).

// fallbackState is a subflow's §3.7 state, guarded by Subflow.mu.
type fallbackState struct {
	// mid-connection fallback: options stop (st is stateFallback)
	on     bool
	txOff  uint64 // first subflow offset sent without a DSS mapping
	txDSN  uint64 // its DSN; later bytes follow contiguously
	infTx  bool   // the segment at txOff carries an infinite mapping
	infCnt bool   // InfiniteMapTx counted
	acked  uint64 // highest subflow offset the peer's TCP acknowledged (fallback)

	// MP_FAIL sent by us (the receiver of the corrupt data, one subflow)
	failSent  bool
	failDSN   uint64
	failTries int
	failTimer *time.Timer
	answered  bool // the peer answered our MP_FAIL (its MP_FAIL or infinite mapping)
	failRx    bool // an MP_FAIL arrived (counted once per subflow)

	// receive side
	rxInf              bool   // an infinite mapping arrived: offsets from rxOff map to rxDSN on
	rxOff, rxDSN       uint64 //
	lastEnd, lastDSN   uint64 // end of the last mapping the reader consumed (offset, DSN)
	lastKnown, infRxed bool
}

// MP_FAIL retransmission on pure ACKs, until the peer answers.
const (
	mpFailRTO      = 200 * time.Millisecond
	maxMPFailTries = 5
)

// FailAction is what a subflow did about a DSS checksum failure.
type FailAction uint8

const (
	// FailReset: the subflow was reset with MP_FAIL (and MP_TCPRST); the
	// connection goes on over its other subflows, which carry again what
	// the peer never got DATA_ACKed.
	FailReset FailAction = iota + 1
	// FailFallback: MP_FAIL was sent on the only subflow; the peer falls
	// back to TCP with an infinite mapping. The failed mapping's bytes are
	// lost at the data level.
	FailFallback
)

// InfiniteFallbackAllowed reports whether the connection may still fall
// back to plain TCP on this subflow (§3.7): it is the only subflow the
// connection ever had, and it speaks MPTCP. Linux forbids it once any
// subflow joined (allow_infinite_fallback), since data sent on another
// subflow could then be missing below the fallback point.
func (s *Subflow) InfiniteFallbackAllowed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.infiniteAllowedLocked()
}

func (s *Subflow) infiniteAllowedLocked() bool {
	return s.st == stateEstablished && !s.join && !s.meta.joined.Load() && s.meta.subflows.Load() <= 1
}

// ChecksumFailed handles a mapping whose DSS checksum did not match (the
// stack's reader found it; the mapping's bytes are never delivered). With
// fallback allowed, MP_FAIL with the mapping's DSN goes to the peer and the
// subflow awaits its infinite mapping; otherwise the subflow is reset with
// MP_FAIL and MP_TCPRST "middlebox interference".
func (s *Subflow) ChecksumFailed(m Mapping, allowFallback bool) FailAction {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters.ChecksumFailures++
	mib := &s.reg.mib
	mib.Inc(DataCsumErr)
	if s.fb.failSent || s.fb.on {
		return FailFallback // a later mapping of a subflow already failing over
	}
	if allowFallback && s.infiniteAllowedLocked() {
		mib.Inc(DSSCorruptionFallback)
		s.fb.failSent, s.fb.failDSN = true, m.DSN
		s.sendMPFailLocked()
		return FailFallback
	}
	mib.Inc(DSSCorruptionReset)
	s.resetWithLocked(option.ReasonMiddleboxInterference, true, m.DSN)
	return FailReset
}

// sendMPFailLocked sends MP_FAIL on a pure ACK now and again, with
// backoff, until the peer answers (a pure ACK may be lost; TCP does not
// retransmit it). It is counted once.
func (s *Subflow) sendMPFailLocked() {
	if s.fb.failTries == 0 {
		s.reg.mib.Inc(MPFailTx)
	}
	var buf [16]byte
	o := option.MPFail{DSN: s.fb.failDSN}
	s.sendAckLocked(false, o.Append(buf[:0]))
	s.fb.failTries++
	if s.fb.failTries >= maxMPFailTries {
		return
	}
	d := mpFailRTO << (s.fb.failTries - 1)
	if s.fb.failTimer == nil {
		s.fb.failTimer = time.AfterFunc(d, s.mpFailTick)
	} else {
		s.fb.failTimer.Reset(d)
	}
}

func (s *Subflow) mpFailTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fb.answered && !s.fb.on && !s.last.closed && s.fb.failTries < maxMPFailTries {
		s.sendMPFailLocked()
	}
}

// resetWithLocked sends a RST carrying MP_TCPRST (and MP_FAIL with dsn if
// withFail) that repeats the last header gVisor sent. The stack aborts the
// gVisor endpoint afterwards.
func (s *Subflow) resetWithLocked(reason uint8, withFail bool, dsn uint64) {
	l := s.out.Load()
	if l == nil || !s.last.valid || s.last.closed {
		return
	}
	var buf [maxTCPOptions]byte
	o := buf[:0]
	if withFail {
		f := option.MPFail{DSN: dsn}
		o = f.Append(o)
		s.reg.mib.Inc(MPFailTx)
	}
	r := option.TCPRST{Reason: reason}
	o = r.Append(o)
	s.reg.mib.Inc(MPRstTx)
	s.counters.ResetsSent++
	s.last.closed = true
	l.writeSegment(s.tuple, s.last.seq, s.last.ack, header.TCPFlagRst|header.TCPFlagAck, 0, pad(o))
}

// mpFailLocked handles an MP_FAIL from the peer (§3.7). In a RST it only
// counts: the subflow ends and the stack reinjects its data elsewhere.
// Otherwise it answers our own MP_FAIL, or asks us to fall back: we echo
// MP_FAIL (Linux's detector waits for that answer and resets the subflow
// without it) and send an infinite mapping on the next new data.
func (s *Subflow) mpFailLocked(h header.TCP, f *option.MPFail) {
	if !s.fb.failRx {
		s.fb.failRx = true
		s.reg.mib.Inc(MPFailRx)
	}
	if h.Flags().Contains(header.TCPFlagRst) {
		return
	}
	if s.fb.failSent {
		s.fb.answered = true
		return
	}
	if s.fb.on || !s.infiniteAllowedLocked() {
		return // Linux ignores it too when several subflows exist
	}
	if !s.meta.checksum.Load() {
		// Only a DSS checksum failure makes a peer send MP_FAIL (Linux
		// too): without checksums this one is forged. Answering it
		// would make both ends fall back, and the peer's infinite
		// mapping, on segments it sized as plain TCP, then exceeds the
		// MTU (no room was reserved without checksums): the connection
		// stalled for good.
		return
	}
	var buf [16]byte
	echo := option.MPFail{DSN: f.DSN}
	s.reg.mib.Inc(MPFailTx)
	s.sendAckLocked(false, echo.Append(buf[:0]))
	s.enterFallbackLocked("peer sent MP_FAIL: infinite mapping", true)
}

// enterFallbackLocked stops MPTCP on an established subflow: bytes from
// the next one the stack writes on go without a mapping (the first of them
// with an infinite mapping if inf).
func (s *Subflow) enterFallbackLocked(why string, inf bool) {
	if s.fb.on {
		return
	}
	s.fb.on = true
	s.fb.infTx = inf
	s.fb.txOff, s.fb.txDSN = s.nextTxLocked()
	s.fb.acked = s.acked
	if s.fb.failTimer != nil {
		s.fb.failTimer.Stop()
	}
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	s.fallbackLocked(why)
	s.meta.poke()
}

// nextTxLocked is where the next byte the stack writes goes: its subflow
// offset and DSN.
func (s *Subflow) nextTxLocked() (off, dsn uint64) {
	if l := s.tx.live(); len(l) > 0 {
		e := l[len(l)-1]
		if e.off+e.n >= s.wOff {
			return e.off + e.n, e.dsn + e.n
		}
	}
	if s.wOff == 0 && s.written == 0 {
		return 0, s.meta.localIDSN + 1
	}
	return s.wOff, s.wDSN
}

// FellBack reports whether the subflow fell back to TCP after the
// handshake (MP_FAIL, infinite mapping, stripped options).
func (s *Subflow) FellBack() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fb.on
}

// FallbackNext returns the DSN the stack must write next on a subflow that
// fell back: its bytes carry no mapping, so the peer places them right
// after the previous ones.
func (s *Subflow) FallbackNext() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fb.on {
		return 0, false
	}
	return s.fb.txDSN + (s.wOff - s.fb.txOff), true
}

// takenFallbackLocked records bytes written after the fallback point: no
// mapping is needed (nor kept) for them.
func (s *Subflow) takenFallbackLocked(n int) {
	s.wOff += uint64(n)
	s.wDSN += uint64(n)
}

// fallbackOutLocked decides the option of a segment of a subflow that fell
// back: retransmissions below txOff keep their mapping, the segment at
// txOff carries the infinite mapping when one is due, later ones nothing.
func (s *Subflow) fallbackOutLocked(h header.TCP, payloadLen int, payloadSum uint16, dst []byte) []byte {
	if !s.issOK {
		return dst
	}
	seq := h.SequenceNumber()
	off := expand(s.sndHigh, seq-(s.iss+1))
	if end := off + uint64(payloadLen); end > s.sndHigh {
		s.sndHigh = end
	}
	if payloadLen == 0 {
		return dst
	}
	m := s.meta
	var d option.DSS
	switch {
	case off < s.fb.txOff:
		dsn, n, ok := s.tx.lookup(off)
		if !ok || n < uint64(payloadLen) {
			return dst
		}
		d.HasMapping, d.DSN64, d.DSN = true, true, dsn
		d.SSN, d.DataLen = uint32(off+1), uint16(payloadLen)
		if m.checksum.Load() {
			d.HasChecksum = true
			d.Checksum = option.DSSChecksum(dsn, d.SSN, d.DataLen, payloadSum)
		}
	case off == s.fb.txOff && s.fb.infTx:
		// §3.3.1: data-level length 0 maps the rest of the subflow; its
		// checksum field, if any, is zero.
		d.HasMapping, d.DSN64, d.DSN = true, true, s.fb.txDSN
		d.SSN = uint32(off + 1)
		d.HasChecksum = m.checksum.Load()
		if !s.fb.infCnt {
			s.fb.infCnt = true
			s.reg.mib.Inc(InfiniteMapTx)
		}
	default:
		return dst
	}
	if m.canAck.Load() {
		d.HasDataAck, d.DataAck64, d.DataAck = true, true, m.rcvNxt.Load()
	}
	return d.Append(dst)
}

// fallbackInLocked follows the peer's TCP ACK on a subflow that fell back:
// it is the DATA_ACK now.
func (s *Subflow) fallbackInLocked(h header.TCP) {
	if !s.fb.on || !s.issOK || !h.Flags().Contains(header.TCPFlagAck) {
		return
	}
	una := expand(s.sndHigh, h.AckNumber()-(s.iss+1))
	if una <= s.fb.acked || una > s.sndHigh+1 {
		return
	}
	s.fb.acked = una
	if una >= s.fb.txOff {
		dsn := s.fb.txDSN + (una - s.fb.txOff)
		if fin := s.meta.finSeq.Load(); fin != 0 && dsn > fin {
			dsn = fin
		}
		s.meta.onDataAck(dsn)
	} else if dsn, _, ok := s.tx.lookup(una); ok {
		s.meta.onDataAck(dsn)
	}
}

// infiniteMapLocked applies an infinite mapping from the peer (§3.3.1: a
// DSS mapping with data-level length 0): the peer fell back, every byte
// from the mapping's subflow sequence number on continues from its DSN.
func (s *Subflow) infiniteMapLocked(h header.TCP, d *option.DSS) {
	if !s.fb.infRxed {
		s.fb.infRxed = true
		s.reg.mib.Inc(InfiniteMapRx)
	}
	if s.fb.rxInf || !s.irsOK {
		return
	}
	off := expand(s.rcvRef, h.SequenceNumber()-(s.irs+1))
	if d.SSN != 0 {
		off = expand(s.rcvRef, d.SSN-1)
	}
	dsn := d.DSN
	if !d.DSN64 {
		dsn = expandDSN(s.meta.rcvNxt.Load(), uint32(dsn))
	}
	s.fb.rxInf, s.fb.rxOff, s.fb.rxDSN = true, off, dsn
	s.fb.answered = true
	if d.HasDataAck {
		ack := d.DataAck
		if !d.DataAck64 {
			ack = expandDSN(s.meta.sndUna.Load(), uint32(ack))
		}
		if ack <= s.meta.sndMax.Load() {
			s.meta.onDataAck(ack)
		}
	}
	s.enterFallbackLocked("peer sent an infinite mapping", false)
}

// mappingLocked returns the mapping of the byte at subflow offset off for
// the reader, with the fallback rules: after an infinite mapping its
// offsets continue its DSN; on a subflow that fell back (or awaits the
// infinite mapping after our MP_FAIL) a byte without a mapping continues
// the last mapping consumed.
func (s *Subflow) mappingLocked(off uint64) (Mapping, bool) {
	if s.fb.rxInf && off >= s.fb.rxOff {
		return s.continueLocked(off, s.fb.rxOff, s.fb.rxDSN), true
	}
	m, ok := s.rx.find(off)
	if ok {
		if m.Len > 0 {
			s.fb.lastEnd, s.fb.lastDSN, s.fb.lastKnown = m.Off+uint64(m.Len), m.DSN+uint64(m.Len), true
		}
		return m, true
	}
	if !s.fb.on && !s.fb.failSent {
		return m, false
	}
	switch {
	case s.fb.lastKnown && off >= s.fb.lastEnd:
		return s.continueLocked(off, s.fb.lastEnd, s.fb.lastDSN), true
	case !s.fb.lastKnown && !s.join:
		// Nothing mapped yet on the initial subflow: the peer's data
		// starts at its IDSN+1.
		return s.continueLocked(off, 0, s.meta.remoteIDSN+1), true
	}
	return m, false
}

// continueLocked maps off on a stretch that starts at subflow offset base
// with DSN dsn and has no end (bounded to keep 32-bit lengths).
func (s *Subflow) continueLocked(off, base, dsn uint64) Mapping {
	return Mapping{Off: off, DSN: dsn + (off - base), Len: 1 << 30}
}

// FallbackFin turns the end of the peer's byte stream on a subflow that
// fell back into the DATA_FIN (a plain TCP FIN closes the data stream too):
// off is the subflow offset where the reader stopped. It reports whether it
// applied.
func (s *Subflow) FallbackFin(off uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fb.on {
		return false
	}
	m, ok := s.mappingLocked(off)
	if !ok {
		return false
	}
	s.meta.onPeerFin(m.DSN)
	return true
}

// unmappedLocked decides about a data segment of an established subflow
// that no mapping covers. A segment with no MPTCP option at all means a
// middlebox strips them (§3.7): with one subflow the connection falls back
// to TCP and the data passes (it continues the last mapping); with several
// the subflow is reset. Anything else is dropped, as before.
func (s *Subflow) unmappedLocked(set *option.Set) verdict {
	if s.fb.failSent {
		return pass // the peer is falling back: its data may come unmapped
	}
	if set.Present != 0 {
		return drop
	}
	if s.infiniteAllowedLocked() {
		s.strippedFallbackLocked()
		return pass
	}
	s.resetWithLocked(option.ReasonMPTCPError, false, 0)
	return reset
}

// strippedFallbackLocked falls back because a middlebox removed the
// options: Linux counts MPCapableDataFallback when the first data already
// lacks them, DssFallback later.
func (s *Subflow) strippedFallbackLocked() {
	mib := &s.reg.mib
	mib.Inc(FallbackOptionsStripped)
	if !s.fb.lastKnown && len(s.rx.e) == 0 && s.rxRead == 0 {
		mib.Inc(MPCapableDataFallback)
	} else {
		mib.Inc(DssFallback)
	}
	s.enterFallbackLocked("MPTCP options stripped from data", false)
}

// strippedAckLocked notices the peer's pure ACKs losing their options
// while it acknowledges our data: a peer that fell back because our data
// arrived without options answers that way (and would never send a
// DATA_ACK again).
func (s *Subflow) strippedAckLocked(h header.TCP, payloadLen int, set *option.Set, parseErr error) {
	if payloadLen > 0 || set.Present != 0 || parseErr != nil || !s.issOK || !s.irsOK || !s.infiniteAllowedLocked() {
		return
	}
	f := h.Flags()
	if !f.Contains(header.TCPFlagAck) || f.Contains(header.TCPFlagSyn|header.TCPFlagRst) {
		return
	}
	una := expand(s.sndHigh, h.AckNumber()-(s.iss+1))
	if una <= s.acked || una == 0 {
		return
	}
	s.strippedFallbackLocked()
}

// stopFailTimerLocked is called when the subflow is closed.
func (s *Subflow) stopFailTimerLocked() {
	if s.fb.failTimer != nil {
		s.fb.failTimer.Stop()
	}
}

// infiniteMapRoom is what the MSS we announce on an MP_CAPABLE handshake
// leaves for the DSS of an infinite mapping: a DSS with an 8-byte
// DATA_ACK, an 8-byte DSN and a checksum (mptcpOverhead).
//
// Linux sizes the segments of a subflow that fell back as plain TCP ones
// (no MPTCP option), yet the data that carries its infinite mapping, which
// it sends right after falling back, gets that DSS on every segment of
// its TSO burst. When its MSS comes from the path MTU, each of them is
// that many bytes over the MTU: its own IP output refuses them (DF set:
// IpFragFails, an ICMP "fragmentation needed" for the unchanged MTU that
// TCP ignores) and the retransmissions carry the same DSS, so the
// connection stalls for good and the infinite mapping never arrives. An
// MSS announced this much lower makes the peer's MSS, rather than the
// path MTU, bound its segments, so that they fit even with that DSS. The
// infinite mapping answers our MP_FAIL, which only a DSS checksum failure
// causes: a client announces the room in every MP_CAPABLE SYN (the server
// may turn checksums on in its SYN-ACK), a server only when checksums are
// in use.
const infiniteMapRoom = mptcpOverhead

// reserveInfiniteMapRoomLocked lowers the MSS option of our MP_CAPABLE SYN
// or SYN-ACK h (in place: the layer builds the segment again from h and
// computes its checksum afresh) by infiniteMapRoom when an infinite
// mapping from the peer is possible.
func (s *Subflow) reserveInfiniteMapRoomLocked(h header.TCP) {
	if s.join || (s.role == Server && !s.meta.checksum.Load()) {
		return
	}
	lowerMSS(h.Options(), infiniteMapRoom)
}
