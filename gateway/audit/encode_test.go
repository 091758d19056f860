package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// FuzzAppendRequest checks that the hand-written encoder of request records
// writes exactly what json.Marshal writes.
func FuzzAppendRequest(f *testing.F) {
	f.Add("req_1", "0123456789abcdef", "127.0.0.1:5555", "GET", "/v1/models", "qwen", "", false, 200, 1.25, 0.0, 0, 0, int64(1764115200123456789))
	f.Add("r\x00<&>\u2028\u2029\xff\"\\\b\f\n\r\t", "é", "[::1]:1", "POST", "/v1/chat/\x7f", "模型", "client_closed", true, 499, 1e-7, 3e21, 12, 345, int64(0))
	f.Add("", "", "", "", "", "", "", false, 0, 0.0, math.Inf(1), -1, -2, int64(-62135596800000000))
	f.Fuzz(func(t *testing.T, id, tok, client, method, route, model, code string, stream bool, status int,
		latency, ttft float64, prompt, completion int, nanos int64) {
		r := &Record{Seq: int64(status) * 7, Kind: KindRequest, Time: time.Unix(0, nanos).UTC(), Prev: tok + id,
			RequestID: id, TokenID: tok, Client: client, Method: method, Route: route, Model: model, Stream: stream,
			Status: status, Error: code, LatencyMs: latency, TTFTMs: ttft, PromptTokens: prompt, CompletionTokens: completion}
		want, err := json.Marshal(r)
		got, ok := appendRequest(nil, r)
		if err != nil || !ok {
			if ok {
				t.Fatalf("encoded a record json.Marshal refuses (%v): %s", err, got)
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendRequest\n got %s\nwant %s", got, want)
		}
	})
}

func TestAppendRequestDeclines(t *testing.T) {
	for _, r := range []*Record{
		{Kind: KindRequest, Content: &Content{Request: json.RawMessage(`{}`)}},
		{Kind: KindStart, KeyID: "k"},
		{Kind: KindCheckpoint, Signature: nil, PublicKey: "p"},
		{Kind: KindRequest, LatencyMs: math.NaN()},
		{Kind: KindRequest, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, ok := appendRequest(nil, r); ok {
			t.Errorf("encoded %+v; it should go through json.Marshal", r)
		}
	}
}
