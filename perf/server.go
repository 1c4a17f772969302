package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// ServerOptions configure Serve.
type ServerOptions struct {
	Interval time.Duration // report interval (default 1 s); negative: none
	Once     bool          // serve one test, then return its error (iperf3 -s -1)

	// OnStart, OnInterval: as in Options, for each test. OnResult, if
	// set, is called after each test with its result or the error that
	// ended it. All run on the test's goroutines.
	OnStart    func(Start)
	OnInterval func(Interval)
	OnResult   func(Result, error)
}

// Serve accepts iperf3 clients on ln and runs their tests, one at a time
// like `iperf3 -s`: a client that connects while a test runs is turned
// away (ACCESS_DENIED). Data streams arrive on ln too, told apart by the
// test's cookie.
//
// Serve closes ln when it returns: when ctx ends (it then ends the test
// in progress, telling the client with SERVER_TERMINATE, and returns
// ctx's error), when ln fails, or, with Once, after the first test, whose
// error it returns.
func Serve(ctx context.Context, ln net.Listener, o ServerOptions) error {
	s := &server{o: o, ln: ln}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			done, onceErr := s.onceDone, s.onceErr
			s.mu.Unlock()
			switch {
			case done:
				return onceErr
			case ctx.Err() != nil:
				return context.Cause(ctx)
			}
			return err
		}
		s.dispatch(ctx, c)
	}
}

type server struct {
	o  ServerOptions
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	cur      *serverTest // the test in progress, if any
	taken    bool        // Once: the one test has begun
	onceDone bool
	onceErr  error
}

// dispatch decides what a new connection is: the control connection of a
// new test, a data stream of the test in progress, or a client to turn
// away.
func (s *server) dispatch(ctx context.Context, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cur == nil && !s.taken:
		t := &serverTest{ctrl: newCtrlConn(ctx, c), pending: make(chan net.Conn, maxStreams)}
		s.cur = t
		s.taken = s.o.Once
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			res, err := t.run(ctx, s.o)
			s.mu.Lock()
			s.cur = nil
			s.mu.Unlock()
			if s.o.OnResult != nil {
				s.o.OnResult(res, err)
			}
			if s.o.Once {
				s.mu.Lock()
				s.onceDone, s.onceErr = true, err
				s.mu.Unlock()
				s.ln.Close()
			}
		}()
	case s.cur != nil && s.cur.offer(c):
	default:
		go deny(c)
	}
}

// serverTest is one test on the server side.
type serverTest struct {
	ctrl   *ctrlConn
	cookie [cookieSize]byte

	mu        sync.Mutex
	accepting bool          // between CREATE_STREAMS and the last stream
	pending   chan net.Conn // candidate data streams, in the order they came
}

// offer hands c to the test if it is waiting for data streams.
func (t *serverTest) offer(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.accepting {
		return false
	}
	select {
	case t.pending <- c:
		return true
	default:
		return false
	}
}

// setAccepting opens or closes the test to data streams; on closing it
// turns away whatever is still pending.
func (t *serverTest) setAccepting(on bool) {
	t.mu.Lock()
	t.accepting = on
	t.mu.Unlock()
	if on {
		return
	}
	for {
		select {
		case c := <-t.pending:
			go deny(c)
		default:
			return
		}
	}
}

// streamCookieOK reads a data stream's cookie and compares it with the
// test's, as C strings (iperf3 uses strcmp).
func (t *serverTest) streamCookieOK(c net.Conn) bool {
	var got [cookieSize]byte
	c.SetReadDeadline(time.Now().Add(cookieTimeout))
	_, err := io.ReadFull(c, got[:])
	c.SetReadDeadline(time.Time{})
	cstr := func(b []byte) []byte {
		if i := bytes.IndexByte(b, 0); i >= 0 {
			return b[:i]
		}
		return b
	}
	return err == nil && bytes.Equal(cstr(got[:]), cstr(t.cookie[:]))
}

func (t *serverTest) run(ctx context.Context, o ServerOptions) (Result, error) {
	ctrl := t.ctrl
	defer ctrl.Close()
	var streams []*stream
	defer func() {
		t.setAccepting(false)
		for _, s := range streams {
			s.conn.Close()
		}
	}()
	terminate := func(err error) error {
		if ctx.Err() != nil {
			ctrl.last(stateServerTerminate)
			return context.Cause(ctx)
		}
		return err
	}

	ctrl.within(stepTimeout)
	if _, err := io.ReadFull(ctrl, t.cookie[:]); err != nil {
		return Result{}, ctrlError(ctx, "reading the cookie", err)
	}
	if err := ctrl.writeState(stateParamExchange); err != nil {
		return Result{}, err
	}
	data, err := readMessage(ctrl, maxMessage)
	if err != nil {
		return Result{}, ctrlError(ctx, "reading the parameters", err)
	}
	p, err := DecodeParams(data)
	if err != nil {
		writeServerError(ctrl, errRecvParams)
		return Result{}, err
	}
	if code := p.Check(); code != 0 {
		writeServerError(ctrl, code)
		why := serverErrorText[code]
		if len(p.Unsupported) > 0 {
			why = "not supported: " + strings.Join(p.Unsupported, ", ")
		}
		return Result{}, fmt.Errorf("refused the client's test: %s", why)
	}

	t.setAccepting(true)
	if err := ctrl.writeState(stateCreateStreams); err != nil {
		return Result{}, err
	}
	ctrl.within(0)
	msg := ctrl.readStateAsync()
	setup := time.NewTimer(stepTimeout)
	defer setup.Stop()
	for len(streams) < p.Parallel {
		select {
		case c := <-t.pending:
			if !t.streamCookieOK(c) {
				go deny(c)
				continue
			}
			streams = append(streams, newStream(streamID(len(streams)), c, p.Reverse))
		case m := <-msg:
			return Result{}, clientGone(ctx, m, stateCreateStreams)
		case <-setup.C:
			return Result{}, fmt.Errorf("only %d of %d data streams connected within %v", len(streams), p.Parallel, stepTimeout)
		case <-ctx.Done():
			return Result{}, terminate(nil)
		}
	}
	t.setAccepting(false)

	if err := ctrl.writeState(stateTestStart); err != nil {
		return Result{}, err
	}
	start := Start{Time: time.Now(), Cookie: cookieString(t.cookie[:]), Params: p, Control: connInfo(ctrl.Conn)}
	for _, s := range streams {
		start.Streams = append(start.Streams, s.StreamInfo)
	}
	if o.OnStart != nil {
		o.OnStart(start)
	}
	r := newRun(p, streams, interval(o.Interval), o.OnInterval)
	r.begin()
	defer r.wg.Wait()
	defer func() { // before waiting for the data goroutines: unblock them
		for _, s := range streams {
			s.conn.Close()
		}
	}()
	defer r.stop()
	if err := ctrl.writeState(stateTestRunning); err != nil {
		return Result{}, err
	}

	var watchdog <-chan time.Time
	if p.Duration > 0 {
		w := time.NewTimer(p.Duration + p.Omit + graceTimeout)
		defer w.Stop()
		watchdog = w.C
	}
	idle := time.NewTicker(idleTimeout / 8)
	defer idle.Stop()
	var lastMoved int64
	lastMove := time.Now()
wait:
	for {
		select {
		case m := <-msg:
			if m.err == nil && m.state == stateTestEnd {
				break wait
			}
			r.stop()
			return Result{}, clientGone(ctx, m, stateTestEnd)
		case <-r.failed:
			r.stop()
			return Result{}, r.failErr
		case <-watchdog:
			r.stop()
			return Result{}, fmt.Errorf("the client did not end the test within %v of its %v", graceTimeout, p.Duration+p.Omit)
		case now := <-idle.C:
			var moved int64
			for _, s := range streams {
				moved += s.bytes.Load()
			}
			if moved != lastMoved {
				lastMoved, lastMove = moved, now
			} else if now.Sub(lastMove) >= idleTimeout {
				r.stop()
				return Result{}, fmt.Errorf("no data moved for %v", idleTimeout)
			}
		case <-ctx.Done():
			r.stop()
			return Result{}, terminate(nil)
		}
	}
	r.stop()
	for _, s := range streams { // iperf3 closes its streams at TEST_END
		s.conn.Close()
	}
	if err := ctrl.writeState(stateExchangeResults); err != nil {
		return Result{}, err
	}
	ctrl.within(stepTimeout)
	data, err = readMessage(ctrl, maxMessage)
	if err != nil {
		return Result{}, terminate(ctrlError(ctx, "reading the client's results", err))
	}
	peer, err := DecodeResults(data)
	if err != nil {
		return Result{}, fmt.Errorf("the client's results: %w", err)
	}
	if err := writeMessage(ctrl, r.wireResults(p.Reverse)); err != nil {
		return Result{}, fmt.Errorf("sending the results: %w", err)
	}
	res, rerr := r.result(start, peer)
	if err := ctrl.writeState(stateDisplayResults); err != nil {
		return res, err
	}
	// The client answers IPERF_DONE; iperf3 takes a client that just
	// closes the connection instead as done too.
	m := ctrl.readState()
	switch {
	case m.err == nil && m.state != stateIperfDone:
		return res, fmt.Errorf("unexpected %s from the client (expected %s)", stateName(m.state), stateName(stateIperfDone))
	case m.err != nil && !errors.Is(m.err, io.EOF):
		return res, terminate(ctrlError(ctx, "waiting for "+stateName(stateIperfDone), m.err))
	}
	return res, rerr
}

// clientGone is the error for a control message other than want.
func clientGone(ctx context.Context, m stateResult, want int8) error {
	switch {
	case m.err != nil:
		return ctrlError(ctx, "waiting for "+stateName(want), m.err)
	case m.state == stateClientTerminate:
		return errors.New("the client has terminated the test")
	}
	return fmt.Errorf("unexpected %s from the client (expected %s)", stateName(m.state), stateName(want))
}
