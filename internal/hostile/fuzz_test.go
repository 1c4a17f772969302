package hostile_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/umptcp/umptcp/internal/hostile"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzInboundSegments aims segments drawn from the fuzz input at a live
// MPTCP connection between two in-process stacks while it carries data
// both ways: random flags, MPTCP options (well-formed from the option
// package with random fields, or raw bytes), placements and sequence
// offsets around the window, both directions. Whatever arrives, the
// transfer must end intact on both ends or both ends must report an error:
// never a clean EOF after fewer or different bytes, never a panic.
//
// A stall is cut by a deadline, which both ends then report as an error:
// the target is about silent truncation and crashes, not liveness.
func FuzzInboundSegments(f *testing.F) {
	f.Add([]byte{0, 0x10, 1, 0, 0, 1, 0x03, 0, 0, 0, 5})                      // DSS DATA_ACK, out of window
	f.Add([]byte{0, 0x10, 2, 0, 0, 3, 1, 2})                                  // REMOVE_ADDR 1, bad checksum
	f.Add([]byte{1, 0x14, 3, 0, 0, 7, 0, 8, 0})                               // RST+MP_TCPRST toward the client, wrong ack
	f.Add([]byte{0, 0x10, 1, 0, 0, 6, 0})                                     // MP_FASTCLOSE with the right key, out of window
	f.Add([]byte{0, 0x18, 2, 0, 4, 8, 30, 6, 0x20, 1, 2, 3})                  // raw MPTCP option with data, bad checksum
	f.Add([]byte{1, 0x10, 1, 0xff, 0xff, 2, 9, 1, 0, 1, 2, 0, 3, 0, 4, 0, 1}) // ADD_ADDR out of window
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 512 {
			return // a few shots are enough; keep each run short
		}
		shots := decodeShots(in)
		runFuzzConn(t, shots)
	})
}

// fuzzShot is one injected segment.
type fuzzShot struct {
	dir     hostile.Dir
	flags   header.TCPFlags
	place   hostile.Placement
	delta   int32
	payload int
	v6      bool   // the first shot's v6 and csum choose the connection:
	csum    bool   // IPv6, DSS checksums
	opt     byte   // which option (see optionFor)
	arg     []byte // its fields
}

// maxShots bounds the segments of one run.
const maxShots = 8

// decodeShots reads shots from in: per shot a direction byte (bit 0; bits
// 1 and 2 of the first shot's pick IPv6 and DSS checksums), a flags
// byte, a placement byte, a 16-bit sequence offset (scaled by 64 so that
// it reaches past small windows), an option selector and the option's
// argument (a length byte and that many bytes).
func decodeShots(in []byte) []fuzzShot {
	var shots []fuzzShot
	r := byteReader(in)
	for len(r) > 0 && len(shots) < maxShots {
		d := r.u8()
		s := fuzzShot{
			dir:   hostile.Dir(d & 1),
			v6:    d&2 != 0,
			csum:  d&4 != 0,
			flags: header.TCPFlags(r.u8()) & (header.TCPFlagFin | header.TCPFlagSyn | header.TCPFlagRst | header.TCPFlagPsh | header.TCPFlagAck | header.TCPFlagUrg),
			place: hostile.Placement(r.u8() % 4),
		}
		s.delta = int32(int16(r.u16())) * 64
		sel := r.u8()
		s.opt = sel & 0x0f
		s.payload = int(sel>>4) * 16
		s.arg = r.bytes(int(r.u8() % 40))
		shots = append(shots, s)
	}
	return shots
}

type byteReader []byte

func (r *byteReader) u8() byte {
	if len(*r) == 0 {
		return 0
	}
	b := (*r)[0]
	*r = (*r)[1:]
	return b
}

func (r *byteReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }

func (r *byteReader) u64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(r.u8())
	}
	return v
}

func (r *byteReader) bytes(n int) []byte {
	n = min(n, len(*r))
	b := (*r)[:n]
	*r = (*r)[n:]
	return b
}

// optionFor builds the shot's option from the flow the segment is built
// on: numbers are taken relative to what the wire shows (DSNs, keys) so
// that the fuzzer reaches plausible values, not only random ones.
func optionFor(s *fuzzShot, f *hostile.Flow) []hostile.Appender {
	a := byteReader(s.arg)
	snd, rcv := &f.Side[s.dir], &f.Side[1-s.dir]
	small := func() uint64 { return uint64(int64(int16(a.u16()))) } // -32768..32767
	switch s.opt % 10 {
	case 1: // DSS
		fl := a.u8()
		d := &option.DSS{HasDataAck: fl&1 != 0, DataAck64: fl&2 != 0, HasMapping: fl&4 != 0, DSN64: fl&8 != 0, DataFin: fl&16 != 0}
		d.DataAck = rcv.MapEnd() + small()
		d.DSN = snd.MapEnd() + small()
		d.SSN = snd.SndNxt - snd.ISN + uint32(small())
		d.DataLen = uint16(s.payload) + uint16(a.u8()%4)
		if fl&32 != 0 || f.Checksum() {
			d.HasChecksum, d.Checksum = true, a.u16()
		}
		return []hostile.Appender{d}
	case 2: // ADD_ADDR, HMAC right or not
		id := a.u8()
		addr := netip.MustParseAddr("10.9.0.7")
		if f.V6() {
			addr = netip.MustParseAddr("fd09::7")
		}
		hm := a.u64()
		if hm&1 == 0 {
			hm = option.AddAddrHMAC(snd.Key, rcv.Key, id, addr, 0)
		}
		return []hostile.Appender{&option.AddAddr{AddrID: id, Addr: addr, HasHMAC: true, HMAC: hm, Echo: id&0x80 != 0}}
	case 3: // REMOVE_ADDR
		r := &option.RemoveAddr{N: 1 + a.u8()%4}
		for i := range r.N {
			r.IDs[i] = a.u8() % 4
		}
		return []hostile.Appender{r}
	case 4:
		return []hostile.Appender{&option.MPPrio{Backup: a.u8()&1 != 0}}
	case 5:
		return []hostile.Appender{&option.MPFail{DSN: snd.DSN + small()}}
	case 6: // MP_FASTCLOSE: the receiver's key, right or wrong
		k := rcv.Key
		if b := a.u8(); b != 0 {
			k ^= uint64(b)
		}
		return []hostile.Appender{&option.MPFastclose{Key: k}}
	case 7:
		return []hostile.Appender{&option.TCPRST{Flags: a.u8(), Reason: a.u8()}}
	case 8: // raw option bytes, malformed or not
		return []hostile.Appender{hostile.RawOption(a)}
	}
	return nil
}

// fuzzSize is what each direction carries: small enough for short runs,
// sent in paced chunks so that the shots land during the transfer.
const (
	fuzzSize  = 384 << 10
	fuzzChunk = 16 << 10
	fuzzLimit = 10 * time.Second
)

// runFuzzConn sets up the two stacks (client a, server b, a tap under b),
// starts the transfer, fires the shots and checks the outcome.
func runFuzzConn(t *testing.T, shots []fuzzShot) {
	v6 := len(shots) > 0 && shots[0].v6
	pa, pb := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
	tap := hostile.NewTap(pb)
	ca, cb := "10.9.0.1/24", "10.9.0.2/24"
	if v6 {
		ca, cb = "fd09::1/64", "fd09::2/64"
	}
	csum := len(shots) > 0 && shots[0].csum
	sa, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: pa, Addrs: []netip.Prefix{netip.MustParsePrefix(ca)}}}, Checksum: csum})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: tap, Addrs: []netip.Prefix{netip.MustParsePrefix(cb)}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ln, err := sb.Listen("tcp", ":5001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan *stack.Conn, 1)
	go func() {
		c, _ := ln.AcceptConn()
		acc <- c
	}()
	a, err := sa.Dial("tcp", net.JoinHostPort(netip.MustParsePrefix(cb).Addr().String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var b *stack.Conn
	select {
	case b = <-acc:
	case <-time.After(10 * time.Second):
	}
	if b == nil {
		t.Fatal("accept failed")
	}
	defer b.Close()
	deadline := time.Now().Add(fuzzLimit)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)

	var wg sync.WaitGroup
	var res [2]endResult // [0] a, [1] b
	wg.Add(4)
	go func() { defer wg.Done(); res[0].sent, res[0].sendErr = sendPaced(a, 1) }()
	go func() { defer wg.Done(); res[1].sent, res[1].sendErr = sendPaced(b, 2) }()
	go func() { defer wg.Done(); res[0].got, res[0].recvErr = recvAll(a) }()
	go func() { defer wg.Done(); res[1].got, res[1].recvErr = recvAll(b) }()

	// The flow as b's tap sees it: b is the stack, a the peer.
	ours := b.Stats().Subflows[0]
	learnt, fired := false, 0
	for i := 0; i < 200 && !learnt; i++ {
		fl, ok := tap.Flow(ours.Local, ours.Remote)
		learnt = ok && fl.Established() && fl.Side[0].HasMapping && fl.Side[1].HasMapping
		if !learnt {
			time.Sleep(time.Millisecond)
		}
	}
	for i := range shots {
		s := &shots[i]
		spec := hostile.Spec{Flags: s.flags, Place: s.place, SeqDelta: s.delta, Payload: make([]byte, s.payload),
			Fill: func(f *hostile.Flow, sp *hostile.Spec) { sp.Options = optionFor(s, f) }}
		// Build errors (options too long, flow not learnt) just skip the shot.
		if _, err := tap.Inject(ours.Local, ours.Remote, s.dir, spec); err == nil {
			fired++
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d of %d shots fired (flow learnt: %v); %v", fired, len(shots), learnt, res)
	checkEnds(t, res)
}

// endResult is one end's view of the transfer.
type endResult struct {
	sent, got        digestN
	sendErr, recvErr error
}

func (r endResult) String() string {
	return fmt.Sprintf("{sent %d (%v) got %d (%v)}", r.sent.n, r.sendErr, r.got.n, r.recvErr)
}

type digestN struct {
	n   int64
	sum [32]byte
}

// checkEnds fails unless both ends agree (see FuzzInboundSegments). The
// data of a is seed 1, b's seed 2.
func checkEnds(t *testing.T, res [2]endResult) {
	t.Helper()
	want := [2]digestN{streamDigest(1), streamDigest(2)}
	var msgs []string
	for i, r := range res {
		other := 1 - i
		if r.recvErr == nil && r.got != want[other] {
			msgs = append(msgs, fmt.Sprintf("end %c read a clean EOF after %d bytes, not the %d bytes sent intact (other end's send error: %v)",
				"ab"[i], r.got.n, want[other].n, res[other].sendErr))
		}
	}
	failed := func(r endResult) bool { return r.sendErr != nil || r.recvErr != nil }
	if failed(res[0]) != failed(res[1]) {
		msgs = append(msgs, fmt.Sprintf("one end failed alone: a send %v recv %v; b send %v recv %v",
			res[0].sendErr, res[0].recvErr, res[1].sendErr, res[1].recvErr))
	}
	if len(msgs) > 0 {
		t.Fatal(errors.New(fmt.Sprint(msgs)))
	}
}

func fuzzStream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), fuzzSize)
}

func streamDigest(seed uint64) digestN {
	h := sha256.New()
	n, _ := io.Copy(h, fuzzStream(seed))
	return digestN{n, [32]byte(h.Sum(nil))}
}

// sendPaced writes the stream in chunks with a short pause between them,
// then half-closes.
func sendPaced(c *stack.Conn, seed uint64) (digestN, error) {
	h := sha256.New()
	src := fuzzStream(seed)
	buf := make([]byte, fuzzChunk)
	var total int64
	for {
		n, _ := io.ReadFull(src, buf)
		if n == 0 {
			break
		}
		w, err := c.Write(buf[:n])
		h.Write(buf[:w])
		total += int64(w)
		if err != nil {
			return digestN{total, [32]byte(h.Sum(nil))}, err
		}
		time.Sleep(500 * time.Microsecond)
	}
	return digestN{total, [32]byte(h.Sum(nil))}, c.CloseWrite()
}

func recvAll(c *stack.Conn) (digestN, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return digestN{n, [32]byte(h.Sum(nil))}, err
}
