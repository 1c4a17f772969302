// Package option encodes and decodes the Multipath TCP v1 TCP option
// (kind 30) defined by RFC 8684, and provides the option-level cryptography
// and the DSS checksum.
//
// The package owns exactly the wire format of the MPTCP sub-options:
//
//   - MP_CAPABLE   (RFC 8684 §3.1)   mpcapable.go
//   - MP_JOIN      (RFC 8684 §3.2)   mpjoin.go
//   - DSS          (RFC 8684 §3.3)   dss.go
//   - ADD_ADDR     (RFC 8684 §3.4.1) addaddr.go
//   - REMOVE_ADDR  (RFC 8684 §3.4.2) removeaddr.go
//   - MP_PRIO      (RFC 8684 §3.3.8) mpprio.go
//   - MP_FASTCLOSE (RFC 8684 §3.5)   mpfastclose.go
//   - MP_TCPRST    (RFC 8684 §3.6)   tcprst.go
//   - MP_FAIL      (RFC 8684 §3.7)   mpfail.go
//
// plus ParseTCPOptions (set.go), which walks a whole TCP option area and
// collects every MPTCP option of one segment into a Set, the key/token/IDSN
// and HMAC derivations of §3.1, §3.2 and §3.4.1 (crypto.go) and the DSS
// checksum of §3.3.1 (checksum.go).
//
// Everything here is a pure function of its arguments: no sockets, no
// clocks, no gVisor types, so the connection logic that decides *when* an
// option is sent lives elsewhere. Parsers never allocate and never retain
// the input slice; Append methods allocate only if the destination slice
// has too little capacity.
//
// # Parsing conventions
//
// Every ParseX function takes b starting at the TCP option kind byte (30)
// and returns the decoded option and the number of bytes it occupies (the
// option's length byte). b may extend past the option. Errors are the
// sentinel values ErrTruncated, ErrBadLength, ErrUnknownSubtype,
// ErrBadVersion and ErrNotMPTCP; they are returned unwrapped so that the
// error path is allocation-free as well (an attacker controls these bytes),
// and they compare with == as well as with errors.Is.
//
// Checks happen in this order: enough bytes for kind/length/subtype (else
// ErrTruncated), kind is 30 (else ErrNotMPTCP), the subtype matches the
// parser (else ErrUnknownSubtype), the length byte is one the RFC allows for
// this sub-option (else ErrBadLength), b holds the whole option (else
// ErrTruncated), then sub-option specific semantic checks.
//
// Reserved bits are ignored on input and sent as zero, as RFC 8684 asks.
//
// Append methods write the option exactly as the struct describes it, with
// no padding: aligning options with NOPs is the caller's business.
package option
