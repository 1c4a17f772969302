package option

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// handVectors are hand-written encodings of every form (see the per-option
// tests); together with the kernel captures they seed every fuzz target.
var handVectors = []string{
	"1e040101", "1e040181", "1e0c010108e2aefdeb94d3c0", "1e140101d6a54fc07972f8980123456789abcdef",
	"1e160101d6a54fc07972f8980123456789abcdef0034", "1e180181d952613039f3da210123456789abcdef003480c9",
	"1e0c100755c53f5d5b6e7112", "1e10110301020304050607085eed1234", "1e18100016dfe3613e2490defd8246698d5f42ff05144c2a",
	"1e0c2003570762cd38be9846", "1e0820013be9846a", "1e0e200411223344000000010010", "1e10200411223344000000010010beef",
	"1e18200daabbccdd01020304050607080000000200030004", "1e042010",
	"1e1030050ad3000301de46860c7a9eb4", "1e1230060ad3000413920b4988dc8390fa2d", "1e0831050ad30003",
	"1e1c3008fd00021100000000000000000000000303c15130d5f49285", "1e163108fd0002110000000000000000000000030050",
	"1e044005", "1e0640010203", "1e0351", "1e045107", "1e0c6000570762cd38be9846", "1e0c70000123456789abcdef",
	"1e048000", "1e048101",
}

func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, s := range handVectors {
		b, err := hex.DecodeString(s)
		require.NoError(f, err)
		seeds = append(seeds, b)
	}
	for _, v := range loadKernelVectors(f) {
		seeds = append(seeds, mptcpOptions(v.opts)...)
	}
	return seeds
}

// fuzzParser checks the invariants of one parser: it never panics, never
// claims more bytes than it was given, and whatever it accepts re-encodes
// to the same length and re-parses to the same value.
func fuzzParser[T any, PT interface {
	*T
	encoder
}](f *testing.F, parse func([]byte) (T, int, error)) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := parse(b)
		if err != nil {
			// Only ErrBadVersion comes with a decoded option.
			if err != ErrBadVersion {
				require.Zero(t, n)
			}
			return
		}
		require.GreaterOrEqual(t, n, 3)
		require.LessOrEqual(t, n, len(b))
		require.Equal(t, int(b[1]), n)
		p := PT(&v)
		enc := p.Append(nil)
		require.Equal(t, len(enc), p.Len())
		require.Equal(t, n, len(enc), "canonical length")
		v2, n2, err := parse(enc)
		require.NoError(t, err)
		require.Equal(t, len(enc), n2)
		require.Equal(t, v, v2)
	})
}

func FuzzParseMPCapable(f *testing.F)   { fuzzParser(f, ParseMPCapable) }
func FuzzParseMPJoin(f *testing.F)      { fuzzParser(f, ParseMPJoin) }
func FuzzParseDSS(f *testing.F)         { fuzzParser(f, ParseDSS) }
func FuzzParseAddAddr(f *testing.F)     { fuzzParser(f, ParseAddAddr) }
func FuzzParseRemoveAddr(f *testing.F)  { fuzzParser(f, ParseRemoveAddr) }
func FuzzParseMPPrio(f *testing.F)      { fuzzParser(f, ParseMPPrio) }
func FuzzParseMPFail(f *testing.F)      { fuzzParser(f, ParseMPFail) }
func FuzzParseMPFastclose(f *testing.F) { fuzzParser(f, ParseMPFastclose) }
func FuzzParseTCPRST(f *testing.F)      { fuzzParser(f, ParseTCPRST) }

// FuzzParseTCPOptions: never panics; every sub-option it reports present
// re-encodes and re-parses to the same value.
func FuzzParseTCPOptions(f *testing.F) {
	for _, v := range loadKernelVectors(f) {
		f.Add(v.opts)
	}
	for _, s := range fuzzSeeds(f) {
		f.Add(append([]byte{1, 1}, s...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Set
		_ = ParseTCPOptions(b, &s)
		for st := SubtypeMPCapable; st <= SubtypeMPTCPRST; st++ {
			if !s.Has(st) {
				continue
			}
			enc := appendSubtype(&s, st)
			var again Set
			require.NoError(t, ParseTCPOptions(enc, &again))
			require.Equal(t, uint16(1)<<st, again.Present)
			require.Equal(t, enc, appendSubtype(&again, st))
		}
		require.Zero(t, s.Present&^0x1ff)
	})
}
