package conformance

import (
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// ssSample is real `ss -Mni` output (iproute2 6.1, Linux 6.18) with one
// connection seen from its server end, plus a listener from `ss -Mnia` and
// hand-made lines for fields this ss version omits when zero.
const ssSample = `State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process
ESTAB  0      0          10.79.0.1:5000    10.79.0.2:46578
	 subflows_max:2 remote_key token:f7b34e12 write_seq:8bc0053fb6d12566 snd_una:8bc0053fb6d12566 rcv_nxt:c98d3c75006c267f
LISTEN 0      4096       10.79.0.1:5000      0.0.0.0:*    
	                                                                                                                      
ESTAB  0      12         [fd77::1]:443    [fd77::2]:40000
	 subflows:1 add_addr_signal:2 add_addr_accepted:1 subflows_max:8 fallback token:0000beef
`

func TestParseSSMptcp(t *testing.T) {
	e, err := ParseSSMptcp([]byte(ssSample))
	require.NoError(t, err)
	require.Len(t, e, 3)

	require.Equal(t, "ESTAB", e[0].State)
	require.Equal(t, netip.MustParseAddrPort("10.79.0.1:5000"), e[0].LocalAddr)
	require.Equal(t, netip.MustParseAddrPort("10.79.0.2:46578"), e[0].PeerAddr)
	require.Equal(t, 0, e[0].Subflows)
	require.Equal(t, 2, e[0].SubflowsMax)
	require.True(t, e[0].RemoteKey)
	require.False(t, e[0].Fallback)
	require.Equal(t, "f7b34e12", e[0].Token)
	require.Equal(t, "c98d3c75006c267f", e[0].Fields["rcv_nxt"])

	require.Equal(t, "LISTEN", e[1].State)
	require.False(t, e[1].PeerAddr.IsValid())
	require.Equal(t, 4096, e[1].SendQ)

	require.Equal(t, 12, e[2].SendQ)
	require.Equal(t, netip.MustParseAddrPort("[fd77::2]:40000"), e[2].PeerAddr)
	require.Equal(t, 1, e[2].Subflows)
	require.Equal(t, 2, e[2].AddAddrSignal)
	require.Equal(t, 1, e[2].AddAddrAccepted)
	require.True(t, e[2].Fallback)
	require.False(t, e[2].RemoteKey)

	got, ok := FindSS(e, netip.AddrPort{}, netip.MustParseAddrPort("10.79.0.2:46578"))
	require.True(t, ok)
	require.Equal(t, "f7b34e12", got.Token)
	_, ok = FindSS(e, netip.MustParseAddrPort("10.79.0.9:1"), netip.AddrPort{})
	require.False(t, ok)
}

func TestParseSSAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:80":         "10.0.0.1:80",
		"[fd77::1]:443":       "[fd77::1]:443",
		"10.0.0.1%eth0:80":    "10.0.0.1:80",
		"[fe80::1%eth0]:80":   "[fe80::1%eth0]:80",
		"*:5000":              "invalid AddrPort",
		"0.0.0.0:*":           "invalid AddrPort",
		"[::ffff:10.0.0.1]:1": "[::ffff:10.0.0.1]:1",
	} {
		require.Equal(t, want, parseSSAddr(in).String(), in)
	}
}

func TestParseNstatJSON(t *testing.T) {
	c, err := parseNstatJSON([]byte(`{"kernel":{"TcpOutRsts":3,"MPTcpExtMPCapableSYNRX":18446744073709551615}}`))
	require.NoError(t, err)
	require.EqualValues(t, 3, c["TcpOutRsts"])
	require.Positive(t, c["MPTcpExtMPCapableSYNRX"])

	d := Counters{"A": 5, "B": 2, "C": 1}.Diff(Counters{"A": 2, "B": 2})
	require.Equal(t, map[string]int64{"A": 3, "B": 0, "C": 1}, d)
	require.Equal(t, []string{"A=3", "C=1"}, NonZero(d))

	_, err = parseNstatJSON([]byte(`{}`))
	require.Error(t, err)
}

func TestStreamDeterministic(t *testing.T) {
	a, err := io.ReadAll(Stream(7, 100_000))
	require.NoError(t, err)
	b, err := io.ReadAll(Stream(7, 100_000))
	require.NoError(t, err)
	c, err := io.ReadAll(Stream(8, 100_000))
	require.NoError(t, err)
	require.Len(t, a, 100_000)
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)

	var buf bytes.Buffer
	sent, err := Send(&buf, 7, 100_000)
	require.NoError(t, err)
	got, err := Receive(&buf)
	require.NoError(t, err)
	require.Equal(t, sent, got)
	require.NoError(t, compare("x", sent, got, 100_000))
	require.Error(t, compare("x", sent, Result{N: sent.N}, 100_000))
}

func TestBusySockets(t *testing.T) {
	out := "tcp   LISTEN 0 128 127.0.0.1:5001 0.0.0.0:*\n" +
		"tcp   TIME-WAIT 0 0 127.0.0.1:5001 127.0.0.1:4\n" +
		"mptcp ESTAB 0 0 127.0.0.1:5001 127.0.0.1:57834\n"
	require.Equal(t, []string{"mptcp ESTAB 0 0 127.0.0.1:5001 127.0.0.1:57834"}, busySockets(out))
}
