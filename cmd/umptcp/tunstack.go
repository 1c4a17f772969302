package main

import (
	"net/netip"
	"slices"

	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunStackOptions are the stack settings nc and perf share.
type tunStackOptions struct {
	tuns      []string // NAME,STACKADDR/PREFIX,HOSTADDR specs, one link each
	backups   []string // device names whose subflows are backup paths
	checksum  bool
	scheduler string
	// wrap, if set, wraps each device's link endpoint (a pcap tap).
	wrap func(gvstack.LinkEndpoint) gvstack.LinkEndpoint
}

// openTUNStack opens one TUN device per spec and builds a stack with one
// link per device. close closes the stack, then the devices.
func openTUNStack(o tunStackOptions) (s *stack.Stack, close func(), err error) {
	var devs []*tun.Device
	closeDevs := func() {
		for _, d := range devs {
			d.Close()
		}
	}
	var links []stack.Link
	for _, spec := range o.tuns {
		cfg, err := tun.ParseSpec(spec)
		if err != nil {
			closeDevs()
			return nil, nil, err
		}
		dev, err := tun.Open(cfg)
		if err != nil {
			closeDevs()
			return nil, nil, err
		}
		devs = append(devs, dev)
		var ep gvstack.LinkEndpoint = dev.LinkEndpoint()
		if o.wrap != nil {
			ep = o.wrap(ep)
		}
		links = append(links, stack.Link{Endpoint: ep, Addrs: []netip.Prefix{cfg.StackAddr}, Backup: slices.Contains(o.backups, cfg.Name)})
	}
	s, err = stack.New(stack.Config{Links: links, Checksum: o.checksum, Scheduler: o.scheduler})
	if err != nil {
		closeDevs()
		return nil, nil, err
	}
	return s, func() { s.Close(); closeDevs() }, nil
}
