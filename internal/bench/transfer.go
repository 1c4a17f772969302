package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The transfers every scenario times: a sized one (how long do N bytes
// take) and a timed one (how many bytes arrive, sampled over time). Both
// are bounded in time and give up when the context ends.

// ioBuf is the size of each Write and each Read: large enough that the
// per-call cost does not matter, the same for every stack measured.
const ioBuf = 256 << 10

// closeOnDone closes conns when ctx ends, so that blocked reads and writes
// return. stop disarms it.
func closeOnDone(ctx context.Context, conns ...net.Conn) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range conns {
				c.Close()
			}
		case <-done:
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// closeWrite half-closes c: every connection type measured here (umptcp's,
// gonet's, the kernel's) has CloseWrite.
func closeWrite(c net.Conn) error {
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot half-close", c)
	}
	return hc.CloseWrite()
}

// sizedTransfer writes size bytes into w and reads them from r until end
// of stream, and returns the time from the first write to the end of
// stream. limit bounds the whole transfer (deadlines on both ends).
func sizedTransfer(ctx context.Context, w, r net.Conn, size int64, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)
	defer w.SetDeadline(time.Time{})
	defer r.SetDeadline(time.Time{})
	stop := closeOnDone(ctx, w, r)
	defer stop()

	werr := make(chan error, 1)
	start := time.Now()
	go func() {
		buf := make([]byte, ioBuf)
		var err error
		for left := size; left > 0 && err == nil; {
			n := min(int64(len(buf)), left)
			_, err = w.Write(buf[:n])
			left -= n
		}
		if err == nil {
			err = closeWrite(w)
		}
		werr <- err
	}()
	buf := make([]byte, ioBuf)
	var got int64
	var rerr error
	for {
		n, err := r.Read(buf)
		got += int64(n)
		if err != nil {
			rerr = err
			break
		}
	}
	el := time.Since(start)
	we := <-werr // the write deadline bounds this
	if got != size {
		if ctx.Err() != nil {
			return el, ctx.Err()
		}
		return el, fmt.Errorf("received %d of %d bytes within %v: read: %v; write: %v", got, size, limit, rerr, we)
	}
	if we != nil {
		return el, fmt.Errorf("write: %w", we)
	}
	return el, nil
}

// trace is what a timed transfer saw, sampled every sampleStep.
type trace struct {
	T     []float64  // seconds since the first write
	App   []uint64   // bytes the receiving application had read
	Paths [][]uint64 // per path: bytes the link delivered in the data direction (IP headers included)
}

// sampleStep is the sampling period of timed transfers: fine enough to
// time a recovery to 10 ms; plots use 100 ms windows.
const sampleStep = 10 * time.Millisecond

// timedOptions configure timedTransfer.
type timedOptions struct {
	duration time.Duration      // how long data flows
	paths    []func() uint64    // per-path delivered-byte counters to sample (may be nil)
	eventAt  time.Duration      // when to call event (if set)
	event    func(*trace) error // e.g. blackhole a path; sees the trace so far
}

// timedTransfer writes into w as fast as it can for o.duration while r
// reads, sampling the bytes read and the paths' counters. Then both
// connections are closed. A connection failing before the end is an
// error.
func timedTransfer(ctx context.Context, w, r net.Conn, o timedOptions) (*trace, error) {
	var read atomic.Uint64
	var stopping atomic.Bool
	stop := closeOnDone(ctx, w, r)
	defer stop()
	errc := make(chan error, 2)
	go func() {
		buf := make([]byte, ioBuf)
		for {
			if _, err := w.Write(buf); err != nil {
				if stopping.Load() {
					err = nil
				}
				errc <- err
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, ioBuf)
		for {
			n, err := r.Read(buf)
			read.Add(uint64(n))
			if err != nil {
				if stopping.Load() {
					err = nil
				}
				errc <- err
				return
			}
		}
	}()

	tr := &trace{Paths: make([][]uint64, len(o.paths))}
	sample := func(at time.Duration) {
		tr.T = append(tr.T, at.Seconds())
		tr.App = append(tr.App, read.Load())
		for i, p := range o.paths {
			tr.Paths[i] = append(tr.Paths[i], p())
		}
	}
	start := time.Now()
	sample(0)
	tick := time.NewTicker(sampleStep)
	defer tick.Stop()
	var failure error
	pending := 2 // goroutines still to report on errc
	eventDone := o.event == nil
loop:
	for {
		select {
		case <-ctx.Done():
			failure = ctx.Err()
			break loop
		case err := <-errc:
			pending--
			failure = fmt.Errorf("connection failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			break loop
		case <-tick.C:
		}
		el := time.Since(start)
		sample(el)
		if !eventDone && el >= o.eventAt {
			eventDone = true
			if err := o.event(tr); err != nil {
				failure = err
				break loop
			}
		}
		if el >= o.duration {
			break loop
		}
	}
	stopping.Store(true)
	w.Close()
	r.Close()
	// Both goroutines end once their connection is closed; a stack that
	// does not let go is a failure of its own.
	bound := time.After(10 * time.Second)
	for ; pending > 0; pending-- {
		select {
		case <-errc:
		case <-bound:
			return tr, errors.Join(failure, errors.New("reader or writer did not stop within 10 s of closing the connections"))
		}
	}
	return tr, failure
}

// index returns the first sample at or after t seconds (len(T) if none).
func (tr *trace) index(t float64) int {
	for i, v := range tr.T {
		if v >= t {
			return i
		}
	}
	return len(tr.T)
}

// rateBetween returns the rate in bit/s of counter c between the samples
// at or after from and the last one at or before to (NaN if there are not
// two distinct samples).
func (tr *trace) rateBetween(c []uint64, from, to float64) float64 {
	i := tr.index(from)
	j := i
	for k := i; k < len(tr.T) && tr.T[k] <= to; k++ {
		j = k
	}
	if i >= len(tr.T) || j <= i {
		return math.NaN()
	}
	return float64(c[j]-c[i]) * 8 / (tr.T[j] - tr.T[i])
}

// goodput is the receiving application's rate between from and to, in
// bit/s.
func (tr *trace) goodput(from, to float64) float64 { return tr.rateBetween(tr.App, from, to) }

// windows returns counter c as rates in Mbit/s over consecutive windows of
// w seconds: X is each window's end.
func (tr *trace) windows(c []uint64, w float64) (x, y []float64) {
	if len(tr.T) == 0 {
		return nil, nil
	}
	prev := 0
	for next := w; ; next += w {
		j := tr.index(next - sampleStep.Seconds()/2)
		if j >= len(tr.T) {
			break
		}
		if tr.T[j] > tr.T[prev] {
			x = append(x, tr.T[j])
			y = append(y, float64(c[j]-c[prev])*8/(tr.T[j]-tr.T[prev])/1e6)
		}
		prev = j
	}
	return x, y
}

// recovery returns how long after at (seconds) the receiving
// application's goodput was back at threshold (bit/s): the start of the
// first 100 ms window, starting at or after at, whose goodput and whose
// next window's goodput both reach threshold (two windows, so that one
// burst of data released from reassembly does not count as recovered). ok
// is false if that never happened.
func (tr *trace) recovery(at, threshold float64) (after float64, ok bool) {
	const w = 0.1
	end := tr.T[len(tr.T)-1]
	for s := tr.index(at); s < len(tr.T); s++ {
		t0 := tr.T[s]
		if t0+2*w > end+1e-9 {
			break
		}
		if tr.goodput(t0, t0+w) >= threshold && tr.goodput(t0+w, t0+2*w) >= threshold {
			return t0 - at, true
		}
	}
	return 0, false
}

// chartSeries makes the plot's series from a trace: each path's delivered
// rate and the receiving application's goodput, in 100 ms windows.
func chartSeries(tr *trace, pathNames []string) []Series {
	var out []Series
	for i, c := range tr.Paths {
		x, y := tr.windows(c, 0.1)
		name := fmt.Sprintf("path %d", i)
		if i < len(pathNames) {
			name = pathNames[i]
		}
		out = append(out, Series{Name: name, X: x, Y: y})
	}
	x, y := tr.windows(tr.App, 0.1)
	out = append(out, Series{Name: "receiver goodput", X: x, Y: y})
	return out
}
