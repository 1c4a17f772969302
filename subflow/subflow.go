package subflow

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Role says which side opened the subflow.
type Role uint8

const (
	Client Role = iota
	Server
)

type state uint8

const (
	stateSynSent     state = iota // client: SYN with MP_CAPABLE sent
	stateSynReceived              // server: SYN with MP_CAPABLE seen, SYN-ACK answers it
	stateEstablished              // both keys known: MPTCP in use
	stateFallback                 // plain TCP from now on (§3.7)
	stateFailed                   // a join that failed: reset, never used
)

// Tuple identifies a subflow: our address and port, the peer's.
type Tuple struct {
	Local  netip.AddrPort
	Remote netip.AddrPort
}

// Subflow is the MPTCP context of one gVisor TCP endpoint.
//
// mu guards every field below it; it is taken on the per-packet path (by the
// Layer) and by the stack's reader and writer, never while calling out.
type Subflow struct {
	tuple Tuple
	role  Role
	meta  *Meta
	reg   *Registry

	// out is the link this subflow's packets leave on: the one its first
	// SYN left or arrived on. On a stack with several links gVisor may
	// route a server subflow's packets (whose address belongs to another
	// link) elsewhere; the layer sends them here instead, so that each
	// subflow stays on its path.
	out     atomic.Pointer[Layer]
	adopted atomic.Bool // a connection owns it (see Adopt)
	pending atomic.Bool // a server handshake waiting for its third ACK (Registry.pending)
	born    time.Time   // server: when its SYN arrived (set at creation)

	// established is closed when the subflow leaves the handshake: MPTCP
	// in use, fallen back, or (a join) failed.
	established chan struct{}
	// ready is closed when the subflow may carry data: at establishment,
	// except for a joining client, which waits until the peer acknowledged
	// its third ACK (§3.2). Closed on failure too.
	ready chan struct{}

	// set at creation, then read-only
	join       bool   // an MP_JOIN subflow
	localNonce uint32 // join: our random number
	forgotten  bool   // guarded by reg.mu: removed from the registry

	mu           sync.Mutex
	st           state
	fallbackWhy  string
	fullyEstab   bool   // client: the server's DSS arrived, MP_CAPABLE may stop
	iss, irs     uint32 // initial sequence numbers, ours and the peer's
	issOK, irsOK bool
	tx           txMap
	rx           rxMap
	written      uint64 // bytes the stack has handed to the endpoint
	wDSN, wOff   uint64 // the write in progress: next DSN and subflow offset (WillWrite, Taken)
	sndHigh      uint64 // end of the highest data offset seen leaving
	rcvRef       uint64 // reference for expanding inbound sequence numbers
	rxRead       uint64 // subflow offset the stack's reader has reached
	last         lastHeader
	sentAck      uint64 // DATA_ACK last put on the wire
	ackTimer     *time.Timer
	hsTimer      *time.Timer // server: forgets a handshake that never completes
	ackArmed     bool
	finTimer     *time.Timer
	finTries     int
	counters     Counters

	// join state
	remoteNonce   uint32
	localID       uint8
	remoteID      uint8
	localBackup   bool // we asked for backup (MP_JOIN B bit, MP_PRIO)
	peerBackup    bool // the peer asked for backup
	readyClosed   bool
	failWhy       string
	joinTimer     *time.Timer // client: retransmits the third ACK
	joinTries     int
	acked         uint64        // subflow offset the peer acknowledged
	maxSeg        int           // largest payload sent: the effective MSS
	peerWS        uint8         // the peer's window scale shift
	lastWnd       uint16        // window field of the segment being processed
	peerRstReason int           // MP_TCPRST reason of the peer's reset; -1 if none
	fb            fallbackState // §3.7: MP_FAIL, infinite mapping, stripped options (fail.go)

	rst  rstState // what our RSTs say (fastclose.go)
	view tcpView  // the subflow's TCP sequence space, as the layer saw it (validate.go)
}

// lastHeader is what the last segment gVisor sent on this subflow said; a
// pure ACK of our own repeats it so that the peer's TCP sees nothing new.
type lastHeader struct {
	valid  bool
	seq    uint32 // sequence number of the next byte gVisor will send
	ack    uint32
	wnd    uint16
	hasTS  bool
	tsVal  uint32
	tsEcr  uint32
	closed bool // gVisor sent FIN or RST; no more pure ACKs of ours
}

// Counters are per-subflow event counts, for statistics and tests.
type Counters struct {
	SegmentsOut, SegmentsIn   uint64
	BytesOut, BytesIn         uint64 // payload bytes, retransmissions included
	AcksSent                  uint64 // pure ACKs of our own (DATA_ACK, DATA_FIN)
	MalformedOptions          uint64 // MPTCP options that did not parse
	ImplausibleDSS            uint64 // DSS options that parsed but made no sense
	SegmentsDropped           uint64 // inbound segments dropped: malformed options or unmapped data
	UnmappedSegments          uint64 // data segments with no mapping to send
	ChecksumFailures          uint64
	SACKBlocksTrimmed         uint64
	DataFinSent, DataFinRecvd uint64
	JoinAcksSent              uint64 // MP_JOIN third ACKs retransmitted (client) or answered (server)
	SegmentsSplit             uint64 // segments sent as several, one per DSS mapping
	ResetsSent                uint64 // RSTs with MP_TCPRST of our own
	NotAcceptable             uint64 // inbound segments TCP does not accept: options ignored (validate.go)
}

func newSubflow(reg *Registry, t Tuple, role Role, meta *Meta) *Subflow {
	return &Subflow{tuple: t, role: role, meta: meta, reg: reg, established: make(chan struct{}), ready: make(chan struct{}), peerRstReason: -1}
}

// Adopt marks the subflow as owned by a connection: closing its listener
// no longer forgets it.
func (s *Subflow) Adopt() { s.adopted.Store(true) }

// Tuple returns the subflow's addresses.
func (s *Subflow) Tuple() Tuple { return s.tuple }

// Meta returns the connection-level state shared by the subflows.
func (s *Subflow) Meta() *Meta { return s.meta }

// Established is closed once the handshake decided: MPTCP or fallback.
func (s *Subflow) Established() <-chan struct{} { return s.established }

// MPTCP reports whether the subflow speaks MPTCP (false after fallback) and,
// when it does not, why.
func (s *Subflow) MPTCP() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st == stateEstablished, s.fallbackWhy
}

// Counters returns a snapshot of the subflow's counters.
func (s *Subflow) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// Fallback turns the subflow into plain TCP, e.g. when the handshake
// completed without MP_CAPABLE. It is idempotent.
func (s *Subflow) Fallback(why string) {
	s.mu.Lock()
	s.fallbackLocked(why)
	s.mu.Unlock()
}

func (s *Subflow) fallbackLocked(why string) {
	if s.st == stateFallback {
		return
	}
	s.stopHandshakeTimerLocked()
	wasHandshake := s.st != stateEstablished
	s.st = stateFallback
	s.fallbackWhy = why
	if wasHandshake {
		close(s.established)
	}
	s.readyLocked()
}

// readyLocked lets the stack put data on the subflow.
func (s *Subflow) readyLocked() {
	if !s.readyClosed {
		s.readyClosed = true
		close(s.ready)
		s.meta.poke()
	}
}

func (s *Subflow) establishLocked() {
	if s.st == stateEstablished || s.st == stateFallback {
		return
	}
	s.stopHandshakeTimerLocked()
	s.st = stateEstablished
	close(s.established)
	if s.join {
		s.meta.joined.Store(true) // no infinite-mapping fallback from now on
	}
	if !s.join || s.role == Server {
		s.readyLocked()
	}
}

// WillWrite announces that the stack's next Write into the endpoint carries
// DSNs from dsn on. The mapping is recorded by Taken as gVisor copies the
// bytes, which it does before it queues (and can send) any of them; so
// every segment finds its mapping, and the mapping covers exactly what the
// endpoint took. Wrote ends the write.
func (s *Subflow) WillWrite(dsn uint64) {
	s.mu.Lock()
	s.wDSN, s.wOff = dsn, s.written
	s.mu.Unlock()
}

// Taken records that the endpoint copied n more bytes of the current write.
func (s *Subflow) Taken(n int) {
	s.mu.Lock()
	if s.fb.on {
		s.takenFallbackLocked(n)
		end := s.wDSN
		s.mu.Unlock()
		s.meta.noteSent(end)
		return
	}
	limit := uint64(maxMapping)
	if s.maxSeg > 0 {
		limit = maxMapping / uint64(s.maxSeg) * uint64(s.maxSeg)
	}
	s.tx.add(s.wOff, s.wDSN, uint64(n), s.sndHigh, limit)
	s.wOff += uint64(n)
	s.wDSN += uint64(n)
	end := s.wDSN
	s.mu.Unlock()
	s.meta.noteSent(end)
}

// Wrote reports that the endpoint accepted n bytes of the current write
// (all it took: gVisor copies exactly what it queues).
func (s *Subflow) Wrote(n int) {
	s.mu.Lock()
	s.written += uint64(n)
	s.mu.Unlock()
}

// MappingAt returns the peer's mapping of the byte at subflow offset off
// (0 is the first data byte the peer sent on this subflow).
func (s *Subflow) MappingAt(off uint64) (Mapping, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rxRead = off
	return s.mappingLocked(off)
}

// CountChecksumFailure records a DSS checksum mismatch found by the reader.
func (s *Subflow) CountChecksumFailure() {
	s.mu.Lock()
	s.counters.ChecksumFailures++
	s.mu.Unlock()
}

func (s *Subflow) stopHandshakeTimerLocked() {
	if s.hsTimer != nil {
		s.hsTimer.Stop()
		s.hsTimer = nil
	}
	if s.pending.CompareAndSwap(true, false) {
		if s.join {
			s.meta.halfOpenN.Add(-1)
		} else {
			s.reg.pending.Add(-1)
		}
	}
}

// Close forgets the subflow: its 4-tuple gets no more MPTCP options.
func (s *Subflow) Close() {
	s.mu.Lock()
	s.stopHandshakeTimerLocked()
	s.stopFailTimerLocked()
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	if s.finTimer != nil {
		s.finTimer.Stop()
	}
	if s.joinTimer != nil {
		s.joinTimer.Stop()
	}
	s.mu.Unlock()
	s.reg.remove(s)
}

// txMapSlack is how far behind the subflow's acknowledged point send
// mappings are kept.
const txMapSlack = 1 << 20

// option space of a TCP header
const maxTCPOptions = 40

// outbound decides the MPTCP option for a segment gVisor is sending and
// appends it to dst. payloadSum is the one's-complement sum of the payload
// (needed only with DSS checksums). A data segment whose payload straddles
// several send mappings gets no option: outbound returns the lengths of
// the runs (appended to runs) that the segment must be split into, and
// changes nothing.
func (s *Subflow) outbound(h header.TCP, payloadLen int, payloadSum uint16, dst []byte, runs []int) ([]byte, []int) {
	flags := h.Flags()
	seq := h.SequenceNumber()
	s.mu.Lock()
	defer s.mu.Unlock()
	if payloadLen > 0 && (s.st == stateEstablished || s.fb.on) && s.issOK && !flags.Contains(header.TCPFlagSyn) {
		off := expand(s.sndHigh, seq-(s.iss+1))
		if _, n, ok := s.tx.lookup(off); ok && n < uint64(payloadLen) {
			return dst, s.runsLocked(off, payloadLen, runs)
		}
	}
	s.view.noteOut(h, payloadLen)
	s.counters.SegmentsOut++
	s.counters.BytesOut += uint64(payloadLen)
	if payloadLen > s.maxSeg {
		s.maxSeg = payloadLen
	}

	if flags.Contains(header.TCPFlagSyn) {
		s.iss, s.issOK = seq, true
		switch {
		case s.st == stateSynSent && !flags.Contains(header.TCPFlagAck):
			if s.join {
				return s.joinSynOption(dst), nil
			}
			s.reserveInfiniteMapRoomLocked(h)
			o := option.MPCapable{Version: 1, Flags: s.mpcFlags(), Form: option.MPCSyn}
			return o.Append(dst), nil
		case s.st == stateSynReceived && flags.Contains(header.TCPFlagAck):
			if s.join {
				s.noteSynAck(h)
				return s.joinSynAckOption(dst), nil
			}
			// A server that sends nothing after its SYN-ACK may still
			// need a pure ACK of its own (an ADD_ADDR, a DATA_ACK).
			s.noteSynAck(h)
			s.reserveInfiniteMapRoomLocked(h)
			o := option.MPCapable{Version: 1, Flags: s.mpcFlags(), SenderKey: s.meta.localKey, Form: option.MPCSynAck}
			return o.Append(dst), nil
		}
		return dst, nil
	}
	if flags.Contains(header.TCPFlagRst) {
		s.last.closed = true
		return s.rstOptionsLocked(dst), nil
	}
	if s.fb.on {
		return s.fallbackOutLocked(h, payloadLen, payloadSum, dst), nil
	}
	if s.st != stateEstablished || !s.issOK {
		return dst, nil
	}

	off := expand(s.sndHigh, seq-(s.iss+1))
	next := seq + uint32(payloadLen)
	if flags.Contains(header.TCPFlagFin) {
		next++
		s.last.closed = true
	}
	if end := off + uint64(payloadLen); end > s.sndHigh {
		s.sndHigh = end
	}
	s.noteLast(h, next)
	m := s.meta
	if s.join && s.role == Client && !s.readyClosed && payloadLen == 0 {
		return s.joinAckOption(dst), nil // the third ACK, until the peer acknowledged it
	}

	// §3.1: the third ACK and the first data segment of the client carry
	// MP_CAPABLE with both keys until the server's first DSS shows that it
	// has them.
	// With several subflows the first data of this one need not be the
	// connection's first byte (DSN IDSN+1, which that form implies); then
	// a DSS maps it (a join succeeded, so the server has our key).
	if s.role == Client && !s.fullyEstab && off == 0 && (payloadLen == 0 || s.firstDataIsIDSN(m)) {
		o := option.MPCapable{Version: 1, Flags: s.mpcFlags(), SenderKey: m.localKey, ReceiverKey: m.remoteKey, Form: option.MPCAck}
		if payloadLen > 0 {
			o.Form = option.MPCAckData
			o.DataLen = uint16(payloadLen)
			if e, ok := s.tx.entry(0); ok && e.n >= uint64(payloadLen) {
				o.DataLen = uint16(e.n) // the whole first mapping, as a DSS would
			}
			if m.checksum.Load() {
				o.DataLen = uint16(payloadLen)
				o.Form = option.MPCAckDataCsum
				o.Checksum = option.DSSChecksum(m.localIDSN+1, 1, uint16(payloadLen), payloadSum)
			}
		}
		return o.Append(dst), nil
	}

	var d option.DSS
	if m.canAck.Load() {
		d.HasDataAck, d.DataAck64, d.DataAck = true, true, m.rcvNxt.Load()
		s.sentAck = d.DataAck
	}
	if payloadLen > 0 {
		dsn, n, ok := s.tx.lookup(off)
		if !ok || n < uint64(payloadLen) {
			// A segment without a complete mapping cannot be sent as
			// MPTCP data; this is a bug in the stack's bookkeeping.
			if off+uint64(payloadLen) > s.acked {
				s.counters.UnmappedSegments++
			}
			// Else gVisor resends bytes the peer acknowledged in a segment
			// we saw but gVisor has not processed yet (its TCP runs behind
			// the link under load) and whose mapping is gone: the peer's
			// TCP drops them as old; no mapping is needed.
		} else if m.checksum.Load() {
			// A checksum covers a mapping's every byte, and only this
			// segment's are at hand: one mapping per segment.
			d.HasMapping, d.DSN64, d.DSN = true, true, dsn
			d.SSN = uint32(off + 1)
			d.DataLen = uint16(payloadLen)
			d.HasChecksum = true
			d.Checksum = option.DSSChecksum(dsn, d.SSN, d.DataLen, payloadSum)
		} else {
			// The write's whole mapping, the same on each of its
			// segments (as Linux maps a TSO skb): consecutive segments
			// then carry identical options, which TUN offload merges.
			e, _ := s.tx.entry(off)
			d.HasMapping, d.DSN64, d.DSN = true, true, e.dsn
			d.SSN = uint32(e.off + 1)
			d.DataLen = uint16(e.n)
		}
	} else if fin := m.finSeq.Load(); fin != 0 && s.sndHigh >= s.written && !m.DataFinAcked() {
		s.addDataFin(&d, fin-1)
	}
	if !d.HasDataAck && !d.HasMapping {
		return dst, nil
	}
	return d.Append(dst), nil
}

// notePeerWS records the window scale option of the peer's SYN or SYN-ACK.
// We always offer window scaling, so the peer's option decides.
func (s *Subflow) notePeerWS(h header.TCP) {
	if o := findOption(h.Options(), header.TCPOptionWS); len(o) == 3 {
		s.peerWS = min(o[2], 14)
	}
}

// firstDataIsIDSN reports whether the first data byte of this subflow
// carries the connection's first DSN.
func (s *Subflow) firstDataIsIDSN(m *Meta) bool {
	dsn, _, ok := s.tx.lookup(0)
	return ok && dsn == m.localIDSN+1
}

// MarkFullyEstablished records that the peer has our key (a join it
// accepted proves it): the initial subflow stops repeating MP_CAPABLE.
func (s *Subflow) MarkFullyEstablished() {
	s.mu.Lock()
	s.fullyEstab = true
	s.mu.Unlock()
}

// runsLocked splits the payload [off, off+payloadLen) into runs that one
// send mapping covers each (the last run is whatever no mapping covers).
func (s *Subflow) runsLocked(off uint64, payloadLen int, dst []int) []int {
	end := off + uint64(payloadLen)
	for off < end && len(dst) < cap(dst)-1 {
		_, n, ok := s.tx.lookup(off)
		if !ok {
			break
		}
		n = min(n, end-off)
		dst = append(dst, int(n))
		off += n
	}
	if off < end {
		dst = append(dst, int(end-off)) // unmapped rest (a bug if it happens)
	}
	return dst
}

func (s *Subflow) countTrimmed() {
	s.mu.Lock()
	s.counters.SACKBlocksTrimmed++
	s.mu.Unlock()
}

func (s *Subflow) countSplit() {
	s.mu.Lock()
	s.counters.SegmentsSplit++
	s.mu.Unlock()
}

// addDataFin puts a DATA_FIN-only mapping into d (§3.3.3: subflow sequence
// number 0, data-level length 1).
func (s *Subflow) addDataFin(d *option.DSS, dsn uint64) {
	d.HasMapping, d.DSN64, d.DSN, d.SSN, d.DataLen, d.DataFin = true, true, dsn, 0, 1, true
	if s.meta.checksum.Load() {
		d.HasChecksum = true
		d.Checksum = option.DSSChecksum(dsn, 0, 1, 0)
	}
	s.counters.DataFinSent++
}

func (s *Subflow) mpcFlags() uint8 {
	f := uint8(option.FlagHMACSHA256)
	if s.meta.checksum.Load() {
		f |= option.FlagChecksum
	}
	return f
}

// noteLast remembers what a pure ACK of ours must say. Sequence and
// acknowledgment numbers only move forward: after a retransmission (a lower
// sequence number) a pure ACK must still carry SND.NXT, or the peer finds
// it outside its window and drops it, DATA_FIN and all.
func (s *Subflow) noteLast(h header.TCP, next uint32) {
	ack := h.AckNumber()
	if !s.last.valid || seqAfter(next, s.last.seq) {
		s.last.seq = next
	}
	if !s.last.valid || !seqAfter(s.last.ack, ack) {
		s.last.ack = ack
		s.last.wnd = h.WindowSize()
	}
	s.last.valid = true
	s.last.hasTS = false
	if o := findOption(h.Options(), header.TCPOptionTS); len(o) == 10 {
		s.last.hasTS = true
		s.last.tsVal = be32(o[2:])
		s.last.tsEcr = be32(o[6:])
	}
}

// verdict is what the layer does with an inbound segment.
type verdict uint8

const (
	pass       verdict = iota // to gVisor as it is
	drop                      // never reaches gVisor (TCP retransmits it)
	reset                     // reaches gVisor as a RST: a join failed, gVisor's endpoint must end too
	ignore                    // TCP does not accept it: to gVisor, none of its options acted on (receive)
	ignoreDrop                // as ignore, but it never reaches gVisor (receive)
)

// inboundLocked applies the MPTCP options of a segment that arrived on this
// subflow, before gVisor sees the segment. On an MPTCP subflow, segments
// with malformed MPTCP options, or data that no mapping covers (§3.3: data
// without a mapping cannot be placed), are dropped. A join whose handshake
// fails (no MP_JOIN, a wrong HMAC) is reset.
// The layer calls it through receive, which first checks that TCP accepts
// the segment; it runs with s.mu held.
func (s *Subflow) inboundLocked(h header.TCP, payloadLen int, set *option.Set, parseErr error) verdict {
	flags := h.Flags()
	seq := h.SequenceNumber()
	s.counters.SegmentsIn++
	s.counters.BytesIn += uint64(payloadLen)
	s.lastWnd = h.WindowSize()
	if parseErr != nil {
		s.counters.MalformedOptions++
		if s.st == stateEstablished {
			s.counters.SegmentsDropped++
			return drop
		}
	}
	m := s.meta
	if flags.Contains(header.TCPFlagRst) {
		// The peer's socket is gone: a RST gVisor may still send on
		// the tuple (answering a segment in flight, or aborting the
		// endpoint when it refused the peer's RST) meets none. It goes
		// plain and uncounted, as Linux's from no socket, so that our
		// counters match the peer's.
		s.rst.plain = true
		if s.st == stateEstablished && !s.fb.on && !set.Has(option.SubtypeMPFastclose) && m.subflows.Load() <= 1 {
			s.rst.farewellDue = true // the connection dies with it: see Farewell
		}
		if set.Has(option.SubtypeMPTCPRST) {
			s.peerRstReason = int(set.TCPRST.Reason)
			s.countPeerResetLocked()
		}
	}

	switch s.st {
	case stateFallback, stateFailed:
		s.fallbackInLocked(h)
		return pass
	case stateSynSent:
		if !flags.Contains(header.TCPFlagSyn | header.TCPFlagAck) {
			return pass
		}
		s.irs, s.irsOK = seq, true
		s.notePeerWS(h)
		// SYN windows are never scaled; the data-level window starts here.
		m.noteWndEnd(m.localIDSN + 1 + uint64(h.WindowSize()))
		if s.join {
			return s.joinSynAckLocked(h, set)
		}
		if !set.Has(option.SubtypeMPCapable) || set.MPCapable.Form != option.MPCSynAck || set.MPCapable.Version != 1 {
			s.reg.mib.Inc(MPCapableFallbackSYNACK)
			s.fallbackLocked("SYN-ACK without MP_CAPABLE v1")
			return pass
		}
		s.reg.mib.Inc(MPCapableSYNACKRX)
		if set.MPCapable.Flags&option.FlagChecksum != 0 {
			m.checksum.Store(true)
		}
		m.setRemoteKey(set.MPCapable.SenderKey, option.IDSN(set.MPCapable.SenderKey))
		s.establishLocked()
		return pass
	case stateSynReceived:
		if flags.Contains(header.TCPFlagSyn) {
			s.irs, s.irsOK = seq, true
			s.notePeerWS(h)
			return pass
		}
		m.noteWndEnd(m.sndUna.Load() + uint64(h.WindowSize())<<s.peerWS)
		if !flags.Contains(header.TCPFlagAck) || flags.Contains(header.TCPFlagRst) {
			return pass
		}
		if s.join {
			if v := s.joinThirdAckLocked(h, set); v != pass {
				return v
			}
			break
		}
		mpc := &set.MPCapable
		if !set.Has(option.SubtypeMPCapable) || (mpc.Form != option.MPCAck && mpc.Form != option.MPCAckData && mpc.Form != option.MPCAckDataCsum) {
			s.reg.mib.Inc(MPCapableFallbackACK)
			s.fallbackLocked("third ACK without MP_CAPABLE")
			return pass
		}
		if mpc.ReceiverKey != m.localKey {
			s.fallbackLocked("MP_CAPABLE ACK echoes a key that is not ours")
			return pass
		}
		if mpc.Flags&option.FlagChecksum != 0 {
			m.checksum.Store(true)
		}
		m.setRemoteKey(mpc.SenderKey, option.IDSN(mpc.SenderKey))
		s.reg.mib.Inc(MPCapableACKRX)
		s.establishLocked()
	case stateEstablished:
		if s.join {
			s.joinEstablishedLocked(h, payloadLen, set)
		}
	}
	if s.st == stateEstablished && set.Present&signalOptions != 0 {
		s.signalsLocked(set)
	}
	if s.st == stateEstablished && set.Has(option.SubtypeMPFail) {
		s.mpFailLocked(h, &set.MPFail)
	}
	if s.st == stateEstablished {
		s.strippedAckLocked(h, payloadLen, set, parseErr)
	}
	if s.fb.on {
		return pass
	}

	if !s.irsOK {
		return pass
	}
	if payloadLen > 0 || flags.Contains(header.TCPFlagFin) {
		off := expand(s.rcvRef, seq-(s.irs+1))
		if off > s.rcvRef {
			s.rcvRef = off
		}
	}
	if flags.Contains(header.TCPFlagAck) && s.issOK {
		// Keep the mappings of recently acknowledged bytes: gVisor may
		// retransmit a segment whose ACK is being processed at the same
		// moment, and that copy still needs its mapping.
		una := expand(s.sndHigh, h.AckNumber()-(s.iss+1))
		if una > s.acked && una <= s.sndHigh+1 {
			s.acked = una
		}
		if una > txMapSlack {
			s.tx.ackTo(una - txMapSlack)
		}
	}

	// The first data of a v1 client carries MP_CAPABLE with the data-level
	// length instead of a DSS; its mapping starts at the client's IDSN+1.
	if set.Has(option.SubtypeMPCapable) && s.role == Server {
		mpc := &set.MPCapable
		if (mpc.Form == option.MPCAckData || mpc.Form == option.MPCAckDataCsum) && mpc.DataLen > 0 {
			if !m.noteMapping(m.remoteIDSN+1, m.remoteIDSN+1+uint64(mpc.DataLen)) {
				s.protocolErrorLocked("the first data mapped beyond the DATA_FIN")
				s.counters.SegmentsDropped++
				return drop
			}
			s.rx.add(Mapping{Off: 0, DSN: m.remoteIDSN + 1, Len: uint32(mpc.DataLen), WireLen: mpc.DataLen, SSN: 1,
				HasChecksum: mpc.Form == option.MPCAckDataCsum, Checksum: mpc.Checksum})
		}
	}
	if set.Has(option.SubtypeDSS) && set.DSS.HasMapping && set.DSS.DataLen == 0 && (s.fb.failSent || s.infiniteAllowedLocked()) {
		s.infiniteMapLocked(h, &set.DSS)
		return pass
	}
	if set.Has(option.SubtypeDSS) && !s.applyDSS(&set.DSS) {
		s.counters.SegmentsDropped++
		return drop
	}
	if payloadLen > 0 {
		off := expand(s.rcvRef, seq-(s.irs+1))
		end := off + uint64(payloadLen)
		if end > s.rxRead && !s.rx.covers(max(off, s.rxRead), end) {
			if v := s.unmappedLocked(set); v != drop {
				return v
			}
			s.counters.SegmentsDropped++
			return drop
		}
	}
	return pass
}

// seqAfter reports whether 32-bit sequence number a is after b (RFC 793
// arithmetic modulo 2^32).
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
