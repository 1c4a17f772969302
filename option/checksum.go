package option

import (
	"encoding/binary"
	"math/bits"
)

// Sum is a running 16-bit one's complement sum (RFC 1071) over a byte
// stream fed in chunks of any length. Bytes are paired into big-endian
// 16-bit words across chunk boundaries, so feeding "abc" then "d" equals
// feeding "abcd". The zero value is an empty sum.
type Sum struct {
	acc uint64 // one's complement accumulator with end-around carry
	odd bool   // an odd number of bytes has been added; next byte is a low byte
}

// add64 adds v to the accumulator with end-around carry. A one's
// complement sum of 64-bit words folds to the same 16-bit value as the sum
// of the 16-bit words they consist of.
func (s *Sum) add64(v uint64) {
	var c uint64
	s.acc, c = bits.Add64(s.acc, v, 0)
	s.acc += c // cannot overflow again: after a carry acc <= 2^64-2
}

// Add feeds the next chunk of the byte stream.
func (s *Sum) Add(b []byte) {
	if len(b) == 0 {
		return
	}
	if s.odd {
		s.add64(uint64(b[0])) // completes the word whose high byte came last time
		b = b[1:]
		s.odd = false
	}
	for len(b) >= 8 {
		s.add64(binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	for len(b) >= 2 {
		s.add64(uint64(binary.BigEndian.Uint16(b)))
		b = b[2:]
	}
	if len(b) == 1 {
		s.add64(uint64(b[0]) << 8)
		s.odd = true
	}
}

// Value returns the folded 16-bit sum (not inverted).
func (s *Sum) Value() uint16 { return fold(s.acc) }

func fold(v uint64) uint16 {
	v = (v >> 32) + (v & 0xffffffff)
	v = (v >> 32) + (v & 0xffffffff)
	v = (v >> 16) + (v & 0xffff)
	v = (v >> 16) + (v & 0xffff)
	v = (v >> 16) + (v & 0xffff)
	return uint16(v)
}

// pseudoSum adds the DSS checksum pseudo-header of RFC 8684 §3.3.1
// (Figure 10: 64-bit DSN, 32-bit relative subflow sequence number, 16-bit
// data-level length, 16-bit checksum field) to a payload sum.
func pseudoSum(dsn uint64, ssn uint32, dataLen, csumField, payload uint16) uint16 {
	s := Sum{acc: uint64(payload)}
	s.add64(dsn)
	s.add64(uint64(ssn))
	s.add64(uint64(dataLen)<<16 | uint64(csumField))
	return s.Value()
}

// DSSChecksum returns the checksum to put in a DSS (or MP_CAPABLE
// ACK+data) option (RFC 8684 §3.3.1): the one's complement of the one's
// complement sum of the pseudo-header, with zero in its checksum field,
// and the mapping's payload. payload is Sum.Value() over the whole
// mapping's data; dsn is the full 64-bit DSN of the mapping even if the
// option carries only 32 bits, and ssn is the relative subflow sequence
// number as sent in the option. A DATA_FIN is included in dataLen but has
// no payload octet.
func DSSChecksum(dsn uint64, ssn uint32, dataLen uint16, payload uint16) uint16 {
	return ^pseudoSum(dsn, ssn, dataLen, 0, payload)
}

// VerifyDSSChecksum reports whether wire is the correct checksum for the
// mapping: summing the pseudo-header with the received checksum in place
// of the zero field plus the payload must give 0xffff (i.e. -0).
func VerifyDSSChecksum(dsn uint64, ssn uint32, dataLen uint16, payload uint16, wire uint16) bool {
	return pseudoSum(dsn, ssn, dataLen, wire, payload) == 0xffff
}
