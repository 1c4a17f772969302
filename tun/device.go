package tun

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Device is an open TUN device in the network namespace of the OS thread
// that called Open. The file descriptor is usable from any thread.
type Device struct {
	cfg Config
	fd  int
	ep  *tunEndpoint

	offloadErr error // TUNSETOFFLOAD refused: packets go one by one

	closeOnce sync.Once
	closeErr  error
}

// Open creates TUN device cfg.Name (IFF_TUN|IFF_NO_PI, and IFF_VNET_HDR with
// the kernel's checksum and TCP segmentation offloads unless cfg.NoOffload)
// in the network namespace of the calling OS thread, sets its MTU, assigns
// cfg.HostAddr to it (IPv6 with IFA_F_NODAD) and brings it up. It fails if a device of that
// name exists already. Close removes the device.
//
// Callers that switch namespaces must hold runtime.LockOSThread around Open
// (or use OpenIn).
//
// Open does not use cfg.StackAddr: that is the address a stack on the
// device's LinkEndpoint takes. A device for Forward has none (Config).
func Open(cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tun: open %q: %w", cfg.Name, err)
	}
	// Keep all namespace-dependent syscalls on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("tun: open /dev/net/tun: %w (is the tun module loaded?)", err)
		}
		return nil, fmt.Errorf("tun: open /dev/net/tun: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd) // a non-persistent TUN disappears with its last fd
		}
	}()

	ifr, err := unix.NewIfreq(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("tun: %q: %w", cfg.Name, err)
	}
	offload := !cfg.NoOffload
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tun: create %q: a network device of that name already exists", cfg.Name)
		case errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("tun: create %q: %w (needs CAP_NET_ADMIN)", cfg.Name, err)
		}
		return nil, fmt.Errorf("tun: create %q (TUNSETIFF): %w", cfg.Name, err)
	}

	nl, err := newRtnl()
	if err != nil {
		return nil, fmt.Errorf("tun: %q: %w", cfg.Name, err)
	}
	defer nl.close()
	idx, err := nl.ifIndex(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("tun: %q: %w", cfg.Name, err)
	}
	mtu := cfg.EffectiveMTU()
	if err := nl.setLink(idx, mtu, false); err != nil {
		return nil, fmt.Errorf("tun: set MTU %d on %q: %w", mtu, cfg.Name, err)
	}
	if err := nl.addAddr(idx, cfg.HostAddr); err != nil {
		return nil, fmt.Errorf("tun: add address %s to %q: %w", cfg.HostAddr, cfg.Name, err)
	}
	if err := nl.setLink(idx, 0, true); err != nil {
		return nil, fmt.Errorf("tun: set %q up: %w", cfg.Name, err)
	}

	if offload {
		// Without the offloads the kernel never hands us a
		// super-segment; the vnet header still frames every packet.
		offErr := enableOffload(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("tun: %q: %w", cfg.Name, err)
		}
		ok = true
		d := &Device{cfg: cfg, fd: fd, ep: &tunEndpoint{LinkEndpoint: newOffloadEndpoint(fd, uint32(mtu), true)}}
		d.offloadErr = offErr
		return d, nil
	}
	fdep, err := fdbased.New(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            uint32(mtu),
		EthernetHeader: false,
		// One processor: packets are delivered inline by the reader
		// goroutine, which exists only while the endpoint is attached.
		ProcessorsPerChannel: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("tun: %q: fdbased endpoint: %w", cfg.Name, err)
	}
	ok = true
	return &Device{cfg: cfg, fd: fd, ep: &tunEndpoint{LinkEndpoint: fdep}}, nil
}

// OpenIn runs Open inside the network namespace /run/netns/NETNS (as made by
// `ip netns add`) and returns to the caller's namespace. The returned
// device's fd is usable from any thread.
func OpenIn(netns string, cfg Config) (*Device, error) {
	var d *Device
	err := InNetns(netns, func() error {
		var err error
		d, err = Open(cfg)
		return err
	})
	return d, err
}

// InNetns runs fn on a locked OS thread switched into the network namespace
// /run/netns/NETNS (or NETNS itself if it is an absolute path). Sockets
// created by fn belong to that namespace and stay usable from any goroutine
// afterwards. fn must not start goroutines that expect to be in the namespace.
func InNetns(netns string, fn func() error) error {
	path := netns
	if len(path) == 0 || path[0] != '/' {
		path = "/run/netns/" + netns
	}
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("tun: open own netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("tun: netns %q: %w", netns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("tun: setns into %q: %w", netns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime destroys it when this
		// goroutine exits, so no other goroutine runs in the wrong netns.
		return errors.Join(ferr, fmt.Errorf("tun: setns back from %q: %w", netns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Config returns the configuration the device was opened with.
func (d *Device) Config() Config { return d.cfg }

// Offload reports whether the device moves TCP super-segments (see
// Config.NoOffload), and what its endpoint merged and cut so far.
func (d *Device) Offload() (OffloadStats, bool) {
	oe, ok := d.ep.LinkEndpoint.(*offloadEndpoint)
	if !ok || d.offloadErr != nil {
		if ok {
			return oe.Stats(), false
		}
		return OffloadStats{}, false
	}
	return oe.Stats(), true
}

// FD returns the TUN file descriptor (for diagnostics).
func (d *Device) FD() int { return d.fd }

// LinkEndpoint returns the gVisor link endpoint over the TUN fd: raw IP, no
// link header, MTU from the config. Every call returns the same endpoint.
//
// With a plain gVisor stack on it, close the Device (or Attach(nil) the
// endpoint) before closing the stack: gVisor's Stack.Wait detaches links
// with the stack lock held, which deadlocks against a packet being
// delivered. umptcp's stack.Stack does this by itself.
func (d *Device) LinkEndpoint() stack.LinkEndpoint { return d.ep }

// Close detaches the link endpoint (stopping its reader goroutine), closes the
// fd and thereby removes the device. Writes through the endpoint afterwards
// fail with ErrClosedForSend. It is safe to call Close before or after the
// stack using the endpoint is closed.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.ep.attachMu.Lock()
		defer d.ep.attachMu.Unlock()
		d.ep.mu.Lock()
		d.ep.closed = true
		d.ep.mu.Unlock()
		if d.ep.LinkEndpoint.IsAttached() {
			d.ep.LinkEndpoint.Attach(nil) // stops and waits for the reader
		}
		if oe, ok := d.ep.LinkEndpoint.(*offloadEndpoint); ok {
			oe.closeWriter() // its last writes go to this fd, not a reused number
		}
		if err := unix.Close(d.fd); err != nil {
			d.closeErr = fmt.Errorf("tun: close %q: %w", d.cfg.Name, err)
		}
	})
	return d.closeErr
}

// tunEndpoint wraps the fdbased endpoint so that nothing is written to the
// fd number after Device.Close.
type tunEndpoint struct {
	stack.LinkEndpoint

	attachMu sync.Mutex // serializes Attach and Device.Close

	mu     sync.RWMutex // guards closed; held (R) across fd writes
	closed bool
}

func (e *tunEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	return e.LinkEndpoint.WritePackets(pkts)
}

// Attach must not hold mu while detaching: the reader goroutine it waits for
// may be delivering a packet whose answer is written through WritePackets.
func (e *tunEndpoint) Attach(d stack.NetworkDispatcher) {
	e.attachMu.Lock()
	defer e.attachMu.Unlock()
	e.mu.RLock()
	closed := e.closed
	e.mu.RUnlock()
	if closed && d != nil {
		return
	}
	e.LinkEndpoint.Attach(d)
}
