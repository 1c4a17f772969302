package netns

import (
	"context"
	"fmt"
	"net/netip"
)

// VethEnd describes one end of a veth pair: the namespace it lives in, its
// interface name (at most 15 bytes) and the addresses to give it.
type VethEnd struct {
	NS    *NS
	Name  string
	Addrs []netip.Prefix
}

// Veth creates a veth pair whose ends are a and b, assigns their addresses
// (IPv6 ones with "nodad", so they are usable at once) and brings both up.
// The pair disappears with either namespace.
func Veth(ctx context.Context, a, b VethEnd) error {
	if a.NS == nil || b.NS == nil {
		return fmt.Errorf("netns: veth: both ends need a namespace")
	}
	if _, err := a.NS.Exec(ctx, "ip", "link", "add", a.Name, "type", "veth",
		"peer", "name", b.Name, "netns", b.NS.Name()); err != nil {
		return err
	}
	for _, end := range []VethEnd{a, b} {
		if err := end.configure(ctx); err != nil {
			return err
		}
	}
	return nil
}

// configure addresses the end's interface and brings it up.
func (end VethEnd) configure(ctx context.Context) error {
	for _, p := range end.Addrs {
		args := []string{"addr", "add", p.String(), "dev", end.Name}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := end.NS.Exec(ctx, "ip", args...); err != nil {
			return err
		}
	}
	_, err := end.NS.Exec(ctx, "ip", "link", "set", end.Name, "up")
	return err
}
