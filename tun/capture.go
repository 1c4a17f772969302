package tun

import (
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket/layers"
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
	f    *PcapFile
	owns bool // Close ends the pcap stream too (Capture, not PcapFile.Wrap)
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
	f, err := newPcapFile(w, lt)
	if err != nil {
		return nil, err
	}
	if err := f.Flush(); err != nil {
		return nil, err
	}
	return f.wrap(ep, true), nil
}

// DeliverNetworkPacket implements stack.NetworkDispatcher (inbound path).
func (c *CaptureEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.f.record(pkt)
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkEndpoint (outbound path).
func (c *CaptureEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		c.f.record(pkt)
	}
	return c.Endpoint.WritePackets(pkts)
}

// Packets returns the number of packets written to the pcap so far (by
// every endpoint sharing its PcapFile).
func (c *CaptureEndpoint) Packets() uint64 { return c.f.Packets() }

// Flush writes buffered packets to the underlying writer and returns the
// first write error, if any.
func (c *CaptureEndpoint) Flush() error { return c.f.Flush() }

// CloseCapture stops capturing and flushes; packets keep flowing through the
// child endpoint. It returns the first write error. Idempotent.
func (c *CaptureEndpoint) CloseCapture() error { return c.f.Close() }

// Close implements stack.LinkEndpoint: it closes the child endpoint and,
// for an endpoint made by Capture, stops capturing and flushes. Use
// CloseCapture to get the write error.
func (c *CaptureEndpoint) Close() {
	if c.owns {
		_ = c.CloseCapture()
	}
	c.Endpoint.Close()
}
