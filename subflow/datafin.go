package subflow

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// The peer's DATA_FIN against its mappings (RFC 8684 §3.3.3). A DATA_FIN
// ends the peer's data stream at one DSN; every mapping of any subflow
// must lie below it. Each subflow checks its own mappings under its own
// lock, so the connection-wide facts (the highest DSN mapped, the
// DATA_FIN) live here, under Meta.rxMu, and a mapping on one subflow and
// a DATA_FIN on another are ordered against each other.
//
// An in-window segment from an on-path attacker passes every TCP check,
// so these rules, not TCP, are what keep a forged DATA_FIN from ending the
// stream early (a clean EOF on our side while the peer's data is
// DATA_ACKed and thrown away):
//   - a DATA_FIN below the end of what is already mapped contradicts the
//     mappings: it is not accepted (the segment is dropped, as any
//     implausible DSS), and the connection goes on;
//   - a mapping reaching beyond an accepted DATA_FIN, or a second DATA_FIN
//     at another DSN, means the peer's stream and the DATA_FIN we accepted
//     cannot both be true: a protocol error, which resets the connection
//     (MP_FASTCLOSE) so that both ends see an error.

// ErrDataFinConflict is the protocol error of a DATA_FIN that the peer's
// mappings contradict after it was accepted.
var ErrDataFinConflict = errors.New("the peer's data and its DATA_FIN contradict each other")

// finCheck is what acceptPeerFin decided.
type finCheck uint8

const (
	finNew      finCheck = iota // accepted: the first DATA_FIN
	finRepeat                   // the DATA_FIN accepted before, again
	finBelow                    // below data already mapped: not accepted
	finConflict                 // another DSN than the accepted one: protocol error
)

// acceptPeerFin decides about a DATA_FIN at dsn from the peer.
func (m *Meta) acceptPeerFin(dsn uint64) finCheck {
	m.rxMu.Lock()
	defer m.rxMu.Unlock()
	if f := m.peerFin.Load(); f != 0 {
		if f-1 == dsn {
			return finRepeat
		}
		return finConflict
	}
	if dsn < m.rxMapped.Load() {
		return finBelow
	}
	m.peerFin.Store(dsn + 1)
	m.poke()
	return finNew
}

// noteMapping records that the peer mapped DSNs [dsn, end); false if that
// reaches beyond its accepted DATA_FIN (a protocol error).
//
// Every segment of a write repeats its mapping, so most calls change
// nothing: with no DATA_FIN yet and nothing beyond what is mapped, no lock
// is needed (a DATA_FIN accepted meanwhile was checked against rxMapped,
// which already covers end).
func (m *Meta) noteMapping(dsn, end uint64) bool {
	if m.peerFin.Load() == 0 && end <= m.rxMapped.Load() {
		return true
	}
	m.rxMu.Lock()
	defer m.rxMu.Unlock()
	if f := m.peerFin.Load(); f != 0 && end > f-1 {
		return false
	}
	if end > m.rxMapped.Load() {
		m.rxMapped.Store(end)
	}
	return true
}

// protoErrHook reports the first data-level protocol error to the stack.
type protoErrHook struct {
	err   atomic.Pointer[error]
	fired atomic.Bool
	fn    atomic.Pointer[func(error)]
}

func (h *protoErrHook) fire() {
	e := h.err.Load()
	if e == nil {
		return
	}
	if fn := h.fn.Load(); fn != nil && h.fired.CompareAndSwap(false, true) {
		(*fn)(*e)
	}
}

// ProtocolError records a data-level protocol error that ends the
// connection; only the first counts. The stack's hook (OnProtocolError)
// is called once, from whatever goroutine found the error: possibly the
// one delivering a segment, so the hook must not block or call gVisor.
func (m *Meta) ProtocolError(err error) {
	m.perr.err.CompareAndSwap(nil, &err)
	m.perr.fire()
}

// ProtocolErr returns the protocol error recorded, if any.
func (m *Meta) ProtocolErr() error {
	if e := m.perr.err.Load(); e != nil {
		return *e
	}
	return nil
}

// OnProtocolError registers fn, called once with the first protocol error
// (at once if one happened already).
func (m *Meta) OnProtocolError(fn func(error)) {
	m.perr.fn.Store(&fn)
	m.perr.fire()
}

// protocolErrorLocked counts and reports a protocol error found on the
// packet path.
func (s *Subflow) protocolErrorLocked(format string, args ...any) {
	s.counters.ImplausibleDSS++
	s.meta.ProtocolError(fmt.Errorf("%w: "+format, append([]any{ErrDataFinConflict}, args...)...))
}
