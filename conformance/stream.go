package conformance

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// copyBufSize is the buffer size of every transfer: large enough that a
// 64 MiB transfer costs few system calls.
const copyBufSize = 256 << 10

// Stream returns a reader of n deterministic pseudo-random bytes (ChaCha8
// seeded with seed): the same seed and n always give the same bytes.
func Stream(seed uint64, n int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "umptcp conformance stream")
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// Digest is a SHA-256 sum of a transfer's bytes.
type Digest [sha256.Size]byte

// String returns the first bytes of d in hex.
func (d Digest) String() string { return fmt.Sprintf("%x…", d[:8]) }

// sumOf returns h's sum as a Digest.
func sumOf(h hash.Hash) (d Digest) {
	copy(d[:], h.Sum(nil))
	return d
}

// Result is one direction of a transfer, seen from one end.
type Result struct {
	N   int64  // bytes sent or received
	Sum Digest // their SHA-256
}

// Send writes Stream(seed, n) to w with a large buffer and returns what it
// wrote. It does not close or half-close w.
func Send(w io.Writer, seed uint64, n int64) (Result, error) {
	h := sha256.New()
	written, err := copyBuffer(io.MultiWriter(w, h), Stream(seed, n))
	return Result{N: written, Sum: sumOf(h)}, err
}

// Receive reads r to EOF with a large buffer and returns what it read.
func Receive(r io.Reader) (Result, error) {
	h := sha256.New()
	read, err := copyBuffer(h, r)
	return Result{N: read, Sum: sumOf(h)}, err
}

// copyBuffer copies src to dst through a copyBufSize buffer (deliberately
// not using ReaderFrom/WriterTo, whose generic paths use 32 KiB buffers).
func copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufSize)
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// HalfCloser is a connection whose sending direction can be closed alone.
// *net.TCPConn and umptcp's *stack.Conn are HalfClosers.
type HalfCloser interface {
	net.Conn
	CloseWrite() error
}

// asHalfCloser returns c as a HalfCloser or an error.
func asHalfCloser(c net.Conn) (HalfCloser, error) {
	hc, ok := c.(HalfCloser)
	if !ok {
		return nil, fmt.Errorf("conformance: %T has no CloseWrite", c)
	}
	return hc, nil
}

// abortOnDone makes blocked I/O on conns fail once ctx is done; call the
// returned function to stop that.
func abortOnDone(ctx context.Context, conns ...net.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		for _, c := range conns {
			_ = c.SetDeadline(time.Unix(1, 0))
		}
	})
}

// ExchangeOptions sizes an Exchange and hooks into it.
type ExchangeOptions struct {
	AtoB, BtoA int64 // bytes a sends to b and b sends to a
	// Midway, if set, runs once both ends have sent half of their data
	// (while the connection carries traffic), e.g. to look at ss output.
	// An error fails the Exchange.
	Midway func() error
}

// Exchange sends opts.AtoB bytes from a to b and opts.BtoA bytes from b to
// a at the same time, each as a deterministic stream followed by
// CloseWrite, while each end reads until EOF. It fails unless every byte
// arrived intact (SHA-256 of what was sent equals that of what was
// received) or if ctx ends first. It does not close the connections.
func Exchange(ctx context.Context, a, b net.Conn, opts ExchangeOptions) error {
	ha, err := asHalfCloser(a)
	if err != nil {
		return err
	}
	hb, err := asHalfCloser(b)
	if err != nil {
		return err
	}
	defer abortOnDone(ctx, a, b)()

	var half sync.WaitGroup // both senders at the half-way mark
	half.Add(2)
	resume := make(chan struct{})
	var midwayErr error
	go func() {
		half.Wait()
		if opts.Midway != nil {
			midwayErr = opts.Midway()
		}
		close(resume)
	}()

	var wg sync.WaitGroup
	var sentAB, sentBA, gotAB, gotBA Result
	var errs [4]error
	wg.Add(4)
	go func() { defer wg.Done(); sentAB, errs[0] = sendInHalves(ha, 1, opts.AtoB, &half, resume) }()
	go func() { defer wg.Done(); sentBA, errs[1] = sendInHalves(hb, 2, opts.BtoA, &half, resume) }()
	go func() { defer wg.Done(); gotAB, errs[2] = Receive(b) }()
	go func() { defer wg.Done(); gotBA, errs[3] = Receive(a) }()
	wg.Wait()

	if err := errors.Join(ctx.Err(), errors.Join(errs[:]...), midwayErr); err != nil {
		return fmt.Errorf("conformance: exchange: %w (a->b sent %d got %d, b->a sent %d got %d)",
			err, sentAB.N, gotAB.N, sentBA.N, gotBA.N)
	}
	return errors.Join(compare("a->b", sentAB, gotAB, opts.AtoB), compare("b->a", sentBA, gotBA, opts.BtoA))
}

// sendInHalves sends Stream(seed, n) to c in two halves, marking half done
// and waiting for resume in between, then half-closes c. It always marks
// half once.
func sendInHalves(c HalfCloser, seed uint64, n int64, half *sync.WaitGroup, resume <-chan struct{}) (Result, error) {
	h := sha256.New()
	w := io.MultiWriter(c, h)
	src := Stream(seed, n)
	first, err := copyBuffer(w, io.LimitReader(src, n/2))
	half.Done()
	if err != nil {
		return Result{N: first, Sum: sumOf(h)}, err
	}
	<-resume
	rest, err := copyBuffer(w, src)
	res := Result{N: first + rest, Sum: sumOf(h)}
	if err != nil {
		return res, err
	}
	return res, c.CloseWrite()
}

// compare checks that got is exactly sent, and sent is want bytes long.
func compare(dir string, sent, got Result, want int64) error {
	switch {
	case sent.N != want:
		return fmt.Errorf("conformance: %s: sent %d bytes, want %d", dir, sent.N, want)
	case got.N != sent.N:
		return fmt.Errorf("conformance: %s: received %d bytes of %d", dir, got.N, sent.N)
	case got.Sum != sent.Sum:
		return fmt.Errorf("conformance: %s: %d bytes arrived corrupted: sha256 %v, sent %v", dir, got.N, got.Sum, sent.Sum)
	}
	return nil
}

// HalfClose runs the half-close scenario: first sends n1 bytes and
// half-closes; second reads them to EOF and only then sends n2 bytes and
// half-closes, while first, its sending side already closed, reads them to
// EOF. Both ends are then closed. It checks every byte (SHA-256) and that
// each EOF came exactly after the data.
func HalfClose(ctx context.Context, first, second net.Conn, n1, n2 int64) error {
	h1, err := asHalfCloser(first)
	if err != nil {
		return err
	}
	h2, err := asHalfCloser(second)
	if err != nil {
		return err
	}
	defer abortOnDone(ctx, first, second)()

	type recv struct {
		res Result
		err error
	}
	got1 := make(chan recv, 1) // what first receives
	go func() { r, err := Receive(first); got1 <- recv{r, err} }()
	got2 := make(chan recv, 1) // what second receives
	go func() { r, err := Receive(second); got2 <- recv{r, err} }()

	sent1, err := Send(h1, 11, n1)
	if err != nil {
		return fmt.Errorf("conformance: half-close: first sending: %w", err)
	}
	if err := h1.CloseWrite(); err != nil {
		return fmt.Errorf("conformance: half-close: first CloseWrite: %w", err)
	}
	r := <-got2
	if r.err != nil {
		return fmt.Errorf("conformance: half-close: second reading to EOF: %w", r.err)
	}
	if err := compare("first->second", sent1, r.res, n1); err != nil {
		return err
	}
	sent2, err := Send(h2, 12, n2)
	if err != nil {
		return fmt.Errorf("conformance: half-close: second sending after EOF: %w", err)
	}
	if err := h2.CloseWrite(); err != nil {
		return fmt.Errorf("conformance: half-close: second CloseWrite: %w", err)
	}
	r = <-got1
	if r.err != nil {
		return fmt.Errorf("conformance: half-close: first reading after its CloseWrite: %w", r.err)
	}
	if err := compare("second->first", sent2, r.res, n2); err != nil {
		return err
	}
	return errors.Join(first.Close(), second.Close())
}
