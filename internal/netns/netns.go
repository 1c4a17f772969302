package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// runDir is where `ip netns` keeps the bind mounts that name namespaces.
const runDir = "/run/netns"

// namePrefix starts the name of every namespace this package creates.
const namePrefix = "umptcp-"

// cmdTimeout bounds each `ip` command New and Close run themselves.
const cmdTimeout = 30 * time.Second

// NS is a named network namespace created by New. Its methods are safe for
// concurrent use.
type NS struct {
	name      string
	closeOnce sync.Once
	closeErr  error
}

// New creates a fresh network namespace named "umptcp-<prefix>-<random>"
// (prefix may already start with "umptcp-") and brings its loopback up.
// The caller must Close it.
func New(prefix string) (*NS, error) {
	name, err := newName(prefix)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("netns: ip netns add %s: %w: %s", name, err, bytesTrim(out))
	}
	ns := &NS{name: name}
	if _, err := ns.Exec(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, ns.Close())
	}
	return ns, nil
}

// newName returns "umptcp-<prefix>-<8 random hex digits>".
func newName(prefix string) (string, error) {
	prefix = strings.TrimPrefix(prefix, namePrefix)
	if prefix == "" || strings.ContainsAny(prefix, "/ \t\n\x00") {
		return "", fmt.Errorf("netns: invalid prefix %q", prefix)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netns: random name: %w", err)
	}
	return namePrefix + prefix + "-" + hex.EncodeToString(b[:]), nil
}

// Name returns the namespace's name as `ip netns` knows it.
func (ns *NS) Name() string { return ns.name }

// Path returns the namespace's bind-mount path (/run/netns/NAME).
func (ns *NS) Path() string { return filepath.Join(runDir, ns.name) }

// String returns the namespace's name.
func (ns *NS) String() string { return ns.name }

// Close deletes the namespace's name (`ip netns del`). The namespace itself
// disappears once nothing (socket, process, TUN or veth device) holds it
// any more. Close is idempotent: later calls return the first call's result,
// and a namespace that is already gone is not an error.
func (ns *NS) Close() error {
	ns.closeOnce.Do(func() {
		if _, err := os.Stat(ns.Path()); errors.Is(err, os.ErrNotExist) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns.name).CombinedOutput()
		if err != nil {
			ns.closeErr = fmt.Errorf("netns: ip netns del %s: %w: %s", ns.name, err, bytesTrim(out))
		}
	})
	return ns.closeErr
}

// Exec runs `ip netns exec NAME name args...` and returns its standard
// output and standard error together. A failure's error includes them.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	argv := append([]string{"netns", "exec", ns.name, name}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netns %s: %s %s: %w: %s", ns.name, name, strings.Join(args, " "), err, bytesTrim(out))
	}
	return out, nil
}

// Sysctl sets the namespace's sysctl key (for example
// "net.mptcp.checksum_enabled") to value, by writing
// /proc/sys/<key with dots as slashes> from inside the namespace.
func (ns *NS) Sysctl(key, value string) error {
	if key == "" || strings.Contains(key, "..") || strings.ContainsAny(key, "/ ") {
		return fmt.Errorf("netns: invalid sysctl key %q", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return ns.Do(func() error {
		if err := os.WriteFile(path, []byte(value+"\n"), 0); err != nil {
			return fmt.Errorf("netns %s: sysctl %s=%s: %w", ns.name, key, value, err)
		}
		return nil
	})
}

// Do runs fn on an OS thread locked to a goroutine of its own and switched
// into the namespace, waits for it and returns its error. The thread is
// switched back to its former namespace afterwards; should that fail, the
// thread stays locked so that the Go runtime discards it when the goroutine
// ends.
//
// Sockets, TUN devices and other file descriptors fn creates belong to the
// namespace for good and can be used from any goroutine afterwards. fn must
// not start goroutines expecting them to run inside the namespace, and must
// not call testing.T.FailNow (it runs on another goroutine). A panic in fn is
// re-raised in the caller once the thread is back in its namespace.
func (ns *NS) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		res := result{err: errors.New("netns: function did not return (runtime.Goexit?)")}
		defer func() { done <- res }()
		runtime.LockOSThread()
		restore, err := ns.enter()
		if err != nil {
			runtime.UnlockOSThread()
			res.err = err
			return
		}
		func() {
			defer func() {
				if v := recover(); v != nil {
					res.panicked, res.panicVal = true, v
				}
			}()
			res.err = fn()
		}()
		if err := restore(); err != nil {
			// Leave the thread locked: it is in the wrong namespace and
			// the runtime terminates it when this goroutine exits.
			res.err = errors.Join(res.err, err)
			return
		}
		runtime.UnlockOSThread()
	}()
	res := <-done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// enter switches the calling (locked) thread into the namespace and returns
// a function that switches it back.
func (ns *NS) enter() (restore func() error, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: open current namespace: %w", err)
	}
	target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(orig)
		return nil, fmt.Errorf("netns: open %s: %w", ns.Path(), err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		return nil, fmt.Errorf("netns: setns %s: %w", ns.name, err)
	}
	return func() error {
		defer unix.Close(orig)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("netns: setns back from %s: %w", ns.name, err)
		}
		return nil
	}, nil
}

// bytesTrim returns out as a trimmed string for error messages.
func bytesTrim(out []byte) string { return strings.TrimSpace(string(out)) }
