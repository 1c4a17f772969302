package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxIfNameLen is IFNAMSIZ-1: the longest interface name Linux accepts.
const maxIfNameLen = 15

// DefaultMTU is used when Config.MTU or LinkParams.MTU is 0.
const DefaultMTU = 1500

// Config of one TUN path: the stack (gVisor) side gets StackAddr, the kernel
// side of the TUN gets HostAddr; both have the same prefix length and the
// same IP family.
//
// A device that is only a port of a Forwarder has no stack behind it: leave
// StackAddr zero (netip.Prefix{}; ParsePortSpec makes such configs). The
// kernel side still gets HostAddr, and what the kernel routes into the
// device goes to whoever attaches to its LinkEndpoint.
type Config struct {
	Name      string
	StackAddr netip.Prefix // e.g. 10.1.0.2/24; zero = no stack address (a forwarder port)
	HostAddr  netip.Prefix // e.g. 10.1.0.1/24
	MTU       int          // 0 = 1500
	// NoOffload opens the device without the kernel's TCP segmentation
	// offload (IFF_VNET_HDR, TUNSETOFFLOAD): one packet per read and
	// write. By default a read or write carries up to 64 KiB of one TCP
	// flow, which the endpoint cuts into (or merges from) MTU-sized
	// packets, so the stack above never sees the difference.
	NoOffload bool
}

// IsPort reports whether c has no stack address: the device is a port of a
// Forwarder, not a link of a stack.
func (c Config) IsPort() bool { return c.StackAddr == (netip.Prefix{}) }

// EffectiveMTU returns c.MTU, or DefaultMTU when it is 0.
func (c Config) EffectiveMTU() int {
	if c.MTU == 0 {
		return DefaultMTU
	}
	return c.MTU
}

// String returns the CLI form accepted by ParseSpec, or for a port (no
// stack address) the form accepted by ParsePortSpec.
func (c Config) String() string {
	if c.IsPort() {
		return fmt.Sprintf("%s,%s", c.Name, c.HostAddr)
	}
	return fmt.Sprintf("%s,%s,%s", c.Name, c.StackAddr, c.HostAddr.Addr())
}

// ParsePortSpec parses the CLI form "NAME,HOSTADDR/PREFIX" of a device
// without a stack address (a forwarder port): the kernel side of the device
// gets HOSTADDR/PREFIX.
func ParsePortSpec(s string) (Config, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return Config{}, fmt.Errorf("tun port spec %q: want NAME,ADDR/PREFIX (2 comma-separated fields), got %d field(s)", s, len(parts))
	}
	name := strings.TrimSpace(parts[0])
	hostStr := strings.TrimSpace(parts[1])
	if !strings.Contains(hostStr, "/") {
		return Config{}, fmt.Errorf("tun port spec %q: address %q needs a prefix length, e.g. 10.1.0.1/24", s, hostStr)
	}
	hp, err := netip.ParsePrefix(hostStr)
	if err != nil {
		return Config{}, fmt.Errorf("tun port spec %q: bad address/prefix %q: %v", s, hostStr, err)
	}
	cfg := Config{Name: name, HostAddr: hp}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("tun port spec %q: %w", s, err)
	}
	return cfg, nil
}

// ParseSpec parses the CLI form "NAME,STACKADDR/PREFIX,HOSTADDR". HOSTADDR
// has no prefix length; it takes STACKADDR's. IPv4 and IPv6 are accepted,
// but both addresses must be of the same family and in the same prefix.
func ParseSpec(s string) (Config, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return Config{}, fmt.Errorf("tun spec %q: want NAME,STACKADDR/PREFIX,HOSTADDR (3 comma-separated fields), got %d field(s)", s, len(parts))
	}
	name := strings.TrimSpace(parts[0])
	stackStr := strings.TrimSpace(parts[1])
	hostStr := strings.TrimSpace(parts[2])

	if !strings.Contains(stackStr, "/") {
		return Config{}, fmt.Errorf("tun spec %q: stack address %q needs a prefix length, e.g. 10.1.0.2/24", s, stackStr)
	}
	sp, err := netip.ParsePrefix(stackStr)
	if err != nil {
		return Config{}, fmt.Errorf("tun spec %q: bad stack address/prefix %q: %v", s, stackStr, err)
	}
	if strings.Contains(hostStr, "/") {
		return Config{}, fmt.Errorf("tun spec %q: host address %q must not carry a prefix length (it takes the stack address's /%d)", s, hostStr, sp.Bits())
	}
	ha, err := netip.ParseAddr(hostStr)
	if err != nil {
		return Config{}, fmt.Errorf("tun spec %q: bad host address %q: %v", s, hostStr, err)
	}
	if sa := sp.Addr(); sa.Is4() != ha.Is4() {
		return Config{}, fmt.Errorf("tun spec %q: mixed address families: stack %s is %s, host %s is %s", s, sa, family(sa), ha, family(ha))
	}
	cfg := Config{
		Name:      name,
		StackAddr: sp,
		HostAddr:  netip.PrefixFrom(ha, sp.Bits()),
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("tun spec %q: %w", s, err)
	}
	return cfg, nil
}

// Validate checks the name, the addresses and the MTU of c. Open calls it.
// A zero StackAddr is valid (a forwarder port, see Config).
func (c Config) Validate() error {
	if err := validateName(c.Name); err != nil {
		return err
	}
	if !c.HostAddr.IsValid() {
		return errors.New("host address missing or invalid")
	}
	if c.IsPort() {
		return c.validatePort()
	}
	sa, ha := c.StackAddr.Addr(), c.HostAddr.Addr()
	if !c.StackAddr.IsValid() {
		return errors.New("stack address invalid")
	}
	for _, a := range []struct {
		what string
		addr netip.Addr
	}{{"stack", sa}, {"host", ha}} {
		if err := validateAddr(a.what, a.addr); err != nil {
			return err
		}
	}
	if sa.Is4() != ha.Is4() {
		return fmt.Errorf("mixed address families: stack %s is %s, host %s is %s", sa, family(sa), ha, family(ha))
	}
	if c.StackAddr.Bits() != c.HostAddr.Bits() {
		return fmt.Errorf("prefix lengths differ: stack /%d, host /%d", c.StackAddr.Bits(), c.HostAddr.Bits())
	}
	bits := c.StackAddr.Bits()
	if bits < 1 || bits >= sa.BitLen() {
		return fmt.Errorf("bad prefix length /%d for %s: want 1..%d so that both ends share the subnet", bits, family(sa), sa.BitLen()-1)
	}
	if sa == ha {
		return fmt.Errorf("stack and host addresses are equal (%s)", sa)
	}
	if !c.StackAddr.Masked().Contains(ha) {
		return fmt.Errorf("host address %s is not in the stack's prefix %s", ha, c.StackAddr.Masked())
	}
	if sa.Is4() && bits <= 30 {
		net := c.StackAddr.Masked().Addr()
		bcast := lastAddr(c.StackAddr)
		for _, a := range []netip.Addr{sa, ha} {
			if a == net || a == bcast {
				return fmt.Errorf("address %s is the network or broadcast address of %s", a, c.StackAddr.Masked())
			}
		}
	}
	return c.validateMTU()
}

// validatePort checks the host address of a config without a stack
// address. Any prefix length but /0 will do: the kernel side shares its
// subnet with nothing of ours (a /32 or /128 needs routes of its own).
func (c Config) validatePort() error {
	ha := c.HostAddr.Addr()
	if err := validateAddr("host", ha); err != nil {
		return err
	}
	bits := c.HostAddr.Bits()
	if bits < 1 {
		return fmt.Errorf("bad prefix length /%d for %s: want 1..%d", bits, family(ha), ha.BitLen())
	}
	if ha.Is4() && bits <= 30 {
		if ha == c.HostAddr.Masked().Addr() || ha == lastAddr(c.HostAddr) {
			return fmt.Errorf("address %s is the network or broadcast address of %s", ha, c.HostAddr.Masked())
		}
	}
	return c.validateMTU()
}

func validateAddr(what string, a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s address %s: zones are not supported", what, a)
	case a.Is4In6():
		return fmt.Errorf("%s address %s: IPv4-mapped IPv6 addresses are not supported; write the IPv4 address", what, a)
	case a.IsUnspecified():
		return fmt.Errorf("%s address %s is unspecified", what, a)
	case a.IsMulticast():
		return fmt.Errorf("%s address %s is multicast", what, a)
	case a.IsLoopback():
		return fmt.Errorf("%s address %s is a loopback address", what, a)
	}
	return nil
}

// validateMTU checks the MTU against the host address's family.
func (c Config) validateMTU() error {
	mtu := c.EffectiveMTU()
	minMTU := 68
	a := c.HostAddr.Addr()
	if a.Is6() {
		minMTU = 1280
	}
	if mtu < minMTU || mtu > 65535 {
		return fmt.Errorf("MTU %d out of range %d..65535 for %s", c.MTU, minMTU, family(a))
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > maxIfNameLen:
		return fmt.Errorf("interface name %q is %d bytes, Linux allows at most %d", name, len(name), maxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("interface name %q contains invalid character %q", name, r)
		}
	}
	return nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// lastAddr returns the highest address of p's subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
