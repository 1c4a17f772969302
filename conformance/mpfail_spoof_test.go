package conformance

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// mpFailSpoofer forges, once, an MP_FAIL on a pure ACK right after the
// first segment of the kernel's data past 1 MiB that reaches our stack:
// in the window, so TCP accepts it (an on-path attacker).
type mpFailSpoofer struct {
	nested.Endpoint
	seen  atomic.Int64
	fired atomic.Bool
}

func (s *mpFailSpoofer) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if proto != header.IPv4ProtocolNumber || s.fired.Load() {
		s.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	raw := pkt.Data().AsRange().ToSlice()
	ip := header.IPv4(raw)
	if ip.Protocol() != uint8(header.TCPProtocolNumber) {
		s.Endpoint.DeliverNetworkPacket(proto, pkt)
		return
	}
	tcp := header.TCP(raw[ip.HeaderLength():])
	n := len(tcp) - int(tcp.DataOffset())
	s.Endpoint.DeliverNetworkPacket(proto, pkt)
	if n == 0 || s.seen.Add(int64(n)) < 1<<20 || !s.fired.CompareAndSwap(false, true) {
		return
	}
	f := option.MPFail{DSN: 1}
	opts := f.Append(nil)
	tcpLen := header.TCPMinimumSize + len(opts)
	buf := make([]byte, header.IPv4MinimumSize+tcpLen)
	nip := header.IPv4(buf)
	nip.Encode(&header.IPv4Fields{TotalLength: uint16(len(buf)), ID: ip.ID() + 1, TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: ip.SourceAddress(), DstAddr: ip.DestinationAddress()})
	nip.SetChecksum(^nip.CalculateChecksum())
	th := header.TCP(buf[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{SrcPort: tcp.SourcePort(), DstPort: tcp.DestinationPort(), SeqNum: tcp.SequenceNumber() + uint32(n),
		AckNum: tcp.AckNumber(), DataOffset: uint8(tcpLen), Flags: header.TCPFlagAck, WindowSize: tcp.WindowSize()})
	copy(th[header.TCPMinimumSize:], opts)
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	th.SetChecksum(^checksum.Checksum(th, pseudo))
	np := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(buf)})
	s.Endpoint.DeliverNetworkPacket(proto, np)
	np.DecRef()
}

// TestUmptcpKernelSpoofedMPFail: a kernel client uploads to our server on
// one subflow without checksums, and an MP_FAIL forged in the window
// reaches our server. Without checksums no peer sends MP_FAIL, so we do
// not answer it and the upload completes intact. Before the fix we
// answered and fell back, the kernel fell back with an infinite mapping
// on segments sized for plain TCP, 28 bytes over the MTU (IpFragFails),
// and the upload stalled for good.
func TestUmptcpKernelSpoofedMPFail(t *testing.T) {
	var sp *mpFailSpoofer
	u := newUmptcpRigWrapped(t, tunFamilies[0], RigOptions{}, stack.Config{}, func(ep gvstack.LinkEndpoint) gvstack.LinkEndpoint {
		sp = &mpFailSpoofer{}
		sp.Endpoint.Init(ep, sp)
		return sp
	})
	before := u.Nstat()
	ours, kernel := u.connect(t, false)
	requireOursMPTCP(t, ours, kernel, false)
	const size = 24 << 20
	sent, err := io.ReadAll(Stream(31, size))
	require.NoError(t, err)
	kw := make(chan error, 1)
	go func() {
		kernel.SetWriteDeadline(time.Now().Add(40 * time.Second))
		_, err := kernel.Write(sent)
		if err == nil {
			if hc, ok := kernel.(interface{ CloseWrite() error }); ok {
				err = hc.CloseWrite()
			}
		}
		kw <- err
	}()
	ours.SetReadDeadline(time.Now().Add(40 * time.Second))
	got, rerr := io.ReadAll(ours)
	kerr := <-kw
	t.Logf("read %d of %d bytes, then %v; kernel write: %v; kernel: %v; ours: %+v", len(got), size, rerr, kerr,
		NonZero(u.Nstat().Diff(before)), ours.SubflowCounters())
	require.True(t, sp.fired.Load())
	require.True(t, bytes.Equal(sent[:len(got)], got), "only the kernel's bytes, in order")
	var ne interface{ Timeout() bool }
	require.False(t, errors.As(rerr, &ne) && ne.Timeout(), "the upload stalled")
	if rerr != nil {
		require.Error(t, kerr, "an error on our side only with one on the kernel's")
		return
	}
	require.Equal(t, size, len(got), "a clean EOF only after every byte")
	require.NoError(t, kerr)
	ours.Close()
	kernel.Close()
}
