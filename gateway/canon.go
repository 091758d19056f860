package gateway

import (
	"fmt"
	"strconv"

	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// The gateway and the inference server must read a request the same way:
// a cap or allowlist checked on one reading and a request served on another
// is no check at all. Go's encoding/json (Ollama) matches object keys to
// struct fields case-insensitively, with Unicode folding ("MAX_TOKENS" and
// "max_tokenſ" both set max_tokens), and lets the last of duplicate keys
// win; Python servers are case-sensitive and also keep the last. So the
// gateway parses the body once, refuses what different readers could read
// differently, checks the parsed values, and forwards its own encoding of
// them: never the client's bytes. The parser is internal/jsonstrict's
// canonicalizer, which the project's strict file reader shares.

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
		m[jsonstrict.Fold(f)] = f
	}
	return m
}()

// field is one top-level member of a request, in the client's order.
type field = jsonstrict.Member

// decodeObject reads data as one JSON object and returns its members in
// order, each value re-encoded canonically (jsonstrict.Object). It refuses
// (*jsonstrict.KeyError) a key that appears twice in one object, at any
// depth, and at the top level two keys that fold to the same spelling or a
// key that folds to a known field without being it.
func decodeObject(data []byte) ([]field, error) {
	return jsonstrict.Object(data, func(name, folded string) error {
		if known, ok := knownFold[folded]; ok && known != name {
			return &jsonstrict.KeyError{Msg: fmt.Sprintf("key %q: did you mean %q? keys are case-sensitive", name, known)}
		}
		return nil
	})
}

// encodeObject writes fields as a JSON object, in order.
func encodeObject(fields []field) []byte {
	n := 2
	for _, f := range fields {
		n += len(f.Key) + len(f.Value) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(b, f.Key...), f.Value...)
	}
	return append(b, '}')
}

// positiveInt reads a JSON integer literal (no fraction, no exponent).
func positiveInt(v []byte) (int, bool) {
	n, err := strconv.Atoi(string(v))
	return n, err == nil && n >= 1
}
