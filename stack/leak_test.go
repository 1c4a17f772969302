package stack_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/umptcp/umptcp/tun"
)

// TestNoGoroutineLeft: after a transfer and Close of both connections and
// both stacks, every goroutine the stacks, connections and links started
// has ended.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		sa, sb, addr := pair(t, tun.LinkParams{}, false, false, false)
		c1, c2 := dialAccept(t, sa, sb, addr)
		exchange(t, c1, c2, 1<<20)
		c1.Close()
		c2.Close()
		for _, c := range []interface{ Done() <-chan struct{} }{c1, c2} {
			select {
			case <-c.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("connection did not finish closing")
			}
		}
		sa.Close()
		sb.Close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var ours []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "umptcp") || strings.Contains(g, "gvisor") {
				ours = append(ours, g)
			}
		}
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, strings.Join(ours, "\n\n"))
	}
}
