package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/umptcp/umptcp/internal/netns"
	"github.com/umptcp/umptcp/tun"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"0":          0,
		"20000000":   20_000_000,
		"50mbit":     50_000_000,
		"50M":        50_000_000,
		"50Mbit/s":   50_000_000,
		"1.5gbit":    1_500_000_000,
		"1.5G":       1_500_000_000,
		"800kbit":    800_000,
		"800k":       800_000,
		" 10 mbit ":  10_000_000,
		"100bit":     100,
		"0.5mbit":    500_000,
		"1e6":        1_000_000,
		"2.25MBIT/S": 2_250_000,
	} {
		got, err := parseRate(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for in, errPart := range map[string]string{
		"50mbps": "ambiguous",
		"50MB":   "ambiguous",
		"50kbps": "ambiguous",
		"fast":   "bad rate",
		"":       "bad rate",
		"-5M":    "out of range",
		"mbit":   "bad rate",
		"NaN":    "bad rate",
		"1":      "below 8",
	} {
		_, err := parseRate(in)
		require.ErrorContains(t, err, errPart, in)
	}
}

func TestParseProbAndBytes(t *testing.T) {
	for in, want := range map[string]float64{"0": 0, "0.01": 0.01, "1%": 0.01, "100%": 1, "1": 1, " 2.5% ": 0.025} {
		got, err := parseProb(in)
		require.NoError(t, err, in)
		require.InDelta(t, want, got, 1e-12, in)
	}
	for _, in := range []string{"2", "-0.1", "101%", "x", "%"} {
		_, err := parseProb(in)
		require.Error(t, err, in)
	}
	for in, want := range map[string]int{"0": 0, "65536": 65536, "64k": 64 << 10, "1M": 1 << 20} {
		got, err := parseBytes(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"-1", "1g", "k", "5000m"} {
		_, err := parseBytes(in)
		require.Error(t, err, in)
	}
}

func TestParseEmulate(t *testing.T) {
	var errb bytes.Buffer
	// Flags before, between and after the devices.
	o, code := parseEmulate([]string{"--rate", "10mbit", "cl:umta,10.91.0.1/24", "--delay", "20ms",
		"/run/netns/sv:umtb,10.91.0.2/24", "--loss", "1%", "--dup", "0.5%", "--queue", "128k", "--mtu", "1400",
		"--rate-ba", "5M", "--jitter", "3ms", "--reorder", "--blackhole-after", "2s", "--duration", "10s", "-v", "--seed", "7"}, &errb)
	require.Equal(t, -1, code, errb.String())
	require.Equal(t, "cl", o.portA.netns)
	require.Equal(t, "/run/netns/sv", o.portB.netns)
	require.Equal(t, "umta", o.portA.cfg.Name)
	require.Equal(t, "10.91.0.2/24", o.portB.cfg.HostAddr.String())
	require.True(t, o.portA.cfg.IsPort())
	require.Equal(t, 1400, o.portA.cfg.MTU)
	require.Equal(t, tun.LinkParams{Rate: 10e6, Delay: 20 * time.Millisecond, Jitter: 3 * time.Millisecond, Reorder: true,
		Loss: 0.01, Duplicate: 0.005, QueueBytes: 128 << 10, MTU: 1400, Seed: 7}, o.ab)
	require.EqualValues(t, 5e6, o.ba.Rate)
	require.Equal(t, 20*time.Millisecond, o.ba.Delay, "--delay applies both ways without --delay-ba")
	require.EqualValues(t, 8, o.ba.Seed)
	require.True(t, o.blackholeIsSet)
	require.Equal(t, 2*time.Second, o.blackholeAfter)
	require.True(t, o.durationIsSet)
	require.True(t, o.verbose)

	// IPv6, current namespace, defaults.
	o, code = parseEmulate([]string{"umt6a,fd91::1/64", "umt6b,fd91::2/64"}, &errb)
	require.Equal(t, -1, code, errb.String())
	require.Empty(t, o.portA.netns)
	require.Equal(t, tun.LinkParams{Seed: 1}, o.ab)
	require.False(t, o.durationIsSet)
	require.False(t, o.blackholeIsSet)
}

func TestParseEmulateMiddlebox(t *testing.T) {
	var errb bytes.Buffer
	devs := []string{"umta,10.91.0.1/24", "umtb,10.91.0.2/24"}
	for _, tc := range []struct {
		args     []string
		strip    tun.StripWhere
		segments int
		after    int64
	}{
		{nil, tun.StripNone, 0, 0},
		{[]string{"--strip-mptcp", "syn"}, tun.StripSYN, 0, 0},
		{[]string{"--strip-mptcp=data", "--corrupt", "3"}, tun.StripData, 3, 0},
		{[]string{"--strip-mptcp", "ALL", "--corrupt", "3@64k"}, tun.StripAll, 3, 64 << 10},
		{[]string{"--strip-mptcp", "none", "--corrupt", "1@100000"}, tun.StripNone, 1, 100000},
		{[]string{"--corrupt", "2@1M"}, tun.StripNone, 2, 1 << 20},
		{[]string{"--corrupt", "5@2g"}, tun.StripNone, 5, 2 << 30},
		{[]string{"--corrupt", "0@1k"}, tun.StripNone, 0, 1 << 10},
	} {
		errb.Reset()
		o, code := parseEmulate(append(append([]string(nil), tc.args...), devs...), &errb)
		require.Equal(t, -1, code, "%v: %s", tc.args, errb.String())
		for _, p := range []tun.LinkParams{o.ab, o.ba} {
			require.Equal(t, tc.strip, p.StripMPTCP, "%v", tc.args)
			require.Equal(t, tc.segments, p.CorruptSegments, "%v", tc.args)
			require.Equal(t, tc.after, p.CorruptAfter, "%v", tc.args)
		}
	}
	// The start line says what the middleboxes do.
	o, code := parseEmulate(append([]string{"--strip-mptcp", "syn", "--corrupt", "2@1k"}, devs...), &errb)
	require.Equal(t, -1, code)
	require.Equal(t, "unlimited, delay 0s, MPTCP options stripped (syn), payload of 2 segments rewritten after 1024 bytes each way",
		describeParams(o.ab, o.ba))
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "100000": 100000, "64k": 64 << 10, "10M": 10 << 20, "1g": 1 << 30, " 3G ": 3 << 30} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "k", "1.5m", "1t", "99999999999g", "lots"} {
		_, err := parseSize(in)
		require.ErrorContains(t, err, "bad byte count", in)
	}
}

func TestEmulateUsageErrors(t *testing.T) {
	ok := []string{"umta,10.91.0.1/24", "umtb,10.91.0.2/24"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "expected two devices"},
		{ok[:1], "expected two devices"},
		{append(ok, "x"), "expected two devices"},
		{append([]string{"--rate", "50mbps"}, ok...), "ambiguous"},
		{append([]string{"--loss", "2"}, ok...), "out of range"},
		{append([]string{"--dup", "-1%"}, ok...), "out of range"},
		{append([]string{"--delay", "-5ms"}, ok...), "negative"},
		{append([]string{"--delay", "5"}, ok...), "duration"},
		{append([]string{"--queue", "lots"}, ok...), "bad byte count"},
		{append([]string{"--duration", "0s"}, ok...), "positive"},
		{append([]string{"--mtu", "70000"}, ok...), "--mtu"},
		{append([]string{"--mtu", "1000"}, "umt6a,fd91::1/64", "umt6b,fd91::2/64"), "MTU 1000 out of range 1280"},
		{append([]string{"--bogus"}, ok...), "flag provided but not defined"},
		{append([]string{"--strip-mptcp", "sometimes"}, ok...), "want none, syn, data or all"},
		{append([]string{"--strip-mptcp", ""}, ok...), "want none, syn, data or all"},
		{append([]string{"--corrupt", "x"}, ok...), "bad segment count"},
		{append([]string{"--corrupt", "-1"}, ok...), "bad segment count"},
		{append([]string{"--corrupt", "@5"}, ok...), "bad segment count"},
		{append([]string{"--corrupt", "2@"}, ok...), "bad byte count"},
		{append([]string{"--corrupt", "2@lots"}, ok...), "bad byte count"},
		{append([]string{"--corrupt", "2@-1k"}, ok...), "bad byte count"},
		{[]string{"umta,10.91.0.1", "umtb,10.91.0.2/24"}, "A:"},
		{[]string{"umta,10.91.0.1/24", "umtb,10.91.0.2/24,10.91.0.3"}, "B:"},
		{[]string{"umta,10.91.0.1/24", "umtb,10.91.0.255/24"}, "broadcast"},
		{[]string{"umta,10.91.0.1/24", "toolongname12345,10.91.0.2/24"}, "at most 15"},
		{[]string{":umta,10.91.0.1/24", "umtb,10.91.0.2/24"}, "empty network namespace"},
		{[]string{"a/b:umta,10.91.0.1/24", "umtb,10.91.0.2/24"}, "absolute path"},
		{[]string{"ns:umta,10.91.0.1/24", "ns:umta,10.92.0.1/24"}, "same device"},
	} {
		var out, errb bytes.Buffer
		code := emulate(tc.args, &out, &errb)
		require.Equal(t, 2, code, "%v: %s", tc.args, errb.String())
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
		if !strings.Contains(tc.want, "flag") {
			require.Equal(t, 1, strings.Count(strings.TrimSpace(errb.String()), "\n")+1, "one line: %q", errb.String())
		}
	}
	var out, errb bytes.Buffer
	require.Equal(t, 0, emulate([]string{"-h"}, &out, &errb))
	require.Contains(t, errb.String(), "[NETNS:]NAME,ADDR/PREFIX")
	require.Contains(t, errb.String(), "-blackhole-after")
	require.Contains(t, errb.String(), "-strip-mptcp WHERE")
	require.Contains(t, errb.String(), "-corrupt N[@BYTES]")
	require.Contains(t, errb.String(), "[--strip-mptcp WHERE] [--corrupt N[@BYTES]]")
}

func TestEmulateRuntimeError(t *testing.T) {
	// A namespace that does not exist fails at run time, in one line.
	var out, errb bytes.Buffer
	code := emulate([]string{"umptcp-no-such-netns-for-test:umta,10.91.0.1/24", "umtb,10.91.0.2/24"}, &out, &errb)
	require.Equal(t, 1, code, errb.String())
	require.Contains(t, errb.String(), "umptcp-no-such-netns-for-test")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(errb.String()), "\n")+1, "one line: %q", errb.String())
}

// TestEmulateKernelTCP runs emulate between two fresh namespaces for a few
// seconds and moves data through it with kernel TCP.
func TestEmulateKernelTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
	var nss [2]*netns.NS
	for i := range nss {
		ns, err := netns.New("emu")
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, ns.Close()) })
		nss[i] = ns
	}
	suffix := rand.Uint32N(1 << 24)
	a := nss[0].Name() + ":" + devName("umea", suffix) + ",10.96.0.1/24"
	b := nss[1].Name() + ":" + devName("umeb", suffix) + ",10.96.0.2/24"
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- emulate([]string{a, b, "--delay", "10ms", "--rate", "50mbit", "--duration", "4s", "-v"}, &out, &errb)
	}()

	// Until emulate has created the devices, their addresses do not exist.
	var ln net.Listener
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := nss[1].Do(func() (err error) {
			ln, err = net.Listen("tcp", "10.96.0.2:0")
			return err
		})
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "listen on emulate's device B: %v; stderr: %s", err, errb.String())
		time.Sleep(20 * time.Millisecond)
	}
	defer ln.Close()
	const n = 1 << 20
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		h := sha256.New()
		_, _ = io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	// Until emulate has created device A too, there is no route.
	var c net.Conn
	for {
		err := nss[0].Do(func() (err error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", ln.Addr().String())
			return err
		})
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "dial through emulate: %v; stderr: %s", err, errb.String())
		time.Sleep(50 * time.Millisecond)
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := c.Write(data)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	select {
	case sum, ok := <-got:
		require.True(t, ok, "accept failed")
		require.Equal(t, sha256.Sum256(data), sum)
	case <-time.After(15 * time.Second):
		t.Fatal("receiver did not finish")
	}

	select {
	case code := <-done:
		require.Equal(t, 0, code, "stderr: %s", errb.String())
	case <-time.After(15 * time.Second):
		t.Fatal("emulate did not stop after --duration")
	}
	t.Logf("emulate output:\n%s", out.String())
	require.Contains(t, out.String(), "forwarding")
	require.Contains(t, out.String(), "50mbit, delay 10ms, queue")
	require.Contains(t, out.String(), "each way")
	require.Contains(t, out.String(), "stopped after")
	require.GreaterOrEqual(t, strings.Count(out.String(), "Mbit/s "), 4, "-v lines: two directions a second")
	require.Regexp(t, `A->B \(\S+ -> \S+\): sent \d+ packets \(\d+ bytes\), delivered [1-9]\d+ packets \(\d{7,} bytes`, out.String())
	require.Contains(t, out.String(), "B->A: dropped")
	require.Empty(t, errb.String())
}

// devName returns prefix + 6 hex digits: a TUN name unlikely to collide.
func devName(prefix string, suffix uint32) string {
	const hex = "0123456789abcdef"
	b := []byte(prefix)
	for i := 20; i >= 0; i -= 4 {
		b = append(b, hex[suffix>>i&0xf])
	}
	return string(b)
}

// TestEmulateStripKernelMPTCP runs the Linux kernel's MPTCP between two
// namespaces through emulate --strip-mptcp: with the options blanked on
// the SYNs (or on everything else, so that the third ACK and every DSS
// are lost) the kernel falls back to TCP on both sides; data always
// arrives intact.
func TestEmulateStripKernelMPTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
	for i, tc := range []struct {
		strip string
		mptcp bool // what both ends report after the transfer
	}{
		{"none", true},
		{"syn", false},
		{"all", false},
		{"data", false},
	} {
		t.Run(tc.strip, func(t *testing.T) {
			var nss [2]*netns.NS
			for i := range nss {
				ns, err := netns.New("emu")
				require.NoError(t, err)
				t.Cleanup(func() { require.NoError(t, ns.Close()) })
				nss[i] = ns
			}
			suffix := rand.Uint32N(1 << 24)
			a := nss[0].Name() + ":" + devName("umsa", suffix) + ",10.97." + string(rune('0'+i)) + ".1/24"
			b := nss[1].Name() + ":" + devName("umsb", suffix) + ",10.97." + string(rune('0'+i)) + ".2/24"
			srvAddr := "10.97." + string(rune('0'+i)) + ".2:0"
			var out, errb bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- emulate([]string{a, b, "--delay", "2ms", "--strip-mptcp", tc.strip, "--duration", "2s"}, &out, &errb)
			}()
			// Go's MPTCP Listen and Dial quietly retry with plain TCP when
			// MPTCP fails (as it does while the devices do not exist yet):
			// wait for both devices, so that the first attempt succeeds.
			waitIfUp(t, nss[0], "10.97."+string(rune('0'+i))+".1")
			waitIfUp(t, nss[1], "10.97."+string(rune('0'+i))+".2")
			var ln net.Listener
			deadline := time.Now().Add(3 * time.Second)
			for {
				err := nss[1].Do(func() (err error) {
					var lc net.ListenConfig
					lc.SetMultipathTCP(true)
					ln, err = lc.Listen(context.Background(), "tcp", srvAddr)
					return err
				})
				if err == nil {
					break
				}
				require.True(t, time.Now().Before(deadline), "listen: %v; stderr: %s", err, errb.String())
				time.Sleep(20 * time.Millisecond)
			}
			defer ln.Close()
			data := make([]byte, 256<<10)
			for i := range data {
				data[i] = byte(i * 13)
			}
			type result struct {
				sum   [32]byte
				mptcp bool
				err   error
			}
			got := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- result{err: err}
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				b, err := io.ReadAll(c)
				mp, _ := c.(*net.TCPConn).MultipathTCP()
				got <- result{sha256.Sum256(b), mp, err}
			}()
			var c net.Conn
			for {
				err := nss[0].Do(func() (err error) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					var d net.Dialer
					d.SetMultipathTCP(true)
					c, err = d.DialContext(ctx, "tcp", ln.Addr().String())
					return err
				})
				if err == nil {
					break
				}
				require.True(t, time.Now().Before(deadline), "dial: %v; stderr: %s", err, errb.String())
				time.Sleep(50 * time.Millisecond)
			}
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			_, err := c.Write(data)
			require.NoError(t, err)
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			var r result
			select {
			case r = <-got:
			case <-time.After(15 * time.Second):
				t.Fatal("receiver did not finish")
			}
			require.NoError(t, r.err)
			require.Equal(t, sha256.Sum256(data), r.sum)
			clientMP, _ := c.(*net.TCPConn).MultipathTCP()
			c.Close()
			t.Logf("--strip-mptcp %s: client MPTCP %v, server MPTCP %v", tc.strip, clientMP, r.mptcp)
			require.Equal(t, tc.mptcp, clientMP, "client")
			require.Equal(t, tc.mptcp, r.mptcp, "server")
			select {
			case code := <-done:
				require.Equal(t, 0, code, "stderr: %s", errb.String())
			case <-time.After(15 * time.Second):
				t.Fatal("emulate did not stop after --duration")
			}
			if tc.strip == "none" {
				require.Contains(t, out.String(), "MPTCP options stripped from 0, payload")
			} else {
				require.Regexp(t, `A->B: dropped 0 .*MPTCP options stripped from [1-9]`, out.String())
				require.Contains(t, out.String(), "MPTCP options stripped ("+tc.strip+")")
			}
		})
	}
}

// waitIfUp waits until an interface in ns is up with address ip.
func waitIfUp(t *testing.T, ns *netns.NS, ip string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		up := false
		require.NoError(t, ns.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, ifc := range ifs {
				addrs, _ := ifc.Addrs()
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip && ifc.Flags&net.FlagUp != 0 {
						up = true
					}
				}
			}
			return nil
		}))
		if up {
			return
		}
		require.True(t, time.Now().Before(deadline), "no interface up with %s in %s", ip, ns)
		time.Sleep(10 * time.Millisecond)
	}
}
