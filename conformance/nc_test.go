package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildUmptcp builds the umptcp command once per test into a temp dir.
func buildUmptcp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "umptcp")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/umptcp/umptcp/cmd/umptcp").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// tsharkCount counts the packets of a pcap that match a display filter,
// with MPTCP analysis (and mapping analysis) on.
func tsharkCount(t *testing.T, pcap, filter string) int {
	t.Helper()
	out, err := exec.Command("tshark", "-r", pcap, "-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.analyze_mappings:TRUE",
		"-o", "tcp.analyze_sequence_numbers:TRUE", "-Y", filter, "-T", "fields", "-e", "frame.number").Output()
	require.NoError(t, err, "tshark -Y %q", filter)
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			n++
		}
	}
	return n
}

// TestNCPcapAgainstKernel runs `umptcp nc` (both roles, IPv4 and IPv6)
// against kernel MPTCP sockets, checks the data both ways, the -v report,
// the kernel's counters, and that tshark reads the --pcap file as a clean
// MPTCP connection: MP_CAPABLE handshake, DSS mappings, no key mismatch,
// no missing algorithm, no infinite mapping, and no payload without a
// mapping.
func TestNCPcapAgainstKernel(t *testing.T) {
	RequireRoot(t)
	_, err := exec.LookPath("tshark")
	require.NoError(t, err, "tshark is needed (.ci/run installs it)")
	bin := buildUmptcp(t)
	for _, tc := range []struct {
		name         string
		listen       bool
		stack, host  string
		prefix       int
		kernelListen string
		plainTCP     bool // the kernel end is a plain TCP socket: nc falls back
	}{
		{name: "client-ipv4", stack: "10.79.0.2", host: "10.79.0.1", prefix: 24, kernelListen: "0.0.0.0"},
		{name: "server-ipv6", listen: true, stack: "fd79::2", host: "fd79::1", prefix: 64},
		{name: "client-ipv4-plain-tcp-peer", stack: "10.79.0.2", host: "10.79.0.1", prefix: 24, kernelListen: "0.0.0.0", plainTCP: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := NewRig(t, RigOptions{Name: "nc"})
			const size = 8 << 20
			pcap := filepath.Join(t.TempDir(), "nc.pcap")
			dev := fmt.Sprintf("umn%d", rand.IntN(1e6))
			spec := fmt.Sprintf("%s,%s/%d,%s", dev, tc.stack, tc.prefix, tc.host)
			args := []string{"netns", "exec", rig.NS.Name(), bin, "nc"}
			if tc.listen {
				args = append(args, "-l")
			}
			args = append(args, "-v", "--pcap", pcap, "--tun", spec)
			port := 7000 + rand.IntN(1000)
			before := rig.Nstat()

			kernelDone := make(chan error, 1)
			var kernelGot Result
			kernelSide := func(c net.Conn) {
				defer c.Close()
				if ok, err := KernelMultipathTCP(c); err != nil || ok == tc.plainTCP {
					kernelDone <- fmt.Errorf("kernel socket MPTCP=%v, want %v (%v)", ok, !tc.plainTCP, err)
					return
				}
				var err error
				kernelGot, err = sendReceive(c, 2, size)
				kernelDone <- err
			}
			if tc.listen {
				args = append(args, strconv.Itoa(port))
				go func() {
					c, err := dialWhenListening(rig, "tcp", net.JoinHostPort(tc.stack, strconv.Itoa(port)))
					if err != nil {
						kernelDone <- err
						return
					}
					kernelSide(c)
				}()
			} else {
				listen := ListenMPTCP
				if tc.plainTCP {
					listen = ListenTCP
				}
				ln, err := listen(rig.NS, "tcp", net.JoinHostPort(tc.kernelListen, strconv.Itoa(port)))
				require.NoError(t, err)
				defer ln.Close()
				args = append(args, tc.host, strconv.Itoa(port))
				go func() {
					c, err := ln.Accept()
					if err != nil {
						kernelDone <- err
						return
					}
					kernelSide(c)
				}()
			}

			want := sha256.New()
			io.Copy(want, Stream(1, size))
			wantKernel := sha256.New()
			io.Copy(wantKernel, Stream(2, size))

			ctx, cancel := context.WithTimeout(rig.Ctx, 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "ip", args...)
			cmd.Stdin = Stream(1, size)
			got := sha256.New()
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = got, &stderr
			require.NoError(t, cmd.Run(), "umptcp nc %v: %s", args, stderr.String())
			require.NoError(t, <-kernelDone)
			require.Equal(t, want.Sum(nil), kernelGot.Sum[:], "kernel received what nc read from stdin")
			require.Equal(t, wantKernel.Sum(nil), got.Sum(nil), "nc wrote what the kernel sent")
			require.Contains(t, stderr.String(), "1 subflow(s)", stderr.String())
			if tc.plainTCP {
				require.Contains(t, stderr.String(), "using plain TCP", stderr.String())
				require.Zero(t, tsharkCount(t, pcap, "tcp.options.mptcp.subtype == 2"), "no DSS after fallback")
				require.Zero(t, tsharkCount(t, pcap, "tcp.flags.reset == 1"), "no RST")
				return
			}
			require.Contains(t, stderr.String(), "using MPTCP", stderr.String())

			diff := rig.Nstat().Diff(before)
			if tc.listen {
				RequireIncreased(t, diff, "MPTcpExtMPCapableSYNACKRX")
			} else {
				RequireIncreased(t, diff, "MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableACKRX")
			}
			RequireUnchanged(t, diff, "MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK",
				"MPTcpExtDSSNotMatching", "MPTcpExtDataCsumErr", "MPTcpExtInfiniteMapRx", "MPTcpExtMPFailRx")

			require.GreaterOrEqual(t, tsharkCount(t, pcap, "tcp.options.mptcp.subtype == 0"), 3, "MP_CAPABLE SYN, SYN-ACK, ACK")
			require.Equal(t, 1, tsharkCount(t, pcap, "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.options.mptcp.subtype == 0"))
			require.Positive(t, tsharkCount(t, pcap, "tcp.options.mptcp.subtype == 2 && tcp.options.mptcp.dseqnpresent.flag == 1 && tcp.len > 0"), "DSS mappings")
			require.Zero(t, tsharkCount(t, pcap, "mptcp.connection.echoed_key_mismatch || mptcp.connection.missing_algorithm || mptcp.dss.infinite_mapping"))
			require.Zero(t, tsharkCount(t, pcap, "mptcp.dss.missing_mapping && tcp.len > 0"), "payload without mapping")
			require.Zero(t, tsharkCount(t, pcap, "tcp.flags.reset == 1"), "no RST")
		})
	}
}

// sendReceive sends Stream(seed, size) on c, then half-closes it, while it
// reads c to EOF; it returns what it read.
func sendReceive(c net.Conn, seed uint64, size int64) (Result, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := Send(c, seed, size)
		if err == nil {
			err = c.(HalfCloser).CloseWrite()
		}
		errc <- err
	}()
	r, err := Receive(c)
	if serr := <-errc; err == nil {
		err = serr
	}
	return r, err
}

// dialWhenListening dials addr with the kernel's MPTCP from the rig's
// namespace until a listener (umptcp nc starting up) answers, for at most
// 30 s.
func dialWhenListening(rig *Rig, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(rig.Ctx, 30*time.Second)
	defer cancel()
	var c net.Conn
	err := ctx.Err()
	for ctx.Err() == nil {
		if c, err = DialMPTCP(ctx, rig.NS, network, addr); err == nil {
			return c, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}
