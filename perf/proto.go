package perf

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// The control connection's states: one signed byte each, numbered as in
// iperf3 (iperf_api.h) since that is the wire format.
const (
	stateTestStart       int8 = 1
	stateTestRunning     int8 = 2
	stateTestEnd         int8 = 4
	stateParamExchange   int8 = 9
	stateCreateStreams   int8 = 10
	stateServerTerminate int8 = 12
	stateExchangeResults int8 = 13
	stateDisplayResults  int8 = 14
	stateClientTerminate int8 = 15
	stateIperfDone       int8 = 16
	stateAccessDenied    int8 = -1
	stateServerError     int8 = -2
)

// stateName names a state byte for error messages.
func stateName(s int8) string {
	switch s {
	case stateTestStart:
		return "TEST_START"
	case stateTestRunning:
		return "TEST_RUNNING"
	case stateTestEnd:
		return "TEST_END"
	case stateParamExchange:
		return "PARAM_EXCHANGE"
	case stateCreateStreams:
		return "CREATE_STREAMS"
	case stateServerTerminate:
		return "SERVER_TERMINATE"
	case stateExchangeResults:
		return "EXCHANGE_RESULTS"
	case stateDisplayResults:
		return "DISPLAY_RESULTS"
	case stateClientTerminate:
		return "CLIENT_TERMINATE"
	case stateIperfDone:
		return "IPERF_DONE"
	case stateAccessDenied:
		return "ACCESS_DENIED"
	case stateServerError:
		return "SERVER_ERROR"
	}
	return "state " + strconv.Itoa(int(s))
}

// iperf3's error numbers (i_errno) that travel in a SERVER_ERROR message:
// the ones this package sends, and a few an iperf3 server may send.
const (
	errDuration   int32 = 5
	errNumStreams int32 = 6
	errBlockSize  int32 = 7
	errOmit       int32 = 12
	errUnimp      int32 = 13
	errListen     int32 = 102
	errRecvParams int32 = 114
	errAuthTest   int32 = 142
)

var serverErrorText = map[int32]string{
	errDuration:   "test duration too long",
	errNumStreams: "too many parallel streams",
	errBlockSize:  "block size too large",
	errOmit:       "bogus --omit value",
	errUnimp:      "the server does not implement an option of this test",
	errListen:     "the server could not listen for data streams",
	errRecvParams: "the server could not read the test parameters",
	errAuthTest:   "test authorization failed",
}

// ServerError is a SERVER_ERROR message from the server: iperf3's error
// number and the system errno behind it (0 if none).
type ServerError struct {
	Code, Errno int32
}

func (e *ServerError) Error() string {
	msg, ok := serverErrorText[e.Code]
	if !ok {
		msg = "iperf3 error " + strconv.Itoa(int(e.Code))
	}
	if e.Errno != 0 {
		msg += fmt.Sprintf(" (errno %d)", e.Errno)
	}
	return "server error: " + msg
}

// ErrBusy is what a client gets when the server is running another test
// (ACCESS_DENIED).
var ErrBusy = errors.New("the server is busy running a test; try again later")

// Protocol limits, iperf3's (iperf.h), checked on what a peer asks for.
const (
	maxStreams   = 128
	maxBlockSize = 1 << 20
	maxTime      = 86400 // seconds
)

// DefaultBlockSize is the length of each read and write (iperf3's TCP
// default).
const DefaultBlockSize = 128 << 10

// DefaultPort is iperf3's port.
const DefaultPort = 5201

// cookieSize is the length of the test cookie on the wire: 36 characters
// and a NUL, as a C string.
const cookieSize = 37

// cookieChars are the characters of a cookie (iperf3 uses these 32).
const cookieChars = "abcdefghijklmnopqrstuvwxyz234567"

// newCookie returns a fresh random cookie in its wire form.
func newCookie() ([cookieSize]byte, error) {
	var c [cookieSize]byte
	if _, err := rand.Read(c[:cookieSize-1]); err != nil {
		return c, err
	}
	for i := range cookieSize - 1 {
		c[i] = cookieChars[int(c[i])%len(cookieChars)]
	}
	return c, nil
}

// cookieString is the printable part of a cookie: up to the first NUL,
// non-printable bytes escaped (a peer's cookie is untrusted).
func cookieString(c []byte) string {
	if i := bytes.IndexByte(c, 0); i >= 0 {
		c = c[:i]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, string(c))
}

// maxMessage bounds one JSON message. iperf3 sets no limit; its biggest
// messages are results with the server's whole JSON output inside
// (--get-server-output), well below this.
const maxMessage = 16 << 20

// writeMessage sends v as iperf3 frames JSON: a 4-byte big-endian length,
// then the JSON text (no terminating NUL).
func writeMessage(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	msg := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(msg, uint32(len(body)))
	_, err = w.Write(append(msg, body...))
	return err
}

// readMessage reads one length-prefixed JSON message of at most limit
// bytes. The buffer grows with what actually arrives, so a peer cannot
// make us allocate limit bytes by announcing them.
func readMessage(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading message length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("message of %d bytes exceeds the limit of %d", n, limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(n, 64<<10)))
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading %d-byte message: %w", n, err)
	}
	return buf.Bytes(), nil
}

// Params are a test's parameters as the client sends them (iperf3's
// parameters JSON). Durations travel in whole seconds.
type Params struct {
	Duration  time.Duration // "time"; 0 when the test ends by bytes or blocks
	Bytes     int64         // "num": bytes to send in all (0: by time)
	Blocks    int64         // "blockcount": blocks to send in all (0: not by blocks)
	Omit      time.Duration // "omit": leading period left out of the results
	Parallel  int           // "parallel": data streams
	Reverse   bool          // "reverse": the server sends
	BlockSize int           // "len": bytes per read/write
	Bitrate   int64         // "bandwidth": bits/s per stream, 0 unlimited
	Version   string        // "client_version"

	// Unsupported names what the client asked for that this package does
	// not do ("udp", "sctp", "bidirectional", ...); empty if nothing.
	Unsupported []string
}

// wireParams is the JSON the client sends. Booleans are only present
// when true: iperf3 tests for presence.
type wireParams struct {
	TCP        bool   `json:"tcp"`
	Omit       int64  `json:"omit"`
	Time       int64  `json:"time"`
	Num        int64  `json:"num"`
	Blockcount int64  `json:"blockcount"`
	Parallel   int    `json:"parallel"`
	Reverse    bool   `json:"reverse,omitempty"`
	Len        int    `json:"len"`
	Bandwidth  int64  `json:"bandwidth,omitempty"`
	Version    string `json:"client_version"`
}

// wire returns p as the client sends it; durations round up to whole
// seconds (the server only uses "time" for its watchdog).
func (p Params) wire() wireParams {
	secs := func(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }
	return wireParams{TCP: true, Omit: secs(p.Omit), Time: secs(p.Duration), Num: p.Bytes, Blockcount: p.Blocks,
		Parallel: p.Parallel, Reverse: p.Reverse, Len: p.BlockSize, Bandwidth: p.Bitrate, Version: p.Version}
}

// DecodeParams parses a client's parameters message, filling defaults
// (1 stream, DefaultBlockSize) for what is absent. It fails on malformed
// JSON or a field of the wrong type; the values' ranges are checked by
// Params.Check.
func DecodeParams(data []byte) (Params, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return Params{}, fmt.Errorf("parameters: %w", err)
	}
	if m == nil {
		return Params{}, errors.New("parameters: not a JSON object")
	}
	p := Params{Parallel: 1, BlockSize: DefaultBlockSize}
	var err error
	num := func(key string) int64 {
		raw, ok := m[key]
		if !ok || err != nil {
			return 0
		}
		var v int64
		v, err = jsonInt(raw)
		if err != nil {
			err = fmt.Errorf("parameters: %q: %w", key, err)
		}
		return v
	}
	if _, ok := m["time"]; ok {
		p.Duration = seconds(num("time"))
	}
	p.Bytes = num("num")
	p.Blocks = num("blockcount")
	p.Omit = seconds(num("omit"))
	if _, ok := m["parallel"]; ok {
		p.Parallel = int(clamp(num("parallel")))
	}
	if v := num("len"); v != 0 {
		p.BlockSize = int(clamp(v))
	}
	p.Bitrate = num("bandwidth")
	if raw, ok := m["client_version"]; ok && err == nil {
		if uerr := json.Unmarshal(raw, &p.Version); uerr != nil {
			err = fmt.Errorf("parameters: %q: %w", "client_version", uerr)
		}
	}
	if err != nil {
		return Params{}, err
	}
	p.Reverse = truthy(m["reverse"])
	// Options that only tune sockets (MSS, window, nodelay, congestion,
	// TOS, zerocopy) are ignored, as gVisor endpoints behind a net.Conn
	// cannot be tuned that way; what changes the test itself is refused.
	for _, k := range []string{"udp", "sctp", "bidirectional"} {
		if truthy(m[k]) {
			p.Unsupported = append(p.Unsupported, k)
		}
	}
	return p, nil
}

// Check returns the SERVER_ERROR code for parameters out of iperf3's
// limits or unsupported here (0 if they are fine).
func (p Params) Check() int32 {
	switch {
	case len(p.Unsupported) > 0:
		return errUnimp
	case p.Duration < 0 || p.Duration > maxTime*time.Second:
		return errDuration
	case p.Omit < 0 || p.Omit > maxTime*time.Second:
		return errOmit
	case p.Parallel < 1 || p.Parallel > maxStreams:
		return errNumStreams
	case p.BlockSize < 1 || p.BlockSize > maxBlockSize:
		return errBlockSize
	case p.Bytes < 0 || p.Blocks < 0 || p.Bitrate < 0:
		return errRecvParams
	}
	return 0
}

// budget is how many bytes the sender sends in all (0: until told to
// stop): -n, or -k blocks of BlockSize.
func (p Params) budget() int64 {
	switch {
	case p.Bytes > 0:
		return p.Bytes
	case p.Blocks > 0:
		if p.Blocks > math.MaxInt64/int64(max(p.BlockSize, 1)) {
			return math.MaxInt64
		}
		return p.Blocks * int64(p.BlockSize)
	}
	return 0
}

func seconds(s int64) time.Duration {
	if s > math.MaxInt64/int64(time.Second) || s < math.MinInt64/int64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s) * time.Second
}

// clamp keeps an int64 within int32, so that conversions to int cannot
// wrap on any platform (values that large fail Check anyway).
func clamp(v int64) int64 { return min(max(v, math.MinInt32), math.MaxInt32) }

// jsonInt reads a JSON number as an integer, truncating a fraction as
// iperf3's C code does. cJSON may print large integers as 1e+10.
func jsonInt(raw json.RawMessage) (int64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, err
	}
	switch {
	case math.IsNaN(f) || f >= math.MaxInt64 || f <= math.MinInt64:
		return 0, fmt.Errorf("%s is out of range", raw)
	}
	return int64(f), nil
}

// truthy reports whether a flag field is set: iperf3 sends flags as true
// (or 1) and tests for presence; false, 0 and null count as absent here.
func truthy(raw json.RawMessage) bool {
	if raw == nil {
		return false
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return true // present but odd: iperf3 would take it as set
	}
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0
	}
	return true
}

// wireResults is one side's results message.
type wireResults struct {
	CPUTotal             float64      `json:"cpu_util_total"`
	CPUUser              float64      `json:"cpu_util_user"`
	CPUSystem            float64      `json:"cpu_util_system"`
	SenderHasRetransmits int          `json:"sender_has_retransmits"`
	Streams              []wireStream `json:"streams"`
}

// wireStream is one stream in a results message.
type wireStream struct {
	ID             int     `json:"id"`
	Bytes          int64   `json:"bytes"`
	Retransmits    int64   `json:"retransmits"`
	Jitter         float64 `json:"jitter"`
	Errors         int64   `json:"errors"`
	OmittedErrors  int64   `json:"omitted_errors"`
	Packets        int64   `json:"packets"`
	OmittedPackets int64   `json:"omitted_packets"`
	StartTime      float64 `json:"start_time"`
	EndTime        float64 `json:"end_time"`
}

// PeerResults are the other side's results as it reported them.
type PeerResults struct {
	CPU     CPU
	Streams []PeerStream
}

// PeerStream is one stream in the peer's results: what the peer sent (if
// it was the sender) or received, over how long.
type PeerStream struct {
	ID          int
	Bytes       int64
	Retransmits int64 // -1: not known
	Elapsed     time.Duration
}

// DecodeResults parses a results message. As iperf3 does, it requires
// the CPU figures, sender_has_retransmits and, per stream, id, bytes,
// retransmits, jitter, errors and packets; start_time and end_time are
// optional (pre-3.2 peers).
func DecodeResults(data []byte) (PeerResults, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return PeerResults{}, fmt.Errorf("results: %w", err)
	}
	var r PeerResults
	for _, f := range []struct {
		key string
		dst *float64
	}{{"cpu_util_total", &r.CPU.Total}, {"cpu_util_user", &r.CPU.User}, {"cpu_util_system", &r.CPU.System}, {"sender_has_retransmits", new(float64)}} {
		raw, ok := m[f.key]
		if !ok {
			return PeerResults{}, fmt.Errorf("results: no %q", f.key)
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return PeerResults{}, fmt.Errorf("results: %q: %w", f.key, err)
		}
	}
	raw, ok := m["streams"]
	if !ok {
		return PeerResults{}, errors.New(`results: no "streams"`)
	}
	var streams []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &streams); err != nil {
		return PeerResults{}, fmt.Errorf("results: streams: %w", err)
	}
	for i, s := range streams {
		// Only id and bytes matter here, and must be sane; the others
		// must be numbers, as iperf3 checks, of any value: iperf3 3.12
		// sends an unknown retransmission count (-1) as 2^64-1.
		var v [6]float64
		for j, key := range []string{"id", "bytes", "retransmits", "jitter", "errors", "packets"} {
			raw, ok := s[key]
			if !ok {
				return PeerResults{}, fmt.Errorf("results: stream %d: no %q", i, key)
			}
			if err := json.Unmarshal(raw, &v[j]); err != nil {
				return PeerResults{}, fmt.Errorf("results: stream %d: %q: %w", i, key, err)
			}
		}
		if v[0] < 0 || v[0] > maxStreams+2 || v[1] < 0 || v[1] >= math.MaxInt64 {
			return PeerResults{}, fmt.Errorf("results: stream %d: implausible id %v or bytes %v", i, v[0], v[1])
		}
		ps := PeerStream{ID: int(v[0]), Bytes: int64(v[1]), Retransmits: -1}
		if v[2] >= 0 && v[2] < math.MaxInt32 {
			ps.Retransmits = int64(v[2])
		}
		var start, end float64
		rs, okS := s["start_time"]
		re, okE := s["end_time"]
		if okS && okE && json.Unmarshal(rs, &start) == nil && json.Unmarshal(re, &end) == nil {
			if d := end - start; d > 0 && d < maxTime*10 {
				ps.Elapsed = time.Duration(math.Round(d * float64(time.Second)))
			}
		}
		r.Streams = append(r.Streams, ps)
	}
	return r, nil
}

// ParseSize parses a byte count as iperf3 writes them: a number with an
// optional K, M, G or T suffix (either case), each 1024 times the last:
// "131072", "128K", "1.5G".
func ParseSize(s string) (int64, error) {
	return parseUnits(s, 1024)
}

// ParseRate parses a bit rate as iperf3 writes them: a number with an
// optional K, M, G or T suffix, each 1000 times the last: "100M".
func ParseRate(s string) (int64, error) {
	return parseUnits(s, 1000)
}

func parseUnits(s string, base float64) (int64, error) {
	num, mult := s, 1.0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = base
		case 'm', 'M':
			mult = base * base
		case 'g', 'G':
			mult = base * base * base
		case 't', 'T':
			mult = base * base * base * base
		}
		if mult != 1 {
			num = s[:n-1]
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || strings.ContainsAny(num, "xXpPnN_") { // no hex, inf or nan spellings
		return 0, fmt.Errorf("bad number %q (want e.g. 100, 128K, 20M, 1.5G)", s)
	}
	v := f * mult
	if v < 0 || v >= math.MaxInt64 {
		return 0, fmt.Errorf("number %q out of range", s)
	}
	return int64(v), nil
}
