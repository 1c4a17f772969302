package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Options configure a client's test. The zero value is iperf3's default
// test: one stream, 10 seconds, client to server.
type Options struct {
	Duration  time.Duration // -t: how long to send (default 10 s); negative: until ctx ends
	Bytes     int64         // -n: bytes to send over all streams; ends the test instead of Duration
	Reverse   bool          // -R: the server sends, the client receives
	Parallel  int           // -P: data streams (default 1, at most 128)
	BlockSize int           // -l: bytes per write and read (default 128 KiB, at most 1 MiB)
	Bitrate   int64         // -b: bits per second per stream (0: unlimited)
	Omit      time.Duration // -O: leave this leading period out of the results
	Interval  time.Duration // -i: report interval (default 1 s); negative: none

	// OnStart, if set, is called once every stream is connected, before
	// data flows; OnInterval after each interval. Both run on the test's
	// goroutines: they must not block for long.
	OnStart    func(Start)
	OnInterval func(Interval)
}

// params checks o and returns the parameters to send.
func (o Options) params() (Params, error) {
	p := Params{Duration: o.Duration, Bytes: o.Bytes, Omit: o.Omit, Parallel: o.Parallel, Reverse: o.Reverse,
		BlockSize: o.BlockSize, Bitrate: o.Bitrate, Version: "umptcp-perf"}
	if p.Parallel == 0 {
		p.Parallel = 1
	}
	if p.BlockSize == 0 {
		p.BlockSize = DefaultBlockSize
	}
	switch {
	case o.Bytes < 0 || o.Bitrate < 0 || o.Omit < 0 || o.Parallel < 0 || o.BlockSize < 0:
		return p, errors.New("perf: negative option")
	case o.Bytes > 0 && o.Duration != 0:
		return p, errors.New("perf: give either a duration or a byte count, not both")
	case o.Bytes > 0:
		p.Duration = 0
	case o.Duration == 0:
		p.Duration = 10 * time.Second
	case o.Duration < 0:
		p.Duration = 0 // iperf3's -t 0: no end but the client's interruption
	}
	// The server learns the omitted period in whole seconds: round it
	// the same way here so that both sides leave out the same.
	p.Omit = (p.Omit + time.Second - 1).Truncate(time.Second)
	if code := p.Check(); code != 0 {
		return p, fmt.Errorf("perf: %s", serverErrorText[code])
	}
	return p, nil
}

// interval returns the report interval: 1 s by default, 0 for none.
func interval(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return time.Second
	case d < 0:
		return 0
	}
	return d
}

// RunClient runs one test against the server that dial reaches. dial is
// called once for the control connection and once per data stream, each
// to the server's port. The Result has both sides' figures; it is empty
// when the test failed before the results exchange.
//
// Cancelling ctx ends the test: the server is told (CLIENT_TERMINATE) and
// the error is ctx's.
func RunClient(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), o Options) (Result, error) {
	p, err := o.params()
	if err != nil {
		return Result{}, err
	}
	cookie, err := newCookie()
	if err != nil {
		return Result{}, err
	}
	c, err := dial(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to the server: %w", err)
	}
	ctrl := newCtrlConn(ctx, c)
	defer ctrl.Close()

	cl := &client{ctx: ctx, ctrl: ctrl, p: p}
	defer cl.closeStreams()
	res, err := cl.run(dial, cookie, o)
	if err != nil && cl.terminate {
		ctrl.last(stateClientTerminate)
	}
	return res, err
}

type client struct {
	ctx       context.Context
	ctrl      *ctrlConn
	p         Params
	streams   []*stream
	terminate bool // the server is in a test: tell it when we give up
}

func (cl *client) closeStreams() {
	for _, s := range cl.streams {
		s.conn.Close()
	}
}

// expect reads the next state; anything but want is an error.
func (cl *client) expect(want int8) error {
	cl.ctrl.within(stepTimeout)
	r := cl.ctrl.readState()
	if r.err != nil {
		return ctrlError(cl.ctx, "waiting for "+stateName(want), r.err)
	}
	return cl.check(r.state, want)
}

// check turns a state other than want into the error it stands for.
func (cl *client) check(state, want int8) error {
	switch state {
	case want:
		return nil
	case stateAccessDenied:
		cl.terminate = false
		return ErrBusy
	case stateServerError:
		cl.terminate = false
		cl.ctrl.within(stepTimeout)
		return readServerError(cl.ctrl)
	case stateServerTerminate:
		cl.terminate = false
		return errors.New("the server has terminated the test")
	}
	return fmt.Errorf("unexpected %s from the server (expected %s)", stateName(state), stateName(want))
}

func (cl *client) run(dial func(context.Context) (net.Conn, error), cookie [cookieSize]byte, o Options) (Result, error) {
	ctrl, p := cl.ctrl, cl.p
	ctrl.within(stepTimeout)
	if _, err := ctrl.Write(cookie[:]); err != nil {
		return Result{}, fmt.Errorf("sending the cookie: %w", err)
	}
	if err := cl.expect(stateParamExchange); err != nil {
		return Result{}, err
	}
	cl.terminate = true
	if err := writeMessage(ctrl, p.wire()); err != nil {
		return Result{}, fmt.Errorf("sending the parameters: %w", err)
	}
	if err := cl.expect(stateCreateStreams); err != nil {
		return Result{}, err
	}
	for i := range p.Parallel {
		c, err := dial(cl.ctx)
		if err != nil {
			return Result{}, fmt.Errorf("connecting data stream %d: %w", i+1, err)
		}
		cl.streams = append(cl.streams, newStream(streamID(i), c, !p.Reverse))
		c.SetWriteDeadline(time.Now().Add(stepTimeout))
		_, err = c.Write(cookie[:])
		c.SetWriteDeadline(time.Time{})
		if err != nil {
			return Result{}, fmt.Errorf("sending the cookie on data stream %d: %w", i+1, err)
		}
	}
	if err := cl.expect(stateTestStart); err != nil {
		return Result{}, err
	}
	start := Start{Client: true, Time: time.Now(), Cookie: cookieString(cookie[:]), Params: p, Control: connInfo(ctrl.Conn)}
	for _, s := range cl.streams {
		start.Streams = append(start.Streams, s.StreamInfo)
	}
	if o.OnStart != nil {
		o.OnStart(start)
	}
	if err := cl.expect(stateTestRunning); err != nil {
		return Result{}, err
	}

	r := newRun(p, cl.streams, interval(o.Interval), o.OnInterval)
	r.watchRecv = p.Reverse
	r.begin()
	defer r.wg.Wait() // after closeStreams (deferred later, runs first) ends them
	defer cl.closeStreams()
	defer r.stop()

	ctrl.within(0)
	msg := ctrl.readStateAsync()
	var timeUp <-chan time.Time
	var omitDone <-chan struct{}
	var timer *time.Timer
	if p.Duration > 0 {
		timer = time.NewTimer(p.Duration + p.Omit)
		defer timer.Stop()
		timeUp = timer.C
		if p.Omit > 0 {
			omitDone = r.omitDone
		}
	}
	sendDone, recvDone := r.sendDone, r.recvDone
	if r.budget == 0 {
		sendDone, recvDone = nil, nil
	}
wait:
	select {
	case <-omitDone:
		// The measured period runs its full length from where the
		// omitted one really ended: a late timer on a loaded machine
		// must not shorten it.
		omitDone = nil
		timer.Reset(p.Duration)
		goto wait
	case <-timeUp:
	case <-sendDone:
	case <-recvDone:
	case m := <-msg:
		r.stop()
		if m.err != nil {
			return Result{}, ctrlError(cl.ctx, "during the test", m.err)
		}
		return Result{}, cl.check(m.state, stateTestEnd)
	case <-r.failed:
		r.stop()
		return Result{}, r.failErr
	case <-cl.ctx.Done():
		r.stop()
		return Result{}, context.Cause(cl.ctx)
	}
	r.stop()
	if err := ctrl.writeState(stateTestEnd); err != nil {
		return Result{}, err
	}
	// From here on the server expects our results, not a stray byte.
	cl.terminate = false
	// In reverse mode the streams keep being drained (uncounted) until
	// the server has stopped sending, so that it is never blocked.
	select {
	case m := <-msg:
		if m.err != nil {
			return Result{}, ctrlError(cl.ctx, "waiting for "+stateName(stateExchangeResults), m.err)
		}
		if err := cl.check(m.state, stateExchangeResults); err != nil {
			return Result{}, err
		}
	case <-time.After(stepTimeout):
		return Result{}, fmt.Errorf("waiting for %s: no answer from the server", stateName(stateExchangeResults))
	}
	ctrl.within(stepTimeout)
	if err := writeMessage(ctrl, r.wireResults(!p.Reverse)); err != nil {
		return Result{}, fmt.Errorf("sending the results: %w", err)
	}
	data, err := readMessage(ctrl, maxMessage)
	if err != nil {
		return Result{}, ctrlError(cl.ctx, "reading the server's results", err)
	}
	peer, err := DecodeResults(data)
	if err != nil {
		return Result{}, fmt.Errorf("the server's results: %w", err)
	}
	res, err := r.result(start, peer)
	if err != nil {
		return res, err
	}
	if err := cl.expect(stateDisplayResults); err != nil {
		return res, err
	}
	cl.terminate = false
	cl.closeStreams() // as iperf3 does, before the final IPERF_DONE
	if err := ctrl.writeState(stateIperfDone); err != nil {
		return res, err
	}
	return res, nil
}
