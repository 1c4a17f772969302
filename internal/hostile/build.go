package hostile

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/umptcp/umptcp/option"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Placement says where a crafted segment lands relative to what its
// receiver accepts (RFC 9293 §3.10.7.4, RFC 5961).
type Placement uint8

const (
	// InWindow: seq is the next one the receiver expects once it has
	// everything the sender was seen sending (the sender's SndNxt, which
	// is never below the receiver's RCV.NXT nor past its window's right
	// edge, since the sender respects the window); ack is the sender's
	// latest ACK. An on-path attacker builds exactly this.
	InWindow Placement = iota
	// OutOfWindow: as InWindow with seq 2^30 further, far outside any
	// window (the largest window is 2^30, RFC 7323 §2.3).
	OutOfWindow
	// BadChecksum: as InWindow with a wrong TCP checksum.
	BadChecksum
	// WrongAck: as InWindow, but ack is 2^30 past anything the receiver
	// has sent (its SndNxt).
	WrongAck
)

// Placements lists every Placement, for table tests.
var Placements = []Placement{InWindow, OutOfWindow, BadChecksum, WrongAck}

func (p Placement) String() string {
	switch p {
	case InWindow:
		return "InWindow"
	case OutOfWindow:
		return "OutOfWindow"
	case BadChecksum:
		return "BadChecksum"
	case WrongAck:
		return "WrongAck"
	}
	return fmt.Sprintf("Placement(%d)", uint8(p))
}

// far is how far OutOfWindow and WrongAck put their numbers: 2^30.
const far = 1 << 30

// Appender is a TCP option that appends its wire form: every option type
// of package option is one (as a pointer, e.g. &option.DSS{...}), and so
// is RawOption.
type Appender interface{ Append(b []byte) []byte }

// RawOption is TCP option bytes appended as they are (e.g. malformed ones).
type RawOption []byte

// Append appends r.
func (r RawOption) Append(b []byte) []byte { return append(b, r...) }

// Spec describes a crafted segment.
type Spec struct {
	Flags   header.TCPFlags // as sent: set header.TCPFlagAck for an ACK
	Payload []byte
	Options []Appender // in order, after the timestamp; padded with NOPs
	Place   Placement
	// SeqDelta is added to the sequence number Place chose, e.g. to put
	// a RST inside the window but not at RCV.NXT (RFC 5961 §3.2).
	SeqDelta int32
	// NoTimestamp leaves the TCP timestamp option out even if the sender
	// uses timestamps. By default a segment carries the sender's latest
	// TSval/TSecr: a receiver may drop a segment without one (RFC 7323
	// §3.2; gVisor does) or whose TSval is old (PAWS). When the options
	// do not fit beside it, the timestamp is left out.
	NoTimestamp bool
	// Fill, if set, is called with the flow snapshot the segment is built
	// from before anything else, to derive options from fresh state
	// (DSNs, keys): Tap.Inject takes the snapshot at the last moment.
	Fill func(f *Flow, s *Spec)
}

// Errors of Build.
var (
	ErrNotLearnt       = errors.New("hostile: the flow's sequence numbers are not known yet")
	ErrOptionsTooLong  = errors.New("hostile: options exceed 40 bytes")
	ErrPayloadTooLarge = errors.New("hostile: payload too large")
)

// maxOptions is the TCP option space (data offset 15 words).
const maxOptions = 40

// Build returns a complete IPv4 or IPv6 TCP packet on flow f as if sent by
// dir, placed as spec.Place says, with correct IP and TCP checksums unless
// Place is BadChecksum.
func (f *Flow) Build(dir Dir, spec Spec) ([]byte, error) {
	if spec.Fill != nil {
		spec.Fill(f, &spec)
	}
	snd, rcv := &f.Side[dir], &f.Side[dir.other()]
	if !snd.HasSnd || !rcv.HasSnd {
		return nil, ErrNotLearnt
	}
	seq := snd.SndNxt
	ack := rcv.SndNxt // what a sender that never acked yet would say
	if snd.HasAck {
		ack = snd.Ack
	}
	switch spec.Place {
	case OutOfWindow:
		seq += far
	case WrongAck:
		ack = rcv.SndNxt + far
	}
	seq += uint32(spec.SeqDelta)
	if !spec.Flags.Contains(header.TCPFlagAck) {
		ack = 0 // the field is meaningless without ACK; send zero as stacks do
	}

	opts, err := buildOptions(snd, &spec)
	if err != nil {
		return nil, err
	}
	src, dst := f.Peer, f.Stack
	if dir == FromStack {
		src, dst = f.Stack, f.Peer
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	ipLen := header.IPv4MinimumSize
	if f.V6() {
		ipLen = header.IPv6MinimumSize
	}
	total := ipLen + tcpLen + len(spec.Payload)
	if total > 0xffff {
		return nil, ErrPayloadTooLarge
	}
	pkt := make([]byte, total)
	t := header.TCP(pkt[ipLen:])
	t.Encode(&header.TCPFields{
		SrcPort:    src.Port(),
		DstPort:    dst.Port(),
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: uint8(tcpLen),
		Flags:      spec.Flags,
		WindowSize: snd.Wnd,
	})
	copy(pkt[ipLen+header.TCPMinimumSize:], opts)
	copy(pkt[ipLen+tcpLen:], spec.Payload)

	srcA, dstA := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	if f.V6() {
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + len(spec.Payload)),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           srcA,
			DstAddr:           dstA,
		})
	} else {
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total),
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			Flags:       header.IPv4FlagDontFragment,
			SrcAddr:     srcA,
			DstAddr:     dstA,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(tcpLen+len(spec.Payload)))
	c := ^checksum.Checksum(pkt[ipLen:], sum)
	if spec.Place == BadChecksum {
		c = wrongChecksum(c)
	}
	t.SetChecksum(c)
	return pkt, nil
}

// wrongChecksum returns a checksum that cannot verify where c does: in
// one's complement 0x0000 and 0xffff are the same number, so the result
// must differ from c by something other than that alias.
func wrongChecksum(c uint16) uint16 {
	if c >= 0xfffe {
		return 1
	}
	return c + 1
}

// buildOptions lays out the option area: the sender's timestamp (if it
// uses them, the spec allows and it fits), then spec.Options, padded to a
// multiple of 4 with NOPs.
func buildOptions(snd *Side, spec *Spec) ([]byte, error) {
	var mp []byte
	for _, o := range spec.Options {
		mp = o.Append(mp)
	}
	var out []byte
	if snd.HasTS && !spec.NoTimestamp && len(mp)+12 <= maxOptions {
		out = append(out, header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, header.TCPOptionTSLength)
		out = binary.BigEndian.AppendUint32(out, snd.TSVal)
		out = binary.BigEndian.AppendUint32(out, snd.TSEcr)
	}
	out = append(out, mp...)
	for len(out)%4 != 0 {
		out = append(out, header.TCPOptionNOP)
	}
	if len(out) > maxOptions {
		return nil, ErrOptionsTooLong
	}
	return out, nil
}

// SetDSSChecksum fills d.Checksum (and sets HasChecksum) for its mapping
// carrying payload, where the mapping is all of payload (plus one for a
// DATA_FIN without data, which counts in DataLen).
func SetDSSChecksum(d *option.DSS, payload []byte) {
	d.HasChecksum = true
	d.Checksum = option.DSSChecksum(d.DSN, d.SSN, d.DataLen, sumOf(payload))
}

// ParseSegment is the inverse of Build for tests: the fields of the TCP
// segment in the IP packet ip, its MPTCP options parsed into set, and
// whether the TCP checksum verifies.
func ParseSegment(ip []byte, set *option.Set) (hdr header.TCP, payload []byte, csumOK bool, err error) {
	seg, ok := parseSegment(ip, len(ip))
	if !ok {
		return nil, nil, false, errors.New("hostile: not a complete TCP segment")
	}
	ipLen := header.IPv4MinimumSize
	if header.IPVersion(ip) == header.IPv6Version {
		ipLen = header.IPv6MinimumSize
	} else {
		ipLen = int(header.IPv4(ip).HeaderLength())
	}
	end := len(ip)
	hdr = header.TCP(ip[ipLen:end])
	payload = ip[ipLen+int(hdr.DataOffset()) : end]
	srcA := tcpip.AddrFromSlice(seg.src.Addr().AsSlice())
	dstA := tcpip.AddrFromSlice(seg.dst.Addr().AsSlice())
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(end-ipLen))
	csumOK = checksum.Checksum(ip[ipLen:end], sum) == 0xffff
	if set != nil {
		err = option.ParseTCPOptions(seg.opts, set)
	}
	return hdr, payload, csumOK, err
}

// sumOf is the one's-complement sum of b, as option.DSSChecksum wants it.
func sumOf(b []byte) uint16 { return checksum.Checksum(b, 0) }
