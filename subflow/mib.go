package subflow

import (
	"strings"
	"sync/atomic"
)

// Counter is one stack-wide MPTCP event counter. The names are Linux's
// (`nstat -az | grep MPTcpExt`), so that our counts and the kernel peer's
// can be read side by side; the few Linux has no name for are marked.
type Counter uint8

const (
	MPCapableSYNRX Counter = iota
	MPCapableSYNTX
	MPCapableSYNACKRX
	MPCapableACKRX
	MPCapableFallbackACK
	MPCapableFallbackSYNACK
	MPJoinNoTokenFound
	MPJoinSynRx
	MPJoinSynBackupRx
	MPJoinSynAckRx
	MPJoinSynAckHMacFailure
	MPJoinAckRx
	MPJoinAckHMacFailure
	MPJoinRejected
	MPJoinSynTx
	DSSNotMatching
	DSSCorruptionFallback
	DSSCorruptionReset
	InfiniteMapTx
	InfiniteMapRx
	DataCsumErr
	AddAddr // ADD_ADDR received (not an echo), HMAC valid
	AddAddrTx
	AddAddrTxDrop
	EchoAdd // echo of our ADD_ADDR received
	EchoAddTx
	PortAdd // ADD_ADDR with a port received
	AddAddrDrop
	AddAddrHMacFailure // ours: ADD_ADDR with a wrong HMAC, dropped (Linux drops it silently)
	MPJoinPortSynRx
	MismatchPortSynRx
	RmAddr // REMOVE_ADDR received
	RmAddrDrop
	RmAddrTx
	RmSubflow // subflows closed because of a REMOVE_ADDR or a removed endpoint
	MPPrioTx
	MPPrioRx
	MPFailTx
	MPFailRx
	MPFastcloseTx
	MPFastcloseRx
	MPFastcloseBadKey // ours: MP_FASTCLOSE with a key that is not ours, ignored
	MPRstTx
	MPRstRx
	SubflowStale
	SubflowRecover
	SubflowRecreate         // ours: subflows the path manager opened again after theirs died
	SubflowSilentReinject   // ours: a silent subflow's bytes sent again on another before its RTO
	FallbackOptionsStripped // ours: fell back because a middlebox removed MPTCP options
	MPCapableDataFallback   // the first data after the handshake came without MPTCP options
	DssFallback             // data without a DSS mapping later on (options stripped): fell back

	// Segments of MPTCP subflows whose MPTCP options were not acted on
	// because TCP does not accept the segment (validate.go). The names
	// are Linux's: its Tcp MIB, and TcpExt after its drop reasons, since
	// Linux drops such segments in TCP before MPTCP sees them.
	InCsumErrors       // Tcp: a bad TCP checksum (the segment is dropped)
	InvalidSequence    // ours: not in the receive window (RFC 793 §3.9)
	InvalidAckSequence // ours: no ACK, or not the ACK a handshake expects
	AckUnsentData      // ours: acknowledges bytes never sent
	TooOldAck          // ours: acknowledges bytes older than a window (RFC 5961 §5.2)
	InvalidRst         // ours: a RST not at the expected sequence number (RFC 5961 §3.2)

	SynFloodFallback    // ours: a SYN answered without MPTCP state: too many handshakes pending
	JoinHalfOpenEvicted // ours: a half-open join dropped for a newer one of the same connection
	SignalDrop          // ours: an echo or MP_PRIO dropped: too many of the peer's signals queued
	TCPFragmentDrop     // ours: TCP in IP fragments or behind IPv6 extension headers, dropped (layer.go)
	HandshakeEvicted    // ours: a stale pending MP_CAPABLE handshake dropped for a new SYN
	numCounters
)

var counterNames = [numCounters]string{
	MPCapableSYNRX:          "MPCapableSYNRX",
	MPCapableSYNTX:          "MPCapableSYNTX",
	MPCapableSYNACKRX:       "MPCapableSYNACKRX",
	MPCapableACKRX:          "MPCapableACKRX",
	MPCapableFallbackACK:    "MPCapableFallbackACK",
	MPCapableFallbackSYNACK: "MPCapableFallbackSYNACK",
	MPJoinNoTokenFound:      "MPJoinNoTokenFound",
	MPJoinSynRx:             "MPJoinSynRx",
	MPJoinSynBackupRx:       "MPJoinSynBackupRx",
	MPJoinSynAckRx:          "MPJoinSynAckRx",
	MPJoinSynAckHMacFailure: "MPJoinSynAckHMacFailure",
	MPJoinAckRx:             "MPJoinAckRx",
	MPJoinAckHMacFailure:    "MPJoinAckHMacFailure",
	MPJoinRejected:          "MPJoinRejected",
	MPJoinSynTx:             "MPJoinSynTx",
	DSSNotMatching:          "DSSNotMatching",
	DSSCorruptionFallback:   "DSSCorruptionFallback",
	DSSCorruptionReset:      "DSSCorruptionReset",
	InfiniteMapTx:           "InfiniteMapTx",
	InfiniteMapRx:           "InfiniteMapRx",
	DataCsumErr:             "DataCsumErr",
	AddAddr:                 "AddAddr",
	AddAddrTx:               "AddAddrTx",
	AddAddrTxDrop:           "AddAddrTxDrop",
	EchoAdd:                 "EchoAdd",
	EchoAddTx:               "EchoAddTx",
	PortAdd:                 "PortAdd",
	AddAddrDrop:             "AddAddrDrop",
	AddAddrHMacFailure:      "AddAddrHMacFailure",
	MPJoinPortSynRx:         "MPJoinPortSynRx",
	MismatchPortSynRx:       "MismatchPortSynRx",
	RmAddr:                  "RmAddr",
	RmAddrDrop:              "RmAddrDrop",
	RmAddrTx:                "RmAddrTx",
	RmSubflow:               "RmSubflow",
	MPPrioTx:                "MPPrioTx",
	MPPrioRx:                "MPPrioRx",
	MPFailTx:                "MPFailTx",
	MPFailRx:                "MPFailRx",
	MPFastcloseTx:           "MPFastcloseTx",
	MPFastcloseRx:           "MPFastcloseRx",
	MPFastcloseBadKey:       "MPFastcloseBadKey",
	MPRstTx:                 "MPRstTx",
	MPRstRx:                 "MPRstRx",
	SubflowStale:            "SubflowStale",
	SubflowRecover:          "SubflowRecover",
	SubflowRecreate:         "SubflowRecreate",
	SubflowSilentReinject:   "SubflowSilentReinject",
	FallbackOptionsStripped: "FallbackOptionsStripped",
	MPCapableDataFallback:   "MPCapableDataFallback",
	DssFallback:             "DssFallback",
	InCsumErrors:            "TcpInCsumErrors",
	InvalidSequence:         "TcpExtTCPInvalidSequence",
	InvalidAckSequence:      "TcpExtTCPInvalidAckSequence",
	AckUnsentData:           "TcpExtTCPAckUnsentData",
	TooOldAck:               "TcpExtTCPTooOldAck",
	InvalidRst:              "TcpExtTCPInvalidRst",
	SynFloodFallback:        "SynFloodFallback",
	JoinHalfOpenEvicted:     "JoinHalfOpenEvicted",
	SignalDrop:              "SignalDrop",
	TCPFragmentDrop:         "TCPFragmentDrop",
	HandshakeEvicted:        "HandshakeEvicted",
}

// MIBPrefix starts every counter's name as nstat prints it.
const MIBPrefix = "MPTcpExt"

// Name is the counter's name as nstat prints it (MPTcpExt...).
func (c Counter) Name() string {
	if c >= numCounters {
		return MIBPrefix + "Unknown"
	}
	if n := counterNames[c]; strings.HasPrefix(n, "Tcp") {
		return n // a TCP-level counter: Tcp or TcpExt, as nstat prints them
	}
	return MIBPrefix + counterNames[c]
}

// MIB holds a stack's counters; safe for concurrent use.
type MIB struct {
	v [numCounters]atomic.Uint64
}

// Inc adds one to c.
func (m *MIB) Inc(c Counter) { m.v[c].Add(1) }

// Get returns c's value.
func (m *MIB) Get(c Counter) uint64 { return m.v[c].Load() }

// Snapshot returns every counter by its nstat name.
func (m *MIB) Snapshot() map[string]uint64 {
	out := make(map[string]uint64, numCounters)
	for c := Counter(0); c < numCounters; c++ {
		out[c.Name()] = m.v[c].Load()
	}
	return out
}

// AllCounters lists every counter, in a fixed order, for printing.
func AllCounters() []Counter {
	out := make([]Counter, numCounters)
	for i := range out {
		out[i] = Counter(i)
	}
	return out
}
