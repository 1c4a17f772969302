package stack_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The peer's DATA_FIN against its mappings, attacked in the window: an
// on-path attacker at the server's inbound link adds a forged DATA_FIN
// right after one of the client's data segments. The client uploads
// dfSize bytes and closes; the server reads to the end.

const dfSize = 8 << 20

type dfResult struct {
	got []byte
	err error
}

// dfUpload runs the upload with pick installed at the server's inbound
// link; it returns what the server read (and how that ended), the
// client's Write+CloseWrite error and what a Read on the client returned
// after (the peer's reset shows there), within limit.
func dfUpload(t *testing.T, pick func(seg header.TCP, payloadLen int, d option.DSS, hasDSS bool) [][]byte, limit time.Duration) (sent []byte, srv dfResult, werr, cerr error) {
	t.Helper()
	a, b := tun.NewPipe(tun.LinkParams{Delay: time.Millisecond}, tun.LinkParams{Delay: time.Millisecond})
	sp := newSpoofer(b)
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	require.NoError(t, err)
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: sp, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	require.NoError(t, err)
	t.Cleanup(func() { sa.Close(); sb.Close() })
	c1, c2 := dialAccept(t, sa, sb, "10.9.0.2")
	require.True(t, c1.MultipathTCP())
	sp.setPick(pick)

	sent, err = io.ReadAll(newStream(7, dfSize))
	require.NoError(t, err)
	wch := make(chan error, 1)
	go func() {
		_, err := c1.Write(sent)
		if err == nil {
			err = c1.CloseWrite()
		}
		wch <- err
	}()
	rch := make(chan dfResult, 1)
	go func() {
		got, err := io.ReadAll(c2)
		rch <- dfResult{got, err}
	}()
	select {
	case srv = <-rch:
	case <-time.After(limit):
		t.Fatalf("the server's Read did not end within %v", limit)
	}
	select {
	case werr = <-wch:
	case <-time.After(limit):
		t.Fatalf("the client's Write did not end within %v", limit)
	}
	cch := make(chan error, 1)
	go func() {
		c1.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, c1)
		cch <- err
	}()
	if srv.err == nil {
		c2.Close() // a clean end: our DATA_FIN lets the client's Read end too
	}
	cerr = <-cch
	return sent, srv, werr, cerr
}

// firstMappingAfter returns a pick that, once, on the first data segment
// whose mapping starts at least past bytes after the first mapping seen,
// spoofs what at(d) returns.
func firstMappingAfter(past uint64, at func(d option.DSS) []byte, fired *atomic.Bool) func(header.TCP, int, option.DSS, bool) [][]byte {
	var base uint64
	var haveBase bool
	return func(seg header.TCP, n int, d option.DSS, ok bool) [][]byte {
		if !ok || !d.HasMapping || n == 0 || d.DataLen == 0 || d.SSN == 0 {
			return nil
		}
		if !haveBase {
			base, haveBase = d.DSN, true
		}
		if d.DSN-base < past || !fired.CompareAndSwap(false, true) {
			return nil
		}
		return [][]byte{at(d)}
	}
}

// requireResetBothEnds checks that the forged DATA_FIN ended the
// connection with an error on both ends (never a clean EOF on one and
// "all sent" on the other), unless every byte went through intact.
func requireResetBothEnds(t *testing.T, sent []byte, srv dfResult, werr, cerr error) {
	t.Helper()
	t.Logf("server read %d of %d bytes, then %v; client write: %v; client read: %v", len(srv.got), len(sent), srv.err, werr, cerr)
	require.True(t, bytes.Equal(sent[:len(srv.got)], srv.got), "the server read only the client's bytes, in order")
	require.Error(t, srv.err, "no clean EOF after %d of %d bytes", len(srv.got), len(sent))
	require.True(t, errors.Is(srv.err, stack.ErrProtocol) && errors.Is(srv.err, syscall.ECONNRESET), "server: %v", srv.err)
	require.ErrorIs(t, cerr, syscall.ECONNRESET, "the client sees the reset (MP_FASTCLOSE)")
	require.ErrorIs(t, cerr, stack.ErrPeerFastclose)
}

// TestSpoofedDataFinAtNextMapping: a DATA_FIN forged at the end of a
// mapping that has just started arriving, i.e. where the client's next
// mapping begins. Before the fix the server gave its application a clean
// EOF there, DATA_ACKed the client's later bytes and dropped them: the
// client's writes succeeded ("all sent") and the server had a truncated
// stream. Now the client's next mapping, beyond the accepted DATA_FIN, is
// a protocol error: the connection is reset. The client is never told
// that all was sent. The server sees the reset too, unless its reader
// reached the forged DATA_FIN before the client's next mapping arrived:
// then it read a clean EOF first. That race is the known gap of issue 12
// (README: Security notes); a hold-off before EOF would close it for a
// peer that keeps sending. Seen in about 1 run in 20 under -race.
func TestSpoofedDataFinAtNextMapping(t *testing.T) {
	var fired atomic.Bool
	pick := firstMappingAfter(1<<20, func(d option.DSS) []byte { return dataFinDSS(d.DSN + uint64(d.DataLen)) }, &fired)
	sent, srv, werr, cerr := dfUpload(t, pick, 30*time.Second)
	require.True(t, fired.Load())
	if srv.err == nil && len(srv.got) < len(sent) {
		t.Logf("the known gap: the server read a clean EOF after %d of %d bytes before the client's next mapping arrived", len(srv.got), len(sent))
		require.True(t, bytes.Equal(sent[:len(srv.got)], srv.got), "the server read only the client's bytes, in order")
		require.ErrorIs(t, cerr, stack.ErrPeerFastclose, "the client is never told all was sent: it sees the reset")
		return
	}
	requireResetBothEnds(t, sent, srv, werr, cerr)
}

// TestSpoofedDataFinInsideMapping: a DATA_FIN forged in the middle of a
// mapping whose first segment has arrived. It contradicts that mapping
// and is not accepted, so the upload completes intact and ends at the
// client's real DATA_FIN. Before the fix it was accepted, the in-order
// point jumped past it (an equality test), the client's real DATA_FIN was
// ignored and the connection hung.
func TestSpoofedDataFinInsideMapping(t *testing.T) {
	var fired atomic.Bool
	pick := firstMappingAfter(1<<20, func(d option.DSS) []byte { return dataFinDSS(d.DSN + uint64(d.DataLen)/2) }, &fired)
	sent, srv, werr, cerr := dfUpload(t, pick, 20*time.Second)
	require.True(t, fired.Load())
	require.NoError(t, srv.err)
	require.True(t, bytes.Equal(sent, srv.got), "the server read every byte (%d of %d)", len(srv.got), len(sent))
	require.NoError(t, werr)
	require.NoError(t, cerr, "a clean end both ways")
}

// TestSpoofedSecondDataFin: a DATA_FIN forged far beyond anything mapped
// is accepted (nothing contradicts it yet); the client's real DATA_FIN,
// at another DSN, then is a protocol error that resets both ends. Before
// the fix the real one was ignored: no EOF, the client's close timed out.
func TestSpoofedSecondDataFin(t *testing.T) {
	var fired atomic.Bool
	pick := firstMappingAfter(1<<20, func(d option.DSS) []byte { return dataFinDSS(d.DSN + 32<<20) }, &fired)
	sent, srv, werr, cerr := dfUpload(t, pick, 10*time.Second)
	require.True(t, fired.Load())
	requireResetBothEnds(t, sent, srv, werr, cerr)
}
