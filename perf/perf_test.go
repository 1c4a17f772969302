package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
)

// testLink is each emulated path between the two in-process stacks:
// slow enough that the race detector and two cores keep up, fast enough
// for short tests.
var testLink = tun.LinkParams{Rate: 100e6, Delay: 2 * time.Millisecond}

// stackPair is two in-process umptcp stacks joined by emulated paths,
// path i being 10.98.i.1 (client) <-> 10.98.i.2 (server), and our server
// serving on the second one.
type stackPair struct {
	client, server *stack.Stack
	addr           string // the server's address on path 0
	serveErr       chan error
	results        chan serverOutcome
}

type serverOutcome struct {
	res Result
	err error
}

// newStackPair builds the stacks and starts Serve; everything is closed
// when the test ends.
func newStackPair(t *testing.T, paths int, so ServerOptions) *stackPair {
	t.Helper()
	var cl, sl []stack.Link
	for i := range paths {
		p := testLink
		p.Seed = int64(i + 1)
		a, b := tun.NewPipe(p, p)
		cl = append(cl, stack.Link{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.98.%d.1/24", i))}})
		sl = append(sl, stack.Link{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.98.%d.2/24", i))}})
	}
	c, err := stack.New(stack.Config{Links: cl})
	require.NoError(t, err)
	s, err := stack.New(stack.Config{Links: sl})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); s.Close() })
	ln, err := s.Listen("tcp", fmt.Sprintf(":%d", DefaultPort))
	require.NoError(t, err)
	sp := &stackPair{client: c, server: s, addr: fmt.Sprintf("10.98.0.2:%d", DefaultPort),
		serveErr: make(chan error, 1), results: make(chan serverOutcome, 8)}
	ctx, cancel := context.WithCancel(context.Background())
	user := so.OnResult
	so.OnResult = func(r Result, err error) {
		if user != nil {
			user(r, err)
		}
		sp.results <- serverOutcome{r, err}
	}
	go func() { sp.serveErr <- Serve(ctx, ln, so) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sp.serveErr:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return sp
}

func (sp *stackPair) dial(ctx context.Context) (net.Conn, error) {
	return sp.client.DialContext(ctx, "tcp", sp.addr)
}

// serverResult waits for the server's outcome of the next test.
func (sp *stackPair) serverResult(t *testing.T) (Result, error) {
	t.Helper()
	select {
	case o := <-sp.results:
		return o.res, o.err
	case <-time.After(30 * time.Second):
		t.Fatal("the server reported no result")
	}
	return Result{}, nil
}

// intervalLog collects interval reports (they come from other goroutines).
type intervalLog struct {
	mu  sync.Mutex
	ivs []Interval
}

func (l *intervalLog) add(iv Interval) {
	l.mu.Lock()
	l.ivs = append(l.ivs, iv)
	l.mu.Unlock()
}

func (l *intervalLog) all() []Interval {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Interval(nil), l.ivs...)
}

// TestClientServerInProcess runs our client against our server over two
// in-process stacks joined by two emulated paths: both directions, ending
// by time and by bytes, one and two streams. Both sides must agree on
// every stream's figures, each stream must be one MPTCP connection over
// both paths, and the interval reports (per subflow too) must add up.
func TestClientServerInProcess(t *testing.T) {
	const n = 6 << 20
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"time", Options{Duration: 1500 * time.Millisecond}},
		{"time-reverse", Options{Duration: 1500 * time.Millisecond, Reverse: true}},
		{"bytes", Options{Bytes: n}},
		{"bytes-reverse", Options{Bytes: n, Reverse: true}},
		{"parallel-time", Options{Duration: 1500 * time.Millisecond, Parallel: 2, BlockSize: 64 << 10}},
		{"parallel-bytes-reverse", Options{Bytes: n, Parallel: 2, Reverse: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvLog, cliLog intervalLog
			sp := newStackPair(t, 2, ServerOptions{Interval: 500 * time.Millisecond, OnInterval: srvLog.add})
			o := tc.o
			o.Interval = 250 * time.Millisecond
			o.OnInterval = cliLog.add
			var started Start
			o.OnStart = func(s Start) { started = s }
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := RunClient(ctx, sp.dial, o)
			require.NoError(t, err)
			sres, serr := sp.serverResult(t)
			require.NoError(t, serr)

			parallel := max(o.Parallel, 1)
			require.Len(t, started.Streams, parallel)
			require.True(t, started.Client)
			require.Len(t, res.Streams, parallel)
			require.Len(t, sres.Streams, parallel)
			require.Equal(t, o.Reverse, sres.Start.Params.Reverse)
			require.Equal(t, parallel, sres.Start.Params.Parallel)
			require.True(t, res.MPTCP(), "every stream is MPTCP")
			require.True(t, sres.MPTCP(), "every stream is MPTCP (server)")

			sent, received := res.Totals()
			ssent, sreceived := sres.Totals()
			require.Positive(t, sent.Bytes)
			require.Positive(t, received.Bytes)
			require.LessOrEqual(t, received.Bytes, sent.Bytes)
			require.Equal(t, sent.Bytes, ssent.Bytes, "both sides agree on what was sent")
			require.Equal(t, received.Bytes, sreceived.Bytes, "both sides agree on what was received")
			require.InDelta(t, sent.Elapsed.Seconds(), ssent.Elapsed.Seconds(), 1e-5, "elapsed times travel in float seconds")
			require.InDelta(t, received.Elapsed.Seconds(), sreceived.Elapsed.Seconds(), 1e-5)
			if o.Bytes > 0 {
				require.Equal(t, o.Bytes, sent.Bytes, "-n sends exactly that many bytes in all")
				if o.Reverse {
					require.Equal(t, o.Bytes, received.Bytes, "in reverse mode the client waits for every byte")
				}
			}
			for i, s := range res.Streams {
				require.Equal(t, streamID(i), s.ID)
				require.Equal(t, !o.Reverse, s.Sender)
				require.True(t, s.HasStats)
				require.Len(t, s.Subflows, 2, "stream %d: the initial subflow and a join over the second path", s.ID)
				require.False(t, s.Subflows[0].Join)
				require.True(t, s.Subflows[1].Join)
				var onWire uint64
				for _, sf := range s.Subflows {
					if s.Sender {
						onWire += sf.Sent
					} else {
						onWire += sf.Received
					}
				}
				require.Positive(t, onWire, "stream %d: its subflows carried its data", s.ID)
			}

			// The client's intervals cover the test: their bytes add up
			// to each stream's total, and they carry the subflows.
			ivs := cliLog.all()
			require.NotEmpty(t, ivs)
			sum := map[int]int64{}
			var sawSubflows bool
			var prevEnd time.Duration
			for _, iv := range ivs {
				require.False(t, iv.Omitted)
				require.Equal(t, prevEnd, iv.Start, "intervals are contiguous")
				require.Greater(t, iv.End, iv.Start)
				prevEnd = iv.End
				var b int64
				for _, s := range iv.Streams {
					sum[s.ID] += s.Bytes
					b += s.Bytes
					if len(s.Subflows) == 2 {
						sawSubflows = true
					}
				}
				require.Equal(t, b, iv.Bytes)
			}
			for _, s := range res.Streams {
				require.Equal(t, s.Bytes, sum[s.ID], "stream %d: the intervals add up to the total", s.ID)
			}
			require.True(t, sawSubflows, "interval reports list both subflows")
			// The last interval ends with the test, unless it would have
			// been a sliver (under a tenth of the interval) without data.
			require.InDelta(t, res.Elapsed.Seconds(), prevEnd.Seconds(), (o.Interval / 10).Seconds(), "the last interval ends with the test")
			require.NotEmpty(t, srvLog.all(), "the server reports intervals too")
		})
	}
}

// TestServerBusy checks that a second client is turned away while a test
// runs, with iperf3's ACCESS_DENIED, and that the first test is unharmed.
func TestServerBusy(t *testing.T) {
	sp := newStackPair(t, 1, ServerOptions{Interval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := RunClient(ctx, sp.dial, Options{Duration: 1500 * time.Millisecond, Interval: -1,
			OnStart: func(Start) { close(started) }})
		first <- err
	}()
	select {
	case <-started:
	case err := <-first:
		t.Fatalf("first test: %v", err)
	}
	_, err := RunClient(ctx, sp.dial, Options{Duration: time.Second})
	require.ErrorIs(t, err, ErrBusy)
	require.NoError(t, <-first)
	_, serr := sp.serverResult(t)
	require.NoError(t, serr)
}

// TestClientInterrupted cancels a client mid-test: the client returns the
// context's error, and the server learns that the client terminated.
func TestClientInterrupted(t *testing.T) {
	sp := newStackPair(t, 1, ServerOptions{Interval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := RunClient(ctx, sp.dial, Options{Duration: time.Minute, Interval: 200 * time.Millisecond,
		OnInterval: func(Interval) { cancel() }})
	require.ErrorIs(t, err, context.Canceled)
	_, serr := sp.serverResult(t)
	require.ErrorContains(t, serr, "client has terminated")
}

// TestServeOnce checks -1: Serve returns after one test, with its error.
func TestServeOnce(t *testing.T) {
	sp := newStackPair(t, 1, ServerOptions{Once: true, Interval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := RunClient(ctx, sp.dial, Options{Bytes: 1 << 20, Interval: -1})
	require.NoError(t, err)
	select {
	case err := <-sp.serveErr:
		require.NoError(t, err)
		sp.serveErr <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve with Once did not return after the test")
	}
}

// TestOmit checks -O: the omitted period is reported as such and left
// out of the totals, on both sides.
func TestOmit(t *testing.T) {
	var log intervalLog
	sp := newStackPair(t, 1, ServerOptions{Interval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := RunClient(ctx, sp.dial, Options{Duration: time.Second, Omit: 600 * time.Millisecond, Interval: 300 * time.Millisecond, OnInterval: log.add})
	require.NoError(t, err)
	sres, serr := sp.serverResult(t)
	require.NoError(t, serr)
	var omitted int
	var kept int64
	for _, iv := range log.all() {
		if iv.Omitted {
			omitted++
		} else {
			kept += iv.Bytes
		}
	}
	require.GreaterOrEqual(t, omitted, 3, "0.6 s rounds up to 1 s: 0.3 s intervals, then the rest")
	require.Equal(t, res.Streams[0].Bytes, kept)
	require.InDelta(t, 1.0, res.Elapsed.Seconds(), 0.35) // loaded machines (-race) fire timers late
	// The server leaves out its first second too (its end comes with
	// our TEST_END, later by the control connection's latency, which the
	// race detector can stretch).
	require.Less(t, sres.Elapsed, 1900*time.Millisecond)
	require.Greater(t, sres.Elapsed, 900*time.Millisecond)
	require.Equal(t, time.Second, sres.Start.Params.Omit, "omit travels in whole seconds")
}

// pipeListener is an in-memory net.Listener over net.Pipe, for protocol
// tests that need no network.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.closed:
		return nil, errors.New("connection refused")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestServerRefusesUnsupported sends what `iperf3 -u` and `iperf3
// --bidir` send and expects iperf3's SERVER_ERROR "not implemented"; a
// raw client speaks the protocol here, as iperf3 does.
func TestServerRefusesUnsupported(t *testing.T) {
	for _, tc := range []struct {
		params string
		code   int32
	}{
		{`{"udp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":1,"len":1460,"client_version":"3.12"}`, errUnimp},
		{`{"tcp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":1,"bidirectional":true,"len":131072,"client_version":"3.12"}`, errUnimp},
		{`{"tcp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":129,"len":131072}`, errNumStreams},
		{`{"tcp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":1,"len":2097152}`, errBlockSize},
		{`{"tcp":true,"time":86401,"parallel":1}`, errDuration},
		{`[1,2]`, errRecvParams},
	} {
		ln := newPipeListener()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		served := make(chan error, 1)
		go func() { served <- Serve(ctx, ln, ServerOptions{Once: true}) }()
		c, err := ln.dial(ctx)
		require.NoError(t, err)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		cookie, _ := newCookie()
		_, err = c.Write(cookie[:])
		require.NoError(t, err)
		var b [1]byte
		_, err = c.Read(b[:])
		require.NoError(t, err)
		require.Equal(t, byte(stateParamExchange), b[0])
		msg := append([]byte{0, 0, 0, byte(len(tc.params))}, tc.params...)
		_, err = c.Write(msg)
		require.NoError(t, err)
		_, err = c.Read(b[:])
		require.NoError(t, err)
		require.Equal(t, int8(stateServerError), int8(b[0]), tc.params)
		err = readServerError(c)
		var se *ServerError
		require.ErrorAs(t, err, &se)
		require.Equal(t, tc.code, se.Code, tc.params)
		c.Close()
		require.Error(t, <-served, "Serve -1 returns the refused test's error")
		cancel()
	}
}

// TestServerStreamCookie checks that a data stream with a wrong cookie is
// turned away (ACCESS_DENIED) while the right one is taken.
func TestServerStreamCookie(t *testing.T) {
	ln := newPipeListener()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, ServerOptions{Once: true, Interval: -1}) }()
	denied := make(chan byte, 1)
	calls := 0
	res, err := RunClient(ctx, func(ctx context.Context) (net.Conn, error) {
		calls++
		if calls == 2 {
			// Just before the data stream, a stranger connects with
			// another cookie.
			intruder, err := ln.dial(ctx)
			if err != nil {
				return nil, err
			}
			go func() {
				defer intruder.Close()
				intruder.SetDeadline(time.Now().Add(10 * time.Second))
				var bad [cookieSize]byte
				copy(bad[:], "notthecookie")
				intruder.Write(bad[:])
				var b [1]byte
				intruder.Read(b[:])
				denied <- b[0]
			}()
		}
		return ln.dial(ctx)
	}, Options{Bytes: 1 << 20, Interval: -1})
	require.NoError(t, err)
	require.Len(t, res.Streams, 1)
	require.Equal(t, int64(1<<20), res.Streams[0].Bytes)
	require.Positive(t, res.Streams[0].PeerBytes)
	require.Equal(t, byte(0xff), <-denied, "ACCESS_DENIED")
	require.NoError(t, <-served)
}

// TestServerTerminates ends the server mid-test: the client is told
// (SERVER_TERMINATE) and says so; Serve returns its context's error.
func TestServerTerminates(t *testing.T) {
	ln := newPipeListener()
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- Serve(sctx, ln, ServerOptions{Interval: 100 * time.Millisecond, OnInterval: func(Interval) { stop() }})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := RunClient(ctx, ln.dial, Options{Duration: time.Minute, Reverse: true, Interval: -1})
	require.ErrorContains(t, err, "server has terminated")
	require.ErrorIs(t, <-served, context.Canceled)
}

// TestBitrate checks -b: each stream is paced to the rate.
func TestBitrate(t *testing.T) {
	ln := newPipeListener()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go Serve(ctx, ln, ServerOptions{Once: true, Interval: -1})
	res, err := RunClient(ctx, ln.dial, Options{Duration: time.Second, Bitrate: 8e6, Parallel: 2, BlockSize: 8 << 10, Interval: -1})
	require.NoError(t, err)
	for _, s := range res.Streams {
		require.InDelta(t, 1e6, float64(s.Bytes), 0.15e6, "stream %d: 8 Mbit/s for 1 s", s.ID)
	}
}
