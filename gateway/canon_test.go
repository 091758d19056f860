package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// ollamaRequest reads a body the way Ollama's OpenAI layer does: Go's
// encoding/json into a struct, keys matched case-insensitively, the last
// duplicate winning.
type ollamaRequest struct {
	Model     string `json:"model"`
	MaxTokens *int   `json:"max_tokens"`
	Stream    bool   `json:"stream"`
	N         *int   `json:"n"`
}

// TestAmbiguousRequestsRefused: each way the outside review made the
// gateway and Ollama read one body differently is refused with a 400 that
// names the key; the unambiguous spellings pass.
func TestAmbiguousRequestsRefused(t *testing.T) {
	rt := routes["/v1/chat/completions"]
	for _, body := range []string{
		`{"model":"qwen","max_tokens":1,"MAX_TOKENS":40}`,
		`{"model":"qwen","Max_Tokens":null}`,
		`{"model":"qwen","max_tokens":1,"Max_Tokens":null}`,
		`{"model":"qwen","max_tokenſ":40}`,      // long s: U+017F folds to s
		`{"model":"qwen","max_to\u212aens":40}`, // Kelvin sign folds to k
		`{"model":"other","Model":"demo"}`,      // allowlist bypass
		`{"model":"qwen","model":"demo"}`,       // exact duplicate, last wins upstream
		`{"model":"qwen","Stream":true}`,        // streamed while the gateway thinks not
		`{"model":"qwen","İnput":"x"}`,          // ToUpper(ToLower(İ)) is I
		`{"model":"qwen","foo":1,"FOO":2}`,      // unknown keys that collide
	} {
		_, aerr := parseRequest([]byte(body), rt, 5, 2)
		if aerr == nil || aerr.status != 400 || aerr.code != "ambiguous_json" {
			t.Errorf("%s: got %v, want 400 ambiguous_json", body, aerr)
			continue
		}
		t.Logf("%s: %s", body, aerr.message)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"model":"qwen","max_tokens":3}`, `{"model":"qwen","max_tokens":3}`},
		{`{"model":"qwen","max_tokens":null}`, `{"model":"qwen","max_tokens":5}`},
		{`{"model":"qwen"}`, `{"model":"qwen","max_tokens":5}`},
		{"{\"model\":\"qwen\",\"max_token\\u0073\":2 , \"n\":null}", `{"model":"qwen","max_tokens":2}`},
		{`{"model":"q<&>\ud800","stream":null,"messages":[{"content":"a\u00e9"}]}`, `{"model":"q<&>` + "\ufffd" + `","messages":[{"content":"aé"}],"max_tokens":5}`},
		{`{"model":"qwen","max_completion_tokens":4,"seed":12345678901234567890}`, `{"model":"qwen","max_completion_tokens":4,"seed":12345678901234567890}`},
		{"{\"model\":\"qwen\",\"tools\":[{\"a\":1,\"A\":[true,false,null,-0.5e+3]}],\"x\":\"\\/\\ud83d\\ude00\\u0001\\t\"}",
			"{\"model\":\"qwen\",\"tools\":[{\"a\":1,\"A\":[true,false,null,-0.5e+3]}],\"x\":\"/😀\\u0001\\t\",\"max_tokens\":5}"},
	} {
		req, aerr := parseRequest([]byte(tc.body), rt, 5, 2)
		if aerr != nil {
			t.Errorf("%s: refused: %v", tc.body, aerr)
			continue
		}
		if string(req.body) != tc.want {
			t.Errorf("%s: forwarded\n %s\nwant\n %s", tc.body, req.body, tc.want)
		}
	}
}

func TestDeepNestingRefused(t *testing.T) {
	deep := `{"model":"qwen","x":` + strings.Repeat("[", jsonstrict.MaxDepth+1) + strings.Repeat("]", jsonstrict.MaxDepth+1) + `}`
	if _, aerr := parseRequest([]byte(deep), routes["/v1/embeddings"], 5, 2); aerr == nil || aerr.status != 400 || !strings.Contains(aerr.message, "nested more than") {
		t.Errorf("nesting %d deep: %v", jsonstrict.MaxDepth+1, aerr)
	}
	ok := `{"model":"qwen","x":` + strings.Repeat("[", jsonstrict.MaxDepth-1) + strings.Repeat("]", jsonstrict.MaxDepth-1) + `}`
	if _, aerr := parseRequest([]byte(ok), routes["/v1/embeddings"], 5, 2); aerr != nil {
		t.Errorf("nesting %d deep: %v", jsonstrict.MaxDepth-1, aerr)
	}
}

// TestUpstreamGetsCanonicalBody: through the real gateway, the upstream
// process receives the gateway's encoding of the parsed request, not the
// client's bytes, and the ambiguous variants never reach it.
func TestUpstreamGetsCanonicalBody(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxTokens = 5 })
	sent := "{ \"model\" : \"qwen\",\n \"messages\":[{\"role\":\"user\",\"content\":\"hi \\u003c\"}], \"max_token\\u0073\": 3, \"temperature\": 0.50 }"
	code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], sent)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	want := `{"model":"qwen","messages":[{"role":"user","content":"hi <"}],"max_tokens":3,"temperature":0.50}`
	if got := h.upstreamRaw(); got != want {
		t.Errorf("upstream received\n %s\nwant\n %s", got, want)
	}
	_, _, before, _ := h.upstreamSaw()
	for _, bad := range []string{
		`{"model":"qwen","messages":[],"max_tokens":1,"MAX_TOKENS":40}`,
		`{"model":"qwen","messages":[],"Max_Tokens":null}`,
		`{"model":"qwen","messages":[],"max_tokenſ":40}`,
	} {
		code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], bad)
		if code != 400 || errorCode(t, body) != "ambiguous_json" {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
	// A token limited to model qwen cannot name another model in a
	// differently cased key.
	code, _, body = h.do("POST", "/v1/chat/completions", h.tok["qwen"], `{"model":"qwen","Model":"other","messages":[]}`)
	if code != 400 || !strings.Contains(string(body), `\"Model\"`) {
		t.Errorf("model/Model: %d %s", code, body)
	}
	if _, _, after, _ := h.upstreamSaw(); after != before {
		t.Errorf("ambiguous requests reached the upstream: %d requests, was %d", after, before)
	}
}

// FuzzParseRequest feeds arbitrary bodies to the request checker: it must
// never panic; what it accepts, a case-insensitive Go reader (Ollama) must
// read with the same model and no max_tokens above the cap, from the
// client's bytes and from the forwarded ones alike; and what it forwards
// must parse back to itself.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"qwen","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"qwen","max_tokens":5,"n":2,"stream":true}`))
	f.Add([]byte(`{"model":"qwen","max_tokens":null,"max_completion_tokens":7}`))
	f.Add([]byte(`{"model":"qwen","max_tokens":1,"MAX_TOKENS":40}`))
	f.Add([]byte(`{"model":"qwen","max_tokenſ":40}`))
	f.Add([]byte(`{"model":"other","Model":"demo"}`))
	f.Add([]byte(`{"model":1}`))
	f.Add([]byte(`[]`))
	rt := routes["/v1/chat/completions"]
	f.Fuzz(func(t *testing.T, data []byte) {
		req, aerr := parseRequest(data, rt, 100, 2)
		if aerr != nil {
			return
		}
		for _, b := range [][]byte{data, req.body} {
			var o ollamaRequest
			if err := json.Unmarshal(b, &o); err != nil {
				t.Fatalf("accepted %q, which Go cannot read as a request: %v", b, err)
			}
			if o.Model != req.model || req.model == "" {
				t.Fatalf("gateway read model %q, a Go server reads %q in %q", req.model, o.Model, b)
			}
			if o.MaxTokens != nil && *o.MaxTokens > 100 || o.N != nil && *o.N > 2 {
				t.Fatalf("a Go server reads max_tokens %v / n %v in %q (caps 100, 2)", *o.MaxTokens, o.N, b)
			}
			if o.Stream != req.stream {
				t.Fatalf("gateway read stream %v, a Go server reads %v in %q", req.stream, o.Stream, b)
			}
		}
		again, aerr := parseRequest(req.body, rt, 100, 2)
		if aerr != nil || string(again.body) != string(req.body) {
			t.Fatalf("forwarded %q is not canonical: %v, %+v", req.body, aerr, again)
		}
		var out map[string]any
		if err := json.Unmarshal(req.body, &out); err != nil {
			t.Fatalf("forwarded body is not JSON: %v", err)
		}
		if out["max_tokens"] == nil && out["max_completion_tokens"] == nil {
			t.Fatalf("forwarded %q without a token limit", req.body)
		}
	})
}

// FuzzCanonical holds the canonical encoder to encoding/json: it refuses
// what encoding/json refuses; what it accepts, encoding/json reads from its
// output exactly as from the input; and its output is its own fixed point.
func FuzzCanonical(f *testing.F) {
	f.Add([]byte(`{"a":"\ud83d\ude00\ud800x\u00e9\"\\\/\b\f\n\r\t","b":[1,-0,2.5e-3,{"c":null}],"d":true}`))
	f.Add([]byte("{\"a\":\"\xff\xc3\x28\"}"))
	f.Add([]byte(` { "a" : [ ] , "b" : { } } `))
	f.Add([]byte(`{"a":01}`))
	f.Add([]byte(`{"a":1,}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, err := decodeObject(data)
		var ce *jsonstrict.KeyError
		switch {
		case errors.As(err, &ce):
			return
		case errors.Is(err, jsonstrict.ErrTooDeep):
			return
		case err != nil:
			if json.Valid(data) && bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
				t.Fatalf("refused valid JSON %q: %v", data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		out := encodeObject(fields)
		var a, b any
		da := json.NewDecoder(bytes.NewReader(data))
		da.UseNumber()
		db := json.NewDecoder(bytes.NewReader(out))
		db.UseNumber()
		if err := da.Decode(&a); err != nil {
			t.Fatal(err)
		}
		if err := db.Decode(&b); err != nil {
			t.Fatalf("output %q of %q: %v", out, data, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%q reads as %v, its canonical form %q as %v", data, a, out, b)
		}
		again, err := decodeObject(out)
		if err != nil || !bytes.Equal(encodeObject(again), out) {
			t.Fatalf("canonical %q is not a fixed point: %v", out, err)
		}
	})
}
