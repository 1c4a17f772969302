package subflow

import "github.com/umptcp/umptcp/option"

// The DSS option of an inbound segment: the DATA_ACK, the mapping and the
// DATA_FIN it carries, checked for plausibility before any takes effect
// (the DATA_FIN's rules against the mappings are in datafin.go).

// dsnWindow bounds how far from the connection's current position a DSN in
// a DSS may be. Anything beyond it (an option mangled into something that
// still parses) is not acted upon.
const dsnWindow = 64 << 20

// applyDSS takes the DATA_ACK, mapping and DATA_FIN of a DSS option. It
// returns false, changing nothing, when a value is implausible: a DATA_ACK
// beyond what we sent, a mapping or DATA_FIN far outside the receive
// window, or a mapping that contradicts one received before for the same
// subflow bytes.
func (s *Subflow) applyDSS(d *option.DSS) bool {
	m := s.meta
	var ack uint64
	if d.HasDataAck {
		ack = d.DataAck
		if !d.DataAck64 {
			ack = expandDSN(m.sndUna.Load(), uint32(ack))
		}
		if ack > m.sndMax.Load() {
			s.counters.ImplausibleDSS++
			return false
		}
	}
	var mp Mapping
	var finDSN uint64
	fin, hasMap := false, false
	if d.HasMapping {
		rcv := m.rcvNxt.Load()
		dsn := d.DSN
		if !d.DSN64 {
			dsn = expandDSN(rcv, uint32(d.DSN))
		}
		dataLen := uint32(d.DataLen)
		if d.DataFin {
			if dataLen == 0 {
				s.counters.ImplausibleDSS++
				return false
			}
			dataLen-- // the DATA_FIN occupies the last DSN of the mapping
			fin, finDSN = true, dsn+uint64(dataLen)
		}
		end := dsn + uint64(dataLen)
		if end > rcv+dsnWindow || end+dsnWindow < rcv || fin && finDSN+1 < rcv {
			s.counters.ImplausibleDSS++
			return false
		}
		if dataLen > 0 && d.SSN != 0 {
			mp = Mapping{Off: expand(s.rcvRef, d.SSN-1), DSN: dsn, Len: dataLen, WireLen: d.DataLen, SSN: d.SSN, HasChecksum: d.HasChecksum, Checksum: d.Checksum}
			if !s.rx.acceptable(mp) {
				s.counters.ImplausibleDSS++
				return false
			}
			hasMap = true
		}
	}
	// The mapping and the DATA_FIN against the connection's others
	// (datafin.go): nothing may be mapped beyond an accepted DATA_FIN,
	// and a DATA_FIN below what is mapped already is not believed.
	if hasMap && !m.noteMapping(mp.DSN, mp.DSN+uint64(mp.Len)) {
		fin, _ := m.PeerFin()
		s.protocolErrorLocked("DSN %d-%d mapped beyond the DATA_FIN at %d", mp.DSN, mp.DSN+uint64(mp.Len), fin)
		return false
	}
	repeat := false
	if fin {
		switch m.acceptPeerFin(finDSN) {
		case finBelow:
			s.counters.ImplausibleDSS++
			return false
		case finConflict:
			old, _ := m.PeerFin()
			s.protocolErrorLocked("a second DATA_FIN at DSN %d, the first at %d", finDSN, old)
			return false
		case finRepeat:
			repeat = true
		}
		s.counters.DataFinRecvd++
	}
	if s.role == Client {
		s.fullyEstab = true
	}
	if d.HasDataAck {
		m.onDataAck(ack)
		// §3.3.4: the receive window is relative to the DATA_ACK.
		m.noteWndEnd(ack + uint64(s.lastWnd)<<s.peerWS)
	}
	if repeat && m.rcvNxt.Load() > finDSN {
		// A DATA_FIN we acknowledged already: our ACK was lost.
		// A pure ACK does not make gVisor answer, so we do.
		s.sentAck = 0
		s.armAckLocked()
	}
	if hasMap {
		s.rx.add(mp) // consistent, checked above
	}
	return true
}
