package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// The gateway and the inference server must read a request the same way:
// a cap or allowlist checked on one reading and a request served on another
// is no check at all. Go's encoding/json (Ollama) matches object keys to
// struct fields case-insensitively, with Unicode folding ("MAX_TOKENS" and
// "max_tokenſ" both set max_tokens), and lets the last of duplicate keys
// win; Python servers are case-sensitive and also keep the last. So the
// gateway parses the body once, refuses what different readers could read
// differently, checks the parsed values, and forwards its own encoding of
// them: never the client's bytes.

// knownFields are the top-level request fields of the OpenAI API and of the
// servers the appliance runs. A key that matches one of them only when case
// is ignored is refused.
var knownFields = []string{
	// chat and completions
	"model", "messages", "prompt", "suffix", "echo", "best_of", "stream", "stream_options",
	"max_tokens", "max_completion_tokens", "n", "seed", "stop", "temperature", "top_p",
	"frequency_penalty", "presence_penalty", "response_format", "tools", "tool_choice",
	"parallel_tool_calls", "functions", "function_call", "user", "logprobs", "top_logprobs",
	"logit_bias", "store", "metadata", "modalities", "audio", "prediction", "reasoning_effort",
	"service_tier", "web_search_options",
	// embeddings
	"input", "encoding_format", "dimensions",
	// vLLM, llama.cpp and Ollama extensions
	"top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
	"guided_json", "guided_regex", "guided_choice", "guided_grammar", "chat_template",
	"chat_template_kwargs", "add_generation_prompt", "truncate_prompt_tokens", "keep_alive",
	"options", "format", "think", "num_ctx",
}

// knownFold maps the folded spelling of each known field to the field.
var knownFold = func() map[string]string {
	m := make(map[string]string, len(knownFields))
	for _, f := range knownFields {
		m[foldKey(f)] = f
	}
	return m
}()

// foldKey returns a spelling of s shared by every string that a
// case-insensitive reader could take for s: Go's encoding/json folds a rune
// as ToUpper(ToLower(r)) (so "İ" and "ı" match "i"), strings.EqualFold uses
// Unicode simple folding (so "ſ" matches "s" and "K", the Kelvin sign,
// matches "k"). Each rune becomes the smallest rune of the simple-folding
// orbit of its encoding/json fold, which covers both.
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		b := []byte(s)
		for i, c := range b {
			if 'a' <= c && c <= 'z' {
				b[i] = c - 'a' + 'A'
			}
		}
		return string(b)
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		r = unicode.ToUpper(unicode.ToLower(r))
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		out = utf8.AppendRune(out, low)
	}
	return string(out)
}

// field is one top-level member of a request, in the client's order.
type field struct {
	name  string
	value any // as decoded with UseNumber: nil, bool, json.Number, string, []any, map[string]any
}

// maxDepth bounds nesting; encoding/json's own limit is 10000.
const maxDepth = 200

// errCanon is a body that is JSON but not one unambiguous request; the
// message names the key.
type errCanon struct{ msg string }

func (e *errCanon) Error() string { return e.msg }

// decodeObject reads data as one JSON object and returns its members in
// order. It refuses a key that appears twice, at any depth, and at the top
// level two keys that fold to the same spelling or a key that folds to a
// known field without being it (errCanon). Nested values are decoded with
// encoding/json, so nested strings are read exactly as Go servers read them
// (invalid UTF-8 and lone surrogates become U+FFFD).
func decodeObject(data []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var fields []field
	seen := map[string]string{} // folded → as sent
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := t.(string) // Token only returns a string in key position
		fold := foldKey(name)
		if prev, ok := seen[fold]; ok {
			if prev == name {
				return nil, &errCanon{fmt.Sprintf("key %q appears twice", name)}
			}
			return nil, &errCanon{fmt.Sprintf("keys %q and %q differ only in case", prev, name)}
		}
		seen[fold] = name
		if known, ok := knownFold[fold]; ok && known != name {
			return nil, &errCanon{fmt.Sprintf("key %q: did you mean %q? keys are case-sensitive", name, known)}
		}
		v, err := decodeValue(dec, 1)
		if err != nil {
			return nil, err
		}
		fields = append(fields, field{name, v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the object")
	}
	return fields, nil
}

// decodeValue reads the next value from dec, refusing duplicate keys in the
// objects within it.
func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, &errCanon{fmt.Sprintf("nested more than %d levels deep", maxDepth)}
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string)
			if _, dup := m[k]; dup {
				return nil, &errCanon{fmt.Sprintf("key %q appears twice in one object", k)}
			}
			if m[k], err = decodeValue(dec, depth+1); err != nil {
				return nil, err
			}
		}
		_, err = dec.Token()
		return m, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err = dec.Token()
		return a, err
	}
	return t, nil
}

// encodeObject writes fields as a compact JSON object, in order.
func encodeObject(fields []field) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	buf.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := enc.Encode(f.name); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
		buf.WriteByte(':')
		if err := enc.Encode(f.value); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// positiveInt reads a JSON integer literal (no fraction, no exponent).
func positiveInt(v any) (int, bool) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(num))
	return n, err == nil && n >= 1
}
