package pm

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseEndpoint parses an endpoint as the command line gives it:
// ADDR[:PORT],FLAG[,FLAG...] with flags signal, subflow, backup, fullmesh
// (IPv6 with a port in brackets: [fd00::1]:8080,signal), optionally
// followed by id=N. At least one of signal, subflow or fullmesh is needed
// (an endpoint that is neither announced nor used would do nothing), and a
// port only makes sense on a signal endpoint, as in `ip mptcp endpoint`.
func ParseEndpoint(s string) (Endpoint, error) {
	var e Endpoint
	parts := strings.Split(s, ",")
	addr := strings.TrimSpace(parts[0])
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ap.Port() == 0 {
			return e, fmt.Errorf("endpoint %q: port 0", s)
		}
		e.Addr, e.Port = ap.Addr().Unmap(), ap.Port()
	} else if a, err := netip.ParseAddr(strings.Trim(addr, "[]")); err == nil && !strings.Contains(a.String(), "%") {
		e.Addr = a.Unmap()
	} else {
		return e, fmt.Errorf("endpoint %q: %q is not an IP address or address:port", s, addr)
	}
	if e.Addr.IsUnspecified() || e.Addr.IsMulticast() {
		return e, fmt.Errorf("endpoint %q: %s cannot be a local endpoint", s, e.Addr)
	}
	for _, f := range parts[1:] {
		f = strings.TrimSpace(f)
		if v, ok := strings.CutPrefix(f, "id="); ok {
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil || n == 0 {
				return e, fmt.Errorf("endpoint %q: id must be 1-255", s)
			}
			e.ID = uint8(n)
			continue
		}
		found := false
		for _, n := range flagNames {
			if f == n.name && n.f != Implicit {
				e.Flags |= n.f
				found = true
			}
		}
		if !found {
			return e, fmt.Errorf("endpoint %q: unknown flag %q (want signal, subflow, backup, fullmesh or id=N)", s, f)
		}
	}
	switch {
	case e.Flags&(Signal|Subflow|Fullmesh) == 0:
		return e, fmt.Errorf("endpoint %q: needs signal, subflow or fullmesh", s)
	case e.Port != 0 && e.Flags&Signal == 0:
		return e, fmt.Errorf("endpoint %q: a port needs the signal flag", s)
	case e.Flags&Fullmesh != 0 && e.Flags&Signal != 0:
		return e, fmt.Errorf("endpoint %q: fullmesh and signal exclude each other (as in Linux)", s)
	}
	return e, nil
}

// ParseLimits parses limits as the command line gives them:
// subflows=N,add_addr_accepted=M (either may be left out: it keeps its
// value in base).
func ParseLimits(s string, base Limits) (Limits, error) {
	l := base
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return l, fmt.Errorf("limits %q: want subflows=N,add_addr_accepted=M", s)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxLimit {
			return l, fmt.Errorf("limits %q: %s must be 0-%d", s, k, MaxLimit)
		}
		switch k {
		case "subflows":
			l.Subflows = n
		case "add_addr_accepted":
			l.AddAddrAccepted = n
		default:
			return l, fmt.Errorf("limits %q: unknown limit %q (want subflows or add_addr_accepted)", s, k)
		}
	}
	return l, nil
}

// CheckEndpoints reports the first problem of a set of endpoints: two with
// one address or one ID.
func CheckEndpoints(eps []Endpoint) error {
	for i, a := range eps {
		for _, b := range eps[:i] {
			if a.Addr == b.Addr {
				return fmt.Errorf("endpoint %s given twice", a.Addr)
			}
			if a.ID != 0 && a.ID == b.ID {
				return fmt.Errorf("endpoints %s and %s share id %d", b.Addr, a.Addr, a.ID)
			}
		}
	}
	return nil
}
