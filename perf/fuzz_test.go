package perf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"testing"
	"time"
)

// What iperf3 3.12 sends (captured with -d): the parameters of
// `iperf3 -c -t 1 -P 2 -R -O 1 -b 2G`, and results from both roles.
const (
	iperf3Params        = `{"tcp":true,"omit":1,"time":1,"num":0,"blockcount":0,"parallel":2,"reverse":true,"len":131072,"bandwidth":2000000000,"pacing_timer":1000,"client_version":"3.12"}`
	iperf3ResultsClient = `{"cpu_util_total":9.74443958309609,"cpu_util_user":0,"cpu_util_system":9.74443958309609,"sender_has_retransmits":18446744073709551615,"congestion_used":"bbr","streams":[{"id":1,"bytes":249954304,"retransmits":18446744073709551615,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":0.999977},{"id":3,"bytes":249954304,"retransmits":18446744073709551615,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":0.999989}]}`
	iperf3ResultsServer = `{"cpu_util_total":12.989105527798921,"cpu_util_user":12.989155504734565,"cpu_util_system":0,"sender_has_retransmits":1,"congestion_used":"bbr","streams":[{"id":1,"bytes":249954304,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":1.000735},{"id":3,"bytes":249954304,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":1.000742}]}`
)

func TestDecodeIperf3Messages(t *testing.T) {
	p, err := DecodeParams([]byte(iperf3Params))
	if err != nil {
		t.Fatal(err)
	}
	want := Params{Duration: time.Second, Omit: time.Second, Parallel: 2, Reverse: true, BlockSize: 131072, Bitrate: 2e9, Version: "3.12"}
	if p.Duration != want.Duration || p.Omit != want.Omit || p.Parallel != want.Parallel || !p.Reverse ||
		p.BlockSize != want.BlockSize || p.Bitrate != want.Bitrate || p.Version != want.Version || p.Check() != 0 {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	r, err := DecodeResults([]byte(iperf3ResultsClient))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Streams) != 2 || r.Streams[1].ID != 3 || r.Streams[1].Bytes != 249954304 || r.Streams[0].Retransmits != -1 ||
		r.Streams[1].Elapsed != 999989*time.Microsecond || r.CPU.System < 9.7 {
		t.Fatalf("client results: %+v", r)
	}
	r, err = DecodeResults([]byte(iperf3ResultsServer))
	if err != nil {
		t.Fatal(err)
	}
	if r.Streams[0].Retransmits != 0 || r.Streams[0].Elapsed != 1000735*time.Microsecond {
		t.Fatalf("server results: %+v", r)
	}
	for _, bad := range []string{`{}`, `{"cpu_util_total":1,"cpu_util_user":1,"cpu_util_system":1,"sender_has_retransmits":0}`,
		`{"cpu_util_total":1,"cpu_util_user":1,"cpu_util_system":1,"sender_has_retransmits":0,"streams":[{"id":1}]}`,
		`{"cpu_util_total":"x","cpu_util_user":1,"cpu_util_system":1,"sender_has_retransmits":0,"streams":[]}`} {
		if _, err := DecodeResults([]byte(bad)); err == nil {
			t.Errorf("DecodeResults(%s) succeeded", bad)
		}
	}
}

func frame(body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

// FuzzReadMessage: the length-prefixed JSON framing never panics, never
// returns more than the limit, and returns exactly the announced body.
func FuzzReadMessage(f *testing.F) {
	f.Add(frame(iperf3Params))
	f.Add(frame(iperf3ResultsClient))
	f.Add(frame(""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte{0, 0, 0, 10, '{', '}'})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		body, err := readMessage(bytes.NewReader(data), limit)
		if err != nil {
			return
		}
		n := binary.BigEndian.Uint32(data)
		if len(body) > limit || uint32(len(body)) != n || !bytes.Equal(body, data[4:4+n]) {
			t.Fatalf("read %d bytes for a %d-byte message", len(body), n)
		}
		// What we read, we can write back identically when it is JSON.
		var v any
		if json.Unmarshal(body, &v) == nil {
			var buf bytes.Buffer
			if err := writeMessage(&buf, json.RawMessage(body)); err != nil {
				return // RawMessage re-validates; compacting may differ
			}
			if _, err := readMessage(&buf, limit); err != nil {
				t.Fatalf("our own message does not read back: %v", err)
			}
		}
	})
}

// FuzzDecodeParams: a client's parameters never panic the decoder, and
// parameters the server accepts survive our client's encoding unchanged.
func FuzzDecodeParams(f *testing.F) {
	f.Add([]byte(iperf3Params))
	f.Add([]byte(`{"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":131072,"pacing_timer":1000,"client_version":"3.12"}`))
	f.Add([]byte(`{"tcp":true,"num":20971520,"parallel":128,"len":1048576}`))
	f.Add([]byte(`{"udp":true,"bidirectional":true,"time":1e+10}`))
	f.Add([]byte(`{"time":-1,"parallel":0,"len":-5,"reverse":false}`))
	f.Add([]byte(`{"blockcount":9223372036854775807,"len":1048576}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeParams(data)
		if err != nil {
			return
		}
		_ = p.budget()
		if p.Check() != 0 {
			return
		}
		if p.budget() < 0 {
			t.Fatalf("negative budget from %s", data)
		}
		body, err := json.Marshal(p.wire())
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodeParams(body)
		if err != nil {
			t.Fatalf("our encoding %s does not decode: %v", body, err)
		}
		if p.Duration != q.Duration || p.Bytes != q.Bytes || p.Blocks != q.Blocks || p.Omit != q.Omit ||
			p.Parallel != q.Parallel || p.Reverse != q.Reverse || p.BlockSize != q.BlockSize || p.Bitrate != q.Bitrate {
			t.Fatalf("round trip: %+v became %+v (via %s)", p, q, body)
		}
	})
}

// FuzzDecodeResults: a peer's results never panic the decoder, yield
// sane stream IDs and byte counts, and ours decode to what we sent.
func FuzzDecodeResults(f *testing.F) {
	f.Add([]byte(iperf3ResultsClient))
	f.Add([]byte(iperf3ResultsServer))
	f.Add([]byte(`{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":-1,"streams":[]}`))
	f.Add([]byte(`{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1e300,"bytes":-1,"retransmits":0,"jitter":0,"errors":0,"packets":0}]}`))
	f.Add([]byte(`{"streams":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResults(data)
		if err != nil {
			return
		}
		w := wireResults{CPUTotal: r.CPU.Total, CPUUser: r.CPU.User, CPUSystem: r.CPU.System, Streams: []wireStream{}}
		for _, s := range r.Streams {
			if s.ID < 0 || s.ID > maxStreams+2 || s.Bytes < 0 || s.Elapsed < 0 {
				t.Fatalf("implausible stream %+v from %s", s, data)
			}
			w.Streams = append(w.Streams, wireStream{ID: s.ID, Bytes: s.Bytes, Retransmits: s.Retransmits, EndTime: s.Elapsed.Seconds()})
		}
		body, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodeResults(body)
		if err != nil {
			t.Fatalf("our results %s do not decode: %v", body, err)
		}
		for i := range r.Streams {
			a, b := r.Streams[i], q.Streams[i]
			if a.ID != b.ID || a.Bytes != b.Bytes || a.Retransmits != b.Retransmits || (a.Elapsed-b.Elapsed).Abs() > time.Microsecond {
				t.Fatalf("round trip: %+v became %+v", a, b)
			}
		}
	})
}

// FuzzParseSize: -n/-l/-b arguments never panic the parser and never
// come out negative; plain integers parse exactly.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"131072", "128K", "20M", "1.5G", "1t", "0", "-1", "1e3", "0x10", "NaN", "inf", "9e18", "", "K", "10MM"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (int64, error){ParseSize, ParseRate} {
			v, err := parse(s)
			if err != nil {
				continue
			}
			if v < 0 {
				t.Fatalf("%q parsed to %d", s, v)
			}
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n < 1<<53 && v != n {
				t.Fatalf("%q parsed to %d, want %d", s, v, n)
			}
		}
	})
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"131072": 131072, "128K": 128 << 10, "128k": 128 << 10, "20M": 20 << 20, "1.5G": 3 << 29, "1T": 1 << 40} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	if got, err := ParseRate("100M"); err != nil || got != 100e6 {
		t.Errorf("ParseRate(100M) = %d, %v", got, err)
	}
	for _, s := range []string{"", "-1", "1x", "0x10", "NaN", "Inf", "1e30", "M", "1 M"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) succeeded", s)
		}
	}
}
