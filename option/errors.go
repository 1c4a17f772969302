package option

import "errors"

// Parse errors. They are plain sentinel values (not wrapped) so that a
// malformed option costs no allocation; compare with errors.Is or ==.
var (
	// ErrTruncated means the buffer ends before the option does (the
	// length byte promises more bytes than are present), or is too short
	// to even hold the kind, length and subtype bytes.
	ErrTruncated = errors.New("mptcp option: truncated")

	// ErrBadLength means the option's length byte is not one that
	// RFC 8684 allows for the sub-option (given its flags), or, inside
	// ParseTCPOptions, that some TCP option has a length below 2.
	ErrBadLength = errors.New("mptcp option: bad length")

	// ErrUnknownSubtype means the subtype nibble is not the one the
	// called parser decodes.
	ErrUnknownSubtype = errors.New("mptcp option: unexpected subtype")

	// ErrBadVersion means an MP_CAPABLE option carries a version other
	// than 1. ParseMPCapable still returns the decoded fields with this
	// error so that a caller may look at MPCapable.Version (RFC 8684 §3.1
	// version negotiation); a v1-only stack treats it as "no MPTCP".
	ErrBadVersion = errors.New("mptcp option: unsupported MP_CAPABLE version")

	// ErrNotMPTCP means the kind byte is not 30.
	ErrNotMPTCP = errors.New("mptcp option: kind is not 30")
)
