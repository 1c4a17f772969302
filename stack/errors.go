package stack

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrChecksum is returned by Read when a DSS checksum did not match: the
// bytes of that mapping were not delivered (RFC 8684 §3.3.1).
var ErrChecksum = errors.New("umptcp: DSS checksum mismatch")

// ErrProtocol is returned when the peer violated RFC 8684 in a way that
// ends the connection, e.g. data without a mapping.
var ErrProtocol = errors.New("umptcp: MPTCP protocol violation")

// ErrAborted is returned by Read and Write, pending or later, after the
// connection was aborted locally with Conn.Abort (MP_FASTCLOSE, RFC 8684
// §3.5, or a TCP reset after fallback). It wraps syscall.ECONNABORTED.
var ErrAborted = fmt.Errorf("umptcp: connection aborted locally (Abort): %w", syscall.ECONNABORTED)

// ErrPeerFastclose is returned by Read and Write, pending or later, once
// the peer aborted the connection with MP_FASTCLOSE (RFC 8684 §3.5): the
// MPTCP equivalent of a TCP reset, so it wraps syscall.ECONNRESET, and
// unread data is discarded.
var ErrPeerFastclose = fmt.Errorf("umptcp: connection reset by peer with MP_FASTCLOSE: %w", syscall.ECONNRESET)

// timeoutError is returned when a deadline passes; it is a net.Error.
type timeoutError struct{}

func (timeoutError) Error() string   { return "umptcp: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var errTimeout net.Error = timeoutError{}

func opError(op string, c *Conn, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func wrapf(format string, a ...any) error { return fmt.Errorf("umptcp: "+format, a...) }
