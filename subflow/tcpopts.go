package subflow

import "gvisor.dev/gvisor/pkg/tcpip/header"

// nextOption returns the TCP option starting at opts[i]: its kind, its
// bytes (a NOP is one byte), and where the next one starts. ok is false at
// the end of the list, at EOL, and at a malformed length.
func nextOption(opts []byte, i int) (kind byte, opt []byte, next int, ok bool) {
	if i >= len(opts) || opts[i] == header.TCPOptionEOL {
		return 0, nil, i, false
	}
	if opts[i] == header.TCPOptionNOP {
		return header.TCPOptionNOP, opts[i : i+1], i + 1, true
	}
	if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
		return 0, nil, i, false
	}
	n := i + int(opts[i+1])
	return opts[i], opts[i:n], n, true
}

// findOption returns the first option of the given kind in opts (its
// bytes, kind and length included), or nil.
func findOption(opts []byte, kind byte) []byte {
	for i := 0; ; {
		k, o, next, ok := nextOption(opts, i)
		if !ok {
			return nil
		}
		if k == kind {
			return o
		}
		i = next
	}
}

// lowerMSS lowers the MSS option in opts (in place) by by bytes, unless
// that would take it to 536 or below (the minimum every host accepts). It
// reports whether it changed anything.
func lowerMSS(opts []byte, by int) bool {
	o := findOption(opts, header.TCPOptionMSS)
	if len(o) != header.TCPOptionMSSLength {
		return false
	}
	mss := int(o[2])<<8 | int(o[3])
	if mss <= 536+by {
		return false
	}
	mss -= by
	o[2], o[3] = byte(mss>>8), byte(mss)
	return true
}

// optsLen is the length of opts without trailing EOL padding.
func optsLen(opts []byte) int {
	n := len(opts)
	for n > 0 && opts[n-1] == header.TCPOptionEOL {
		n--
	}
	return n
}

// appendOptionsTrimmed copies opts without NOPs and SACK blocks (keeping
// the usual NOP NOP before timestamps when there is room), then as many SACK
// blocks as fit into room bytes in total.
func appendOptionsTrimmed(dst []byte, opts []byte, room int) []byte {
	start := len(dst)
	if out, ok := appendOptionsKeeping(dst, opts, room, true); ok {
		return out
	}
	out, _ := appendOptionsKeeping(dst[:start], opts, room, false)
	return out
}

// appendOptionsKeeping is appendOptionsTrimmed with or without alignment
// NOPs; it reports false when the result would not fit.
func appendOptionsKeeping(dst []byte, opts []byte, room int, align bool) ([]byte, bool) {
	start := len(dst)
	var sack []byte
	for i := 0; ; {
		kind, o, next, ok := nextOption(opts, i)
		if !ok {
			break
		}
		i = next
		switch {
		case kind == header.TCPOptionNOP: // re-added as padding at the end
		case kind == header.TCPOptionSACK:
			sack = o
		case len(dst)-start+len(o) <= room:
			if kind == header.TCPOptionTS && align {
				dst = append(dst, header.TCPOptionNOP, header.TCPOptionNOP)
			}
			dst = append(dst, o...)
		}
	}
	if len(sack) >= 10 {
		blocks := min((room-(len(dst)-start)-2)/8, (len(sack)-2)/8)
		if blocks > 0 {
			dst = append(dst, header.TCPOptionSACK, byte(2+8*blocks))
			dst = append(dst, sack[2:2+8*blocks]...)
		}
	}
	return dst, len(dst)-start <= room
}
