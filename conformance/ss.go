package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/umptcp/umptcp/internal/netns"
)

// SSEntry is one MPTCP socket as `ss -Mni` prints it: a socket line
//
//	ESTAB 0 0 10.79.0.1:5000 10.79.0.2:46578
//
// followed by an indented info line from the kernel's struct mptcp_info:
//
//	subflows:1 subflows_max:2 remote_key token:f7b34e12 write_seq:… snd_una:… rcv_nxt:…
//
// ss prints a numeric field only when it is not zero (so a missing
// "subflows:" means 0 additional subflows) and flags as bare words
// ("remote_key", "fallback"). Newer iproute2 versions add fields (bytes_sent,
// csum_enabled, …): every key:value lands in Fields whatever the version.
type SSEntry struct {
	State        string // ESTAB, LISTEN, FIN-WAIT-1, …
	RecvQ, SendQ int
	Local, Peer  string         // as printed, e.g. "[fd77::1]:5000", "*:5000"
	LocalAddr    netip.AddrPort // Local parsed; zero for wildcards
	PeerAddr     netip.AddrPort // Peer parsed; zero for wildcards

	Subflows        int    // "subflows": subflows besides the initial one
	SubflowsMax     int    // "subflows_max"
	AddAddrSignal   int    // "add_addr_signal"
	AddAddrAccepted int    // "add_addr_accepted"
	Token           string // "token", hex
	RemoteKey       bool   // flag "remote_key": the peer's key was received
	Fallback        bool   // flag "fallback": the connection fell back to TCP

	Fields map[string]string // every key:value of the info line
	Flags  []string          // every bare word of the info line
}

// SSMptcp lists the MPTCP sockets of ns other than listeners (`ss -Mni`,
// run inside ns).
func SSMptcp(ns *netns.NS) ([]SSEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, "ss", "-Mni")
	if err != nil {
		return nil, err
	}
	return ParseSSMptcp(out)
}

// ParseSSMptcp parses the output of `ss -Mni` (with or without -H and -a).
func ParseSSMptcp(out []byte) ([]SSEntry, error) {
	var entries []SSEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "State ") || strings.HasPrefix(line, "Netid "):
		case line[0] == ' ' || line[0] == '\t':
			if len(entries) == 0 {
				return nil, fmt.Errorf("conformance: ss: info line before any socket: %q", line)
			}
			entries[len(entries)-1].addInfo(line)
		default:
			e, err := parseSSSocketLine(line)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
		}
	}
	return entries, sc.Err()
}

// parseSSSocketLine parses "STATE RECV-Q SEND-Q LOCAL PEER [PROCESS]".
func parseSSSocketLine(line string) (SSEntry, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return SSEntry{}, fmt.Errorf("conformance: ss: short socket line %q", line)
	}
	recvQ, err1 := strconv.Atoi(f[1])
	sendQ, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return SSEntry{}, fmt.Errorf("conformance: ss: bad queue sizes in %q", line)
	}
	return SSEntry{
		State: f[0], RecvQ: recvQ, SendQ: sendQ,
		Local: f[3], Peer: f[4],
		LocalAddr: parseSSAddr(f[3]), PeerAddr: parseSSAddr(f[4]),
		Fields: map[string]string{},
	}, nil
}

// parseSSAddr parses "1.2.3.4:80", "[::1]:80" and the forms with an
// interface ("1.2.3.4%eth0:80", "[fe80::1%eth0]:80"); wildcards give the
// zero AddrPort.
func parseSSAddr(s string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}
	}
	host, port := strings.Trim(s[:i], "[]"), s[i+1:]
	if j := strings.IndexByte(host, '%'); j >= 0 && !strings.Contains(host, ":") {
		host = host[:j] // IPv4 with a device; IPv6 zones stay
	}
	a, err := netip.ParseAddr(host)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, uint16(p))
}

// addInfo records the fields and flags of an info line.
func (e *SSEntry) addInfo(line string) {
	for _, tok := range strings.Fields(line) {
		k, v, ok := strings.Cut(tok, ":")
		if !ok {
			e.Flags = append(e.Flags, tok)
			switch tok {
			case "remote_key":
				e.RemoteKey = true
			case "fallback":
				e.Fallback = true
			}
			continue
		}
		e.Fields[k] = v
		n, _ := strconv.Atoi(v)
		switch k {
		case "subflows":
			e.Subflows = n
		case "subflows_max":
			e.SubflowsMax = n
		case "add_addr_signal":
			e.AddAddrSignal = n
		case "add_addr_accepted":
			e.AddAddrAccepted = n
		case "token":
			e.Token = v
		}
	}
}

// FindSS returns the entry whose local and peer addresses are local and
// peer (either may be the zero AddrPort to match anything).
func FindSS(entries []SSEntry, local, peer netip.AddrPort) (SSEntry, bool) {
	for _, e := range entries {
		if (!local.IsValid() || sameAddrPort(e.LocalAddr, local)) &&
			(!peer.IsValid() || sameAddrPort(e.PeerAddr, peer)) {
			return e, true
		}
	}
	return SSEntry{}, false
}

// sameAddrPort compares a and b with IPv4-mapped IPv6 addresses unmapped.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}
