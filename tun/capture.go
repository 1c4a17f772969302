package tun

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// captureSnaplen is the pcap snapshot length; longer packets are truncated.
const captureSnaplen = 262144

// CaptureEndpoint is a stack.LinkEndpoint that writes every packet passing
// through its child, in and out, to a pcap stream (nanosecond timestamps;
// link type RAW (101) for IP links, EN10MB for Ethernet links).
type CaptureEndpoint struct {
	nested.Endpoint

	mu      sync.Mutex
	bw      *bufio.Writer
	pw      *pcapgo.Writer
	scratch []byte
	packets uint64
	err     error // first write error
	stopped bool
}

var _ stack.LinkEndpoint = (*CaptureEndpoint)(nil)
var _ stack.NetworkDispatcher = (*CaptureEndpoint)(nil)

// Capture wraps ep so that every packet in and out is written to w as pcap.
// It writes the file header at once. The caller owns w; CloseCapture (or
// Close, which stack.Close calls) flushes, but does not close w.
func Capture(ep stack.LinkEndpoint, w io.Writer) (*CaptureEndpoint, error) {
	if ep == nil || w == nil {
		return nil, errors.New("tun: Capture needs an endpoint and a writer")
	}
	lt := layers.LinkTypeRaw
	switch ep.ARPHardwareType() {
	case header.ARPHardwareNone:
	case header.ARPHardwareEther:
		lt = layers.LinkTypeEthernet
	default:
		return nil, fmt.Errorf("tun: Capture: unsupported ARP hardware type %d", ep.ARPHardwareType())
	}
	c := &CaptureEndpoint{bw: bufio.NewWriterSize(w, 64<<10)}
	c.pw = pcapgo.NewWriterNanos(c.bw)
	if err := c.pw.WriteFileHeader(captureSnaplen, lt); err != nil {
		return nil, fmt.Errorf("tun: pcap header: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, fmt.Errorf("tun: pcap header: %w", err)
	}
	c.Endpoint.Init(ep, c)
	return c, nil
}

func (c *CaptureEndpoint) record(pkt *stack.PacketBuffer) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.err != nil {
		return
	}
	b := c.scratch[:0]
	for _, s := range pkt.AsSlices() {
		b = append(b, s...)
	}
	c.scratch = b
	capLen := min(len(b), captureSnaplen)
	ci := gopacket.CaptureInfo{Timestamp: now, CaptureLength: capLen, Length: len(b)}
	if err := c.pw.WritePacket(ci, b[:capLen]); err != nil {
		c.err = fmt.Errorf("tun: pcap write: %w", err)
		return
	}
	c.packets++
}

// DeliverNetworkPacket implements stack.NetworkDispatcher (inbound path).
func (c *CaptureEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.record(pkt)
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkEndpoint (outbound path).
func (c *CaptureEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		c.record(pkt)
	}
	return c.Endpoint.WritePackets(pkts)
}

// Packets returns the number of packets written to the pcap so far.
func (c *CaptureEndpoint) Packets() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets
}

// Flush writes buffered packets to the underlying writer and returns the
// first write error, if any.
func (c *CaptureEndpoint) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *CaptureEndpoint) flushLocked() error {
	if c.err == nil {
		if err := c.bw.Flush(); err != nil {
			c.err = fmt.Errorf("tun: pcap flush: %w", err)
		}
	}
	return c.err
}

// CloseCapture stops capturing and flushes; packets keep flowing through the
// child endpoint. It returns the first write error. Idempotent.
func (c *CaptureEndpoint) CloseCapture() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.err
	}
	c.stopped = true
	return c.flushLocked()
}

// Close implements stack.LinkEndpoint: it stops capturing, flushes, and
// closes the child endpoint. Use CloseCapture to get the write error.
func (c *CaptureEndpoint) Close() {
	_ = c.CloseCapture()
	c.Endpoint.Close()
}
