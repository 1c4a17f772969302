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
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// PcapFile is one pcap stream (link type RAW: IPv4 and IPv6 packets) that
// the packets of several IP links are written to, e.g. every TUN path of a
// stack. Wrap each link; Close flushes.
type PcapFile struct {
	mu      sync.Mutex
	bw      *bufio.Writer
	pw      *pcapgo.Writer
	scratch []byte
	packets uint64
	err     error
	closed  bool
}

// NewPcapFile writes the pcap file header (link type RAW) to w.
func NewPcapFile(w io.Writer) (*PcapFile, error) {
	if w == nil {
		return nil, errors.New("tun: NewPcapFile needs a writer")
	}
	return newPcapFile(w, layers.LinkTypeRaw)
}

func newPcapFile(w io.Writer, lt layers.LinkType) (*PcapFile, error) {
	f := &PcapFile{bw: bufio.NewWriterSize(w, 64<<10)}
	f.pw = pcapgo.NewWriterNanos(f.bw)
	if err := f.pw.WriteFileHeader(captureSnaplen, lt); err != nil {
		return nil, fmt.Errorf("tun: pcap header: %w", err)
	}
	return f, nil
}

// Wrap returns ep with every packet in and out recorded to f. ep must carry
// raw IP packets (no link header). Closing the endpoint leaves f open.
func (f *PcapFile) Wrap(ep stack.LinkEndpoint) *CaptureEndpoint { return f.wrap(ep, false) }

func (f *PcapFile) wrap(ep stack.LinkEndpoint, owns bool) *CaptureEndpoint {
	c := &CaptureEndpoint{f: f, owns: owns}
	c.Endpoint.Init(ep, c)
	return c
}

// Flush writes buffered packets out; it returns the first write error.
func (f *PcapFile) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		if err := f.bw.Flush(); err != nil {
			f.err = fmt.Errorf("tun: pcap flush: %w", err)
		}
	}
	return f.err
}

// Packets returns how many packets were written.
func (f *PcapFile) Packets() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.packets
}

// Close stops recording and flushes; it returns the first write error. It
// does not close the underlying writer. Idempotent.
func (f *PcapFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		if f.err == nil {
			if err := f.bw.Flush(); err != nil {
				f.err = fmt.Errorf("tun: pcap flush: %w", err)
			}
		}
	}
	return f.err
}

func (f *PcapFile) record(pkt *stack.PacketBuffer) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.err != nil {
		return
	}
	b := f.scratch[:0]
	for _, s := range pkt.AsSlices() {
		b = append(b, s...)
	}
	f.scratch = b
	capLen := min(len(b), captureSnaplen)
	if err := f.pw.WritePacket(gopacket.CaptureInfo{Timestamp: now, CaptureLength: capLen, Length: len(b)}, b[:capLen]); err != nil {
		f.err = fmt.Errorf("tun: pcap write: %w", err)
		return
	}
	f.packets++
}
