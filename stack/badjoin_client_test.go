package stack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umptcp/umptcp/option"
	"github.com/umptcp/umptcp/stack"
	"github.com/umptcp/umptcp/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// Our client's join meets a SYN-ACK whose MP_JOIN HMAC is wrong (or that
// has no MP_JOIN at all): the client resets that subflow with MP_TCPRST
// "MPTCP-specific error", never uses it, and the connection carries on.
func TestBadJoinClientSideSynAck(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(j option.MPJoin) []byte
	}{
		{"wrong-hmac", func(j option.MPJoin) []byte {
			sa := option.MPJoin{Form: option.JoinSynAck, AddrID: 0, TruncHMAC: 0x0123456789abcdef, Nonce: 42}
			return sa.Append(mssOption(nil))
		}},
		{"no-mp-join", func(option.MPJoin) []byte { return mssOption(nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Link 0 goes to a real server; link 1 to the test, which
			// plays the server's side of the join.
			a, b := tun.NewPipe(tun.LinkParams{}, tun.LinkParams{})
			ch := channel.New(4096, 1500, "")
			t.Cleanup(ch.Close)
			client, err := stack.New(stack.Config{Links: []stack.Link{
				{Endpoint: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}},
				{Endpoint: ch, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.1.1/24")}},
			}})
			require.NoError(t, err)
			server, err := stack.New(stack.Config{Links: []stack.Link{{Endpoint: b, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
			require.NoError(t, err)
			t.Cleanup(func() { client.Close(); server.Close() })
			c1, c2 := dialAccept(t, client, server, "10.9.0.2")

			raw := &rawPeer{t: t, ep: ch, id: 1}
			s, ok := raw.read(5 * time.Second)
			require.True(t, ok, "the client sent no join SYN on link 1")
			t.Logf("client sent: %s", s)
			require.Equal(t, header.TCPFlagSyn, s.flags, "%s", s)
			require.True(t, s.set.Has(option.SubtypeMPJoin), "%s", s)
			require.Equal(t, option.JoinSyn, s.set.MPJoin.Form, "%s", s)
			require.Equal(t, netip.MustParseAddr("10.9.1.1"), s.src.Addr())
			require.Equal(t, netip.MustParseAddrPort("10.9.0.2:5001"), s.dst, "joins go to the initial subflow's server address")

			f := &rawFlow{local: s.dst, remote: s.src, iss: 0x30000000}
			raw.send(f, f.iss, s.seq+1, header.TCPFlagSyn|header.TCPFlagAck, tc.opts(s.set.MPJoin), nil)
			rst := raw.mustExpect(f, "RST")
			requireRST(t, rst, header.TCPFlagRst, s.seq+1, 0, option.ReasonMPTCPError)

			time.Sleep(200 * time.Millisecond)
			st := c1.Stats()
			require.Len(t, st.Subflows, 1, "the failed join must not become a subflow: %+v", st.Subflows)
			exchange(t, c1, c2, 4<<20)
		})
	}
}
