package option

import (
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// kernelVector is one file of testdata/kernel, written by
// internal/vectorcapture from packets a real Linux kernel sent.
type kernelVector struct {
	name string
	meta map[string]string
	opts []byte // the whole TCP option area
}

func loadKernelVectors(t testing.TB) []kernelVector {
	t.Helper()
	files, err := filepath.Glob("testdata/kernel/*.hex")
	require.NoError(t, err)
	require.NotEmpty(t, files, "run: sudo go run ./internal/vectorcapture")
	var vs []kernelVector
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		v := kernelVector{name: strings.TrimSuffix(filepath.Base(f), ".hex"), meta: map[string]string{}}
		for _, line := range strings.Split(string(raw), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case line == "":
			case strings.HasPrefix(line, "#"):
				k, val, ok := strings.Cut(strings.TrimSpace(line[1:]), ": ")
				if ok {
					v.meta[k] = val
				}
			default:
				v.opts, err = hex.DecodeString(line)
				require.NoError(t, err, f)
			}
		}
		vs = append(vs, v)
	}
	return vs
}

// mptcpOptions splits the MPTCP options out of a TCP option area.
func mptcpOptions(opts []byte) [][]byte {
	var out [][]byte
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return out
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return out
		}
		if opts[i] == Kind {
			out = append(out, opts[i:i+int(opts[i+1])])
		}
		i += int(opts[i+1])
	}
	return out
}

func (v kernelVector) hex64(t *testing.T, k string) uint64 {
	t.Helper()
	s, ok := v.meta[k]
	require.True(t, ok, "%s: no %q", v.name, k)
	n, err := strconv.ParseUint(s, 16, 64)
	require.NoError(t, err)
	return n
}

func (v kernelVector) dec(t *testing.T, k string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(v.meta[k], 10, 32)
	require.NoError(t, err, "%s: %q", v.name, k)
	return uint32(n)
}

func (v kernelVector) payload(t *testing.T) []byte {
	b, err := hex.DecodeString(v.meta["payload"])
	require.NoError(t, err)
	return b
}

func (v kernelVector) csum() bool { return strings.HasSuffix(v.name, "-csum") }

func payloadSum(b []byte) uint16 {
	var s Sum
	s.Add(b)
	return s.Value()
}

// Our payloads in vectorcapture are 45 bytes long, at DSN IDSN(our-key)+1.
const ourPayloadLen = 45

func TestKernelVectors(t *testing.T) {
	vs := loadKernelVectors(t)
	seen := map[string]bool{}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			var s Set
			require.NoError(t, ParseTCPOptions(v.opts, &s))
			require.NotZero(t, s.Present)

			// Everything Linux sends is in canonical form: re-encoding
			// each option gives the same bytes.
			for _, o := range mptcpOptions(v.opts) {
				var one Set
				require.NoError(t, one.parseOne(o))
				require.Equal(t, o, appendSubtype(&one, Subtype(o[2]>>4)), "re-encoding %x", o)
			}

			ourKey := v.hex64(t, "our-key")
			var kernKey uint64
			if _, ok := v.meta["kernel-key"]; ok {
				kernKey = v.hex64(t, "kernel-key")
				if _, ok := v.meta["kernel-token-mptcp-info"]; ok {
					require.Equal(t, uint32(v.hex64(t, "kernel-token-mptcp-info")), Token(kernKey),
						"Token(kernel key) must be what the kernel reports in MPTCP_INFO")
				}
				require.Equal(t, v.hex64(t, "kernel-idsn"), IDSN(kernKey))
			}
			kind := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(v.name, "active6-"), "active-"), "-csum")
			kind = strings.TrimPrefix(kind, "passive-")
			seen[kind] = true
			mpc := s.MPCapable
			flags := uint8(FlagHMACSHA256)
			if v.csum() {
				flags |= FlagChecksum
			}

			switch kind {
			case "syn":
				require.True(t, s.Has(SubtypeMPCapable))
				require.Equal(t, MPCapable{Version: 1, Flags: flags, Form: MPCSyn}, mpc)
			case "synack":
				require.True(t, s.Has(SubtypeMPCapable))
				require.Equal(t, MPCapable{Version: 1, Flags: flags, Form: MPCSynAck, SenderKey: kernKey}, mpc)
			case "ack":
				require.Equal(t, MPCapable{Version: 1, Flags: flags, Form: MPCAck, SenderKey: kernKey, ReceiverKey: ourKey}, mpc)
			case "data":
				// Linux repeats MP_CAPABLE with the data-level length on
				// its first data until it receives a DSS (§3.1).
				p := v.payload(t)
				want := MPCapable{Version: 1, Flags: flags, Form: MPCAckData, SenderKey: kernKey, ReceiverKey: ourKey, DataLen: uint16(len(p))}
				if v.csum() {
					want.Form, want.Checksum = MPCAckDataCsum, mpc.Checksum
					require.True(t, VerifyDSSChecksum(IDSN(kernKey)+1, 1, uint16(len(p)), payloadSum(p), mpc.Checksum),
						"kernel MP_CAPABLE data checksum")
				}
				require.Equal(t, want, mpc)
			case "dss-ack":
				require.Equal(t, DSS{HasDataAck: true, DataAck64: true, DataAck: IDSN(ourKey) + 1 + ourPayloadLen}, s.DSS)
			case "dss-data":
				d, p := s.DSS, v.payload(t)
				require.True(t, d.HasMapping && d.DSN64 && d.HasDataAck && d.DataAck64)
				require.Equal(t, IDSN(ourKey)+1+ourPayloadLen, d.DataAck)
				require.Equal(t, uint16(len(p)), d.DataLen)
				require.Equal(t, v.dec(t, "tcp-seq")-v.dec(t, "kernel-isn"), d.SSN, "SSN is relative to the ISN")
				// One subflow carrying all data in order: data and
				// subflow offsets coincide.
				require.Equal(t, uint64(d.SSN), d.DSN-IDSN(kernKey))
				require.Equal(t, v.csum(), d.HasChecksum)
				if v.csum() {
					require.True(t, VerifyDSSChecksum(d.DSN, d.SSN, d.DataLen, payloadSum(p), d.Checksum), "kernel DSS checksum")
				}
			case "data-fin":
				d := s.DSS
				require.True(t, d.DataFin && d.HasMapping)
				// Linux sends a DATA_FIN-only mapping: length 1, SSN 0.
				require.Equal(t, uint16(1), d.DataLen)
				require.Equal(t, uint32(0), d.SSN)
				if v.csum() {
					require.True(t, VerifyDSSChecksum(d.DSN, d.SSN, d.DataLen, 0, d.Checksum), "kernel DATA_FIN checksum")
				}
			case "add-addr", "add-addr-port":
				a := s.AddAddr
				require.False(t, a.Echo)
				require.True(t, a.HasHMAC)
				require.Equal(t, kind == "add-addr-port", a.HasPort)
				require.Contains(t, []netip.Addr{netip.MustParseAddr("10.211.0.3"), netip.MustParseAddr("10.211.0.4"), netip.MustParseAddr("fd00:211::3")}, a.Addr)
				require.Equal(t, AddAddrHMAC(kernKey, ourKey, a.AddrID, a.Addr, a.Port), a.HMAC, "kernel ADD_ADDR HMAC")
			case "remove-addr":
				require.Equal(t, []uint8{5}, s.RemoveAddr.List())
			case "join-syn":
				require.Equal(t, JoinSyn, s.MPJoin.Form)
				require.Equal(t, Token(ourKey), s.MPJoin.Token, "join SYN carries the receiver's token")
				require.Equal(t, uint8(7), s.MPJoin.AddrID)
			case "join-ack":
				require.Equal(t, JoinAck, s.MPJoin.Form)
				mac := JoinHMAC(kernKey, ourKey, uint32(v.hex64(t, "kernel-join-nonce")), uint32(v.hex64(t, "our-join-nonce")))
				require.Equal(t, mac[:20], s.MPJoin.HMAC[:], "kernel MP_JOIN ACK HMAC")
			case "mp-prio":
				require.Equal(t, MPPrio{Backup: true}, s.MPPrio)
			case "fastclose":
				require.Equal(t, ourKey, s.MPFastclose.Key, "MP_FASTCLOSE carries the receiver's key")
				require.True(t, s.Has(SubtypeMPTCPRST))
			case "tcprst":
				require.True(t, s.Has(SubtypeMPTCPRST))
			case "mp-fail":
				require.Equal(t, v.hex64(t, "bad-mapping-dsn"), s.MPFail.DSN)
			default:
				t.Fatalf("no assertions for vector kind %q", kind)
			}
		})
	}
	for _, k := range []string{"syn", "synack", "ack", "data", "dss-ack", "dss-data"} {
		require.True(t, seen[k], "missing kernel vector kind %q", k)
	}
}

// appendSubtype re-encodes the sub-option of type st held in s.
func appendSubtype(s *Set, st Subtype) []byte {
	switch st {
	case SubtypeMPCapable:
		return s.MPCapable.Append(nil)
	case SubtypeMPJoin:
		return s.MPJoin.Append(nil)
	case SubtypeDSS:
		return s.DSS.Append(nil)
	case SubtypeAddAddr:
		return s.AddAddr.Append(nil)
	case SubtypeRemoveAddr:
		return s.RemoveAddr.Append(nil)
	case SubtypeMPPrio:
		return s.MPPrio.Append(nil)
	case SubtypeMPFail:
		return s.MPFail.Append(nil)
	case SubtypeMPFastclose:
		return s.MPFastclose.Append(nil)
	case SubtypeMPTCPRST:
		return s.TCPRST.Append(nil)
	}
	return nil
}
