package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/umptcp/umptcp/pm"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/subflow"
	"github.com/umptcp/umptcp/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunStackOptions are the stack settings nc and perf share.
type tunStackOptions struct {
	tuns      []string // NAME,STACKADDR/PREFIX,HOSTADDR specs, one link each
	backups   []string // device names whose subflows are backup paths
	checksum  bool
	scheduler string
	// endpoints and limits configure the path manager (nil: every
	// device's address is a subflow endpoint; pm.DefaultLimits).
	endpoints []pm.Endpoint
	limits    *pm.Limits
	logf      func(format string, args ...any) // the path manager's verbose output
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
	s, err = stack.New(stack.Config{Links: links, Checksum: o.checksum, Scheduler: o.scheduler, Endpoints: o.endpoints, Limits: o.limits, Logf: o.logf})
	if err != nil {
		closeDevs()
		return nil, nil, err
	}
	return s, func() { s.Close(); closeDevs() }, nil
}

// pmFlags are the path-manager options nc and perf share, mirroring
// `ip mptcp endpoint` and `ip mptcp limits`.
type pmFlags struct {
	endpoints []pm.Endpoint
	limits    *pm.Limits
}

// register adds --endpoint and --limits to fs.
func (f *pmFlags) register(fs *flag.FlagSet) {
	fs.Func("endpoint", "`ADDR[:PORT],FLAG[,FLAG...]`: a path-manager endpoint, flags signal, subflow, backup, fullmesh (repeatable; default: every --tun address is a subflow endpoint)", func(s string) error {
		e, err := pm.ParseEndpoint(s)
		if err != nil {
			return err
		}
		f.endpoints = append(f.endpoints, e)
		return pm.CheckEndpoints(f.endpoints)
	})
	fs.Func("limits", "`subflows=N,add_addr_accepted=M`: the path manager's limits (default subflows=8,add_addr_accepted=8)", func(s string) error {
		l, err := pm.ParseLimits(s, pm.DefaultLimits)
		if err != nil {
			return err
		}
		f.limits = &l
		return nil
	})
}

// check reports an endpoint whose address is no --tun device's.
func (f *pmFlags) check(tuns []string) error {
	for _, e := range f.endpoints {
		found := false
		for _, spec := range tuns {
			if cfg, err := tun.ParseSpec(spec); err == nil && cfg.StackAddr.Addr().Unmap() == e.Addr {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("--endpoint %s: not the stack address of any --tun device", e.Addr)
		}
	}
	return nil
}

// printMIB writes the stack's non-zero MPTCP counters, in a fixed order,
// as nstat names them.
func printMIB(w io.Writer, prefix string, s *stack.Stack) {
	m := s.MIB()
	var parts []string
	for _, c := range subflow.AllCounters() {
		if v := m[c.Name()]; v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c.Name(), v))
		}
	}
	if len(parts) == 0 {
		return
	}
	fmt.Fprintf(w, "%scounters: %s\n", prefix, strings.Join(parts, " "))
}

// nonZeroMIB is the stack's non-zero counters, for JSON.
func nonZeroMIB(s *stack.Stack) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range s.MIB() {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
