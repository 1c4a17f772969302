package tun

import (
	"fmt"
	"strings"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Middleboxes on the emulated link (LinkParams.StripMPTCP, CorruptAfter,
// CorruptSegments): the two kinds of interference that RFC 8684 makes MPTCP
// survive by falling back to TCP. A firewall or normaliser that does not
// know option kind 30 blanks it, and a payload-rewriting ALG or NAT changes
// data while keeping TCP's checksum right, so that only MPTCP's DSS
// checksum can tell. Both keep the segment's size, as such boxes do, and
// leave a TCP checksum that was valid valid.

// StripWhere says which TCP segments lose their MPTCP options.
type StripWhere uint8

const (
	StripNone StripWhere = iota // leave options alone
	StripSYN                    // SYN and SYN-ACK segments (a middlebox that does not know MPTCP's handshake option)
	StripData                   // every segment that is not a SYN (options removed once the handshake passed)
	StripAll                    // every segment
)

var stripNames = [...]string{StripNone: "none", StripSYN: "syn", StripData: "data", StripAll: "all"}

// ParseStripWhere parses "none", "syn", "data" or "all" (any case).
func ParseStripWhere(s string) (StripWhere, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for w, name := range stripNames {
		if t == name {
			return StripWhere(w), nil
		}
	}
	return StripNone, fmt.Errorf("bad MPTCP stripping %q: want none, syn, data or all", s)
}

// String returns the name ParseStripWhere accepts.
func (w StripWhere) String() string {
	if int(w) < len(stripNames) {
		return stripNames[w]
	}
	return fmt.Sprintf("StripWhere(%d)", uint8(w))
}

// applies reports whether a segment (a SYN or not) loses its options.
func (w StripWhere) applies(syn bool) bool {
	switch w {
	case StripSYN:
		return syn
	case StripData:
		return !syn
	case StripAll:
		return true
	}
	return false
}

const (
	// optionMPTCP is TCP option kind 30 (RFC 8684).
	optionMPTCP = 30
	// maxIPTCPHeaders bounds an IPv4 header with options (60 bytes) plus a
	// TCP header with options (60): what the middlebox reads before it
	// decides whether a packet needs a copy at all.
	maxIPTCPHeaders = 120
	// corruptBytes payload bytes are XORed with corruptXOR. A non-zero XOR
	// changes every byte it touches.
	corruptBytes = 4
	corruptXOR   = 0x5a
)

// middleboxActive reports whether any middlebox is configured: when not, packets
// pass without being looked at.
func (p *LinkParams) middleboxActive() bool {
	return p.StripMPTCP != StripNone || p.CorruptSegments > 0
}

// armCorruption restarts the corruption budget: CorruptAfter payload bytes
// from now on pass untouched, then CorruptSegments segments are rewritten.
// d.mu is held (or d is not shared yet).
func (d *direction) armCorruption() {
	d.corruptSeen = 0
	d.corruptLeft = max(d.params.CorruptSegments, 0)
}

// middlebox applies the configured middleboxes to pkt (size bytes) as it
// enters the link. It returns nil when the packet passes unchanged, else a
// rewritten copy: pkt's storage may be shared with the sender (gVisor keeps
// segments for retransmission), so it is never written to. d.mu is held.
func (d *direction) middlebox(pkt *stack.PacketBuffer, size int) *buffer.View {
	p := &d.params
	// Decide from the headers alone, copied to the stack, so that the
	// packets that pass unchanged (most of them) cost no allocation.
	var hdr [maxIPTCPHeaders]byte
	n := headerPrefix(pkt, hdr[:])
	s, ok := parseTCP(hdr[:n], size)
	if !ok {
		return nil
	}
	strip := p.StripMPTCP.applies(s.syn) && findMPTCP(hdr[s.tcp+header.TCPMinimumSize:s.payload])
	corrupt := false
	if payload := s.end - s.payload; payload > 0 && d.corruptLeft > 0 {
		if d.corruptSeen >= p.CorruptAfter {
			corrupt = true
			d.corruptLeft--
		} else {
			d.corruptSeen += int64(payload)
		}
	}
	if !strip && !corrupt {
		return nil
	}
	v := pkt.ToView()
	b := v.AsSlice()
	if strip && stripMPTCP(b, s) {
		d.stats.Stripped++
	}
	if corrupt && corruptPayload(b, s) {
		d.stats.Corrupted++
	}
	// The emulated link carries complete packets (its endpoints offer no
	// checksum offload or GSO, and the TUN reader completes checksums), so
	// the rewrites above adjust the checksum incrementally: a checksum that
	// was wrong stays wrong, as through a real middlebox. A packet whose
	// checksum field may hold only the pseudo-header sum (CHECKSUM_PARTIAL
	// from a GSO-capable sender, or validated by a receiving NIC) gets a
	// complete one instead: it leaves the link without those flags.
	if pkt.GSOOptions.NeedsCsum || pkt.RXChecksumValidated {
		setTCPChecksum(b, s)
	}
	return v
}

// headerPrefix copies the first len(dst) bytes of pkt (fewer if it is
// shorter) to dst without allocating, and returns how many it copied.
func headerPrefix(pkt *stack.PacketBuffer, dst []byte) int {
	vl, skip := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(dst[n:], s[skip:])
		skip = 0
	}
	return n
}

// tcpSeg locates a TCP segment in an IP packet (offsets into the packet).
type tcpSeg struct {
	tcp     int // start of the TCP header: the IP header's length
	payload int // start of the payload: the end of the TCP options
	end     int // end of the segment: the IP length (link padding after it is not part of it)
	v6      bool
	syn     bool
}

// parseTCP finds the TCP segment in the IP packet of size bytes whose first
// bytes are hdr (at least all headers). ok is false for anything a
// middlebox lets pass: not TCP, IPv4 fragments, IPv6 with extension
// headers, jumbograms, and lengths that contradict each other.
func parseTCP(hdr []byte, size int) (s tcpSeg, ok bool) {
	if len(hdr) == 0 {
		return s, false
	}
	switch header.IPVersion(hdr) {
	case header.IPv4Version:
		if len(hdr) < header.IPv4MinimumSize {
			return s, false
		}
		ip := header.IPv4(hdr)
		ihl, tot := int(ip.HeaderLength()), int(ip.TotalLength())
		if ihl < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || tot < ihl || tot > size {
			return s, false
		}
		s.tcp, s.end = ihl, tot
	case header.IPv6Version:
		if len(hdr) < header.IPv6MinimumSize || header.IPv6(hdr).NextHeader() != uint8(header.TCPProtocolNumber) {
			return s, false
		}
		s.tcp, s.end, s.v6 = header.IPv6MinimumSize, header.IPv6MinimumSize+int(header.IPv6(hdr).PayloadLength()), true
		if s.end > size {
			return s, false
		}
	default:
		return s, false
	}
	if s.end-s.tcp < header.TCPMinimumSize || len(hdr) < s.tcp+header.TCPMinimumSize {
		return s, false
	}
	th := header.TCP(hdr[s.tcp:])
	off := int(th.DataOffset())
	if off < header.TCPMinimumSize || s.tcp+off > s.end || s.tcp+off > len(hdr) {
		return s, false
	}
	s.payload = s.tcp + off
	s.syn = th.Flags()&header.TCPFlagSyn != 0
	return s, true
}

// findMPTCP reports whether the TCP options opts hold an MPTCP option. A
// malformed list (an option with a length below 2 or past the end) reports
// false: what its bytes mean is anyone's guess, so they are left alone.
// Bytes after an end-of-list option are padding.
func findMPTCP(opts []byte) bool {
	found := false
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return found
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return false
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return false
		}
		found = found || opts[i] == optionMPTCP
		i += l
	}
	return found
}

// stripMPTCP replaces each MPTCP option of segment s in packet b with NOPs
// of the same length, adjusts the TCP checksum, and reports whether it
// changed anything (not for a malformed option list).
func stripMPTCP(b []byte, s tcpSeg) bool {
	opts := b[s.tcp+header.TCPMinimumSize : s.payload]
	if !findMPTCP(opts) {
		return false
	}
	// The options start 20 bytes into the TCP header and fill whole
	// 32-bit words: their sum lines up with the checksum's 16-bit words.
	before := checksum.Checksum(opts, 0)
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			i = len(opts)
			continue
		case header.TCPOptionNOP:
			i++
			continue
		}
		l := int(opts[i+1]) // findMPTCP checked the list
		if opts[i] == optionMPTCP {
			for j := i; j < i+l; j++ {
				opts[j] = header.TCPOptionNOP
			}
		}
		i += l
	}
	adjustChecksum(header.TCP(b[s.tcp:]), before, checksum.Checksum(opts, 0))
	return true
}

// corruptPayload XORs a few bytes in the middle of segment s's payload and
// adjusts the TCP checksum, so that TCP accepts the segment. It makes sure
// the payload's one's-complement sum changes, or MPTCP's DSS checksum
// (the same kind of sum) could not see the rewrite either. It reports
// false when there is no payload.
func corruptPayload(b []byte, s tcpSeg) bool {
	p := b[s.payload:s.end]
	if len(p) == 0 {
		return false
	}
	// An even offset from the payload's start (itself a multiple of 4
	// bytes into the TCP header) keeps the sums aligned with the
	// checksum's 16-bit words; the region is even unless it ends the
	// segment, where the checksum pads the odd byte alike.
	at := len(p) / 2 &^ 1
	r := p[at:min(at+corruptBytes, len(p))]
	before := checksum.Checksum(r, 0)
	for i := range r {
		r[i] ^= corruptXOR
	}
	after := checksum.Checksum(r, 0)
	if sameSum(before, after) {
		// The changes cancelled out (possible with 2+ bytes; one changed
		// byte always changes the sum): undo one, and they no longer do.
		r[len(r)-1] ^= corruptXOR
		after = checksum.Checksum(r, 0)
	}
	adjustChecksum(header.TCP(b[s.tcp:]), before, after)
	return true
}

// sameSum reports whether two one's-complement sums are equal (0 and
// 0xffff are both zero).
func sameSum(a, b uint16) bool {
	return a == b || a|b == 0xffff && (a == 0 || b == 0)
}

// adjustChecksum updates th's checksum after aligned bytes whose sum was
// old now sum to new (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
func adjustChecksum(th header.TCP, old, new uint16) {
	th.SetChecksum(^checksum.Combine(checksum.Combine(^th.Checksum(), ^old), new))
}

// setTCPChecksum computes segment s's TCP checksum afresh.
func setTCPChecksum(b []byte, s tcpSeg) {
	th := header.TCP(b[s.tcp:s.end])
	var sum uint16
	if s.v6 {
		ip := header.IPv6(b)
		sum = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(s.end-s.tcp))
	} else {
		ip := header.IPv4(b)
		sum = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(s.end-s.tcp))
	}
	th.SetChecksum(0)
	th.SetChecksum(^checksum.Checksum(th, sum))
}
