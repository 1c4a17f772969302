package tun

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/stretchr/testify/require"
)

func TestCapture(t *testing.T) {
	a, b := NewPipe(LinkParams{Delay: time.Millisecond}, LinkParams{Delay: time.Millisecond})
	var buf bytes.Buffer
	c, err := Capture(a, &buf)
	require.NoError(t, err)
	// IPv4 addresses only, so every captured packet is IPv4/TCP.
	sa := newTestStack(t, c, pipeA4)
	sb := newTestStack(t, b, pipeB4)

	const n = 256 << 10
	ln, port := gListen(t, sb, pipeB4.Addr())
	transfer(t, ln.Accept, func() (net.Conn, error) { return gDial(sa, pipeB4.Addr(), port) }, n, 30*time.Second)
	// Captured: everything a sent plus everything delivered to a. A packet
	// is recorded before the link counts it, so the count before closing
	// is a lower bound and the count a little after closing an upper bound.
	seen := func() uint64 { return a.Stats().SentPackets + b.Stats().DeliveredPackets }
	before := seen()
	require.NoError(t, c.CloseCapture())
	captured := c.Packets()
	time.Sleep(50 * time.Millisecond)
	after := seen()
	require.Greater(t, captured, uint64(n/1500), "too few packets captured")
	require.GreaterOrEqual(t, captured, before)
	require.LessOrEqual(t, captured, after)

	file := buf.Bytes()
	r, err := pcapgo.NewReader(bytes.NewReader(file))
	require.NoError(t, err)
	require.Equal(t, layers.LinkTypeRaw, r.LinkType())
	var count, payload, syn int
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Equal(t, ci.Length, ci.CaptureLength)
		count++
		p := gopacket.NewPacket(data, layers.LinkTypeRaw, gopacket.Default)
		require.Nil(t, p.ErrorLayer(), "packet %d: %v", count, p.ErrorLayer())
		ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		require.True(t, ok, "packet %d is not IPv4", count)
		require.Contains(t, []string{"10.9.0.1", "10.9.0.2"}, ip.SrcIP.String())
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		require.True(t, ok, "packet %d is not TCP", count)
		payload += len(tcp.Payload)
		if tcp.SYN {
			syn++
		}
	}
	require.EqualValues(t, captured, count)
	require.Equal(t, 2, syn, "SYN and SYN-ACK")
	require.GreaterOrEqual(t, payload, n)

	if _, err := exec.LookPath("tshark"); err != nil {
		t.Log("tshark not installed: skipping the tshark check")
		return
	}
	path := filepath.Join(t.TempDir(), "capture.pcap")
	require.NoError(t, os.WriteFile(path, file, 0o644))
	out, err := exec.Command("tshark", "-n", "-r", path).Output()
	require.NoError(t, err, "tshark -r: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, count, "tshark output:\n%s", out)
	require.Contains(t, string(out), "TCP")
}

func TestCaptureCloseViaStack(t *testing.T) {
	a, b := NewPipe(LinkParams{}, LinkParams{})
	var buf bytes.Buffer
	c, err := Capture(a, &buf)
	require.NoError(t, err)
	headerOnly := buf.Len()
	require.Equal(t, 24, headerOnly, "pcap file header is written at once")
	d := newCountingDispatcher()
	b.Attach(d)
	c.Attach(d)
	writeRawCap(t, c, 3)
	d.waitFor(t, 3, 2*time.Second)
	require.Equal(t, headerOnly, buf.Len(), "packets are buffered until flushed")
	c.Close() // what stack.Close does: flush, then close the child
	b.Close()
	a.Wait()
	b.Wait()
	r, err := pcapgo.NewReader(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	k := 0
	for ; k < 10; k++ {
		if _, _, err := r.ReadPacketData(); err != nil {
			break
		}
	}
	require.Equal(t, 3, k)
	require.NoError(t, c.CloseCapture())
}

func writeRawCap(t *testing.T, c *CaptureEndpoint, n int) {
	t.Helper()
	l := rawPackets(n, 64)
	defer l.DecRef()
	m, err := c.WritePackets(l)
	require.Nil(t, err)
	require.Equal(t, n, m)
}
