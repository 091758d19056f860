package jsonstrict

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type service struct {
	Name   string `json:"name"`
	Listen []string
}

type base struct {
	Root string `json:"root"`
}

type record struct {
	base
	SchemaVersion int                `json:"schemaVersion"`
	Services      []service          `json:"services,omitempty"`
	ByName        map[string]service `json:"byName,omitempty"`
	Extra         json.RawMessage    `json:"extra,omitempty"`
	When          time.Time          `json:"when"`
	Skipped       int                `json:"-"`
	Plain         bool
	Ptr           *service `json:"ptr"`
}

func TestDecodeAccepts(t *testing.T) {
	in := `{"root":"/","schemaVersion":2,"services":[{"name":"gw","Listen":["a"]}],
	"byName":{"X":{"name":"x"}},"extra":{"ANY":1,"any":2},"when":"2026-01-02T03:04:05Z","Plain":true,"ptr":null}`
	var r record
	if err := Decode([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	if r.Root != "/" || r.SchemaVersion != 2 || r.Services[0].Listen[0] != "a" || r.ByName["X"].Name != "x" || !r.Plain {
		t.Fatalf("decoded %+v", r)
	}
}

// TestDecodeRefusesAmbiguous: each document encoding/json alone accepts
// (with DisallowUnknownFields) but that a case-sensitive reader, or one that
// keeps the first duplicate, reads differently.
func TestDecodeRefusesAmbiguous(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"sChemAVersion":2}`, `key "sChemAVersion": did you mean "schemaVersion"?`},
		{`{"schemaVersion":2,"SCHEMAVERSION":3}`, `did you mean "schemaVersion"`},
		{`{"ROOT":"/"}`, `key "ROOT": did you mean "root"?`},     // embedded field
		{`{"plain":true}`, `key "plain": did you mean "Plain"?`}, // untagged field
		{`{"schemaVersion":2,"services":[{"name":"a"},{"NAME":"b"}]}`, `key "NAME" in services[1]: did you mean "name"?`},
		{`{"byName":{"k":{"listen":["x"]}}}`, `key "listen" in byName.k: did you mean "Listen"?`},
		{`{"ptr":{"Name":"x"}}`, `key "Name" in ptr: did you mean "name"?`},
		{`{"schemaVersion":2,"schemaVersion":3}`, `key "schemaVersion" appears twice`},
		{`{"services":[{"name":"a","name":"b"}]}`, `key "name" appears twice`},
		{`{"extra":{"a":1,"a":2}}`, `key "a" appears twice`},                      // even inside raw values
		{`{"schemaVersion":2,"schemaverſion":3}`, `did you mean "schemaVersion"`}, // long s folds to s
	} {
		var r record
		err := Decode([]byte(c.in), &r)
		var ke *KeyError
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want a *KeyError containing %q", c.in, err, c.want)
		}
	}
}

func TestDecodeRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"nope":1}`, `unknown field "nope"`},
		{`{"schemaVersion":2} {}`, "data after the closing brace"},
		{"{\n  \"schemaVersion\": \"two\"}", "line 2, column"},
		{"{\n  \"schemaVersion\": 2,,}", "line 2, column"},
		{`{"Skipped":1}`, `unknown field "Skipped"`},
	} {
		var r record
		if err := Decode([]byte(c.in), &r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestFold(t *testing.T) {
	for _, pair := range [][2]string{
		{"max_tokens", "MAX_TOKENS"}, {"max_tokens", "max_tokenſ"}, {"max_tokens", "max_to\u212aens"},
		{"input", "İnput"}, {"input", "ınput"}, {"model", "MoDeL"},
	} {
		if Fold(pair[0]) != Fold(pair[1]) {
			t.Errorf("Fold(%q) != Fold(%q)", pair[0], pair[1])
		}
	}
	if Fold("max_tokens") == Fold("max_token") || Fold("n") == Fold("m") {
		t.Error("Fold merges different names")
	}
}

// FuzzDecode: Decode never panics, and what it accepts has no duplicate
// key and only top-level keys that are exactly a field's name.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"root":"/","schemaVersion":2,"services":[{"name":"gw","Listen":["a"]}],"byName":{"X":{"name":"x"}},"Plain":true}`))
	f.Add([]byte(`{"sChemAVersion":2}`))
	f.Add([]byte(`{"services":[{"name":"a","name":"b"}]}`))
	f.Add([]byte(`{"ptr":{"Name":"x"},"extra":[1,{"a":null}]}`))
	f.Add([]byte(`{"when":"2026-01-02T03:04:05Z","schemaVersion":1e2}`))
	names := map[string]bool{"root": true, "schemaVersion": true, "services": true, "byName": true, "extra": true, "when": true, "Plain": true, "ptr": true}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r record
		if Decode(data, &r) != nil {
			return
		}
		if err := Unambiguous(data); err != nil {
			t.Fatalf("accepted %q: %v", data, err)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(data, &top) == nil {
			for k := range top {
				if !names[k] {
					t.Fatalf("accepted %q with key %q", data, k)
				}
			}
		}
	})
}
