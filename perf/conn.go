package perf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Bounds on waiting for the peer, so that a vanished peer cannot hold a
// test (and a server) forever. iperf3 has no such bounds on most steps;
// these are far above what a live peer needs.
const (
	stepTimeout   = 30 * time.Second  // each control step outside the data phase
	cookieTimeout = 10 * time.Second  // a data stream's cookie
	idleTimeout   = 120 * time.Second // no data moved at all (iperf3's --rcv-timeout default)
	graceTimeout  = 40 * time.Second  // server: past the test's time (iperf3's grace period)
	termTimeout   = time.Second       // sending a last *_TERMINATE
)

// ctrlConn is a control connection whose reads and writes a context can
// interrupt: when ctx ends, the deadline moves to the past and stays
// there, whatever later steps set.
type ctrlConn struct {
	net.Conn
	mu        sync.Mutex
	cancelled bool
	stop      func() bool
}

func newCtrlConn(ctx context.Context, c net.Conn) *ctrlConn {
	k := &ctrlConn{Conn: c}
	k.stop = context.AfterFunc(ctx, func() {
		k.mu.Lock()
		k.cancelled = true
		k.Conn.SetDeadline(time.Unix(1, 0))
		k.mu.Unlock()
	})
	return k
}

// within bounds the next reads and writes to d (0: no bound).
func (k *ctrlConn) within(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cancelled {
		return
	}
	if d == 0 {
		k.Conn.SetDeadline(time.Time{})
	} else {
		k.Conn.SetDeadline(time.Now().Add(d))
	}
}

// last sends a final state byte even after cancellation (best effort):
// the peer learns why the test ends.
func (k *ctrlConn) last(state int8) {
	k.mu.Lock()
	k.Conn.SetDeadline(time.Now().Add(termTimeout))
	k.mu.Unlock()
	k.Conn.Write([]byte{byte(state)})
}

func (k *ctrlConn) Close() error {
	k.stop()
	return k.Conn.Close()
}

func (k *ctrlConn) writeState(s int8) error {
	if _, err := k.Write([]byte{byte(s)}); err != nil {
		return fmt.Errorf("sending %s: %w", stateName(s), err)
	}
	return nil
}

// stateResult is one state byte read from the control connection.
type stateResult struct {
	state int8
	err   error
}

// readState reads one state byte.
func (k *ctrlConn) readState() stateResult {
	var b [1]byte
	_, err := io.ReadFull(k, b[:])
	return stateResult{int8(b[0]), err}
}

// readStateAsync reads one state byte in the background, for a side that
// must also watch timers and its streams meanwhile. Nothing else may read
// the connection until the result arrived.
func (k *ctrlConn) readStateAsync() <-chan stateResult {
	ch := make(chan stateResult, 1)
	go func() { ch <- k.readState() }()
	return ch
}

// ctrlError describes a failed control read, with the context's cause
// when it was the context that interrupted it.
func ctrlError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: the peer closed the control connection", what)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s: no answer from the peer", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// readServerError reads the rest of a SERVER_ERROR message: iperf3's
// error number and errno, each a 4-byte big-endian integer.
func readServerError(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return &ServerError{Code: -1}
	}
	return &ServerError{Code: int32(binary.BigEndian.Uint32(b[:4])), Errno: int32(binary.BigEndian.Uint32(b[4:]))}
}

// writeServerError sends SERVER_ERROR with iperf3's error number.
func writeServerError(w io.Writer, code int32) error {
	var b [9]byte
	b[0] = 0xfe // SERVER_ERROR (-2) as a signed byte
	binary.BigEndian.PutUint32(b[1:5], uint32(code))
	_, err := w.Write(b[:])
	return err
}

// deny turns a connection away as iperf3 does: ACCESS_DENIED, then close.
func deny(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(cookieTimeout))
	c.Write([]byte{0xff}) // ACCESS_DENIED (-1) as a signed byte
	c.Close()
}
