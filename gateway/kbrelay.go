package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/kb"
)

// The answers of the knowledge-base route: the upstream's, with invented
// citations removed and the citations array added, or the gateway's own
// not-found answer.

// writeNotFound answers p.NotFound as a chat completion, streamed when the
// client asked for a stream, without calling the model. Apart from id and
// created it depends on the question's language and the request's model,
// stream and stream_options only.
func (g *Gateway) writeNotFound(w http.ResponseWriter, ex *exchange, req *apiRequest, p *kb.Prompt) {
	id := "chatcmpl-kb-" + strings.TrimPrefix(ex.requestID, "req_")
	created := time.Now().Unix()
	h := w.Header()
	ex.status = http.StatusOK
	ex.ttft = time.Since(ex.start)
	if !req.stream {
		body, _ := json.Marshal(map[string]any{"id": id, "object": "chat.completion", "created": created, "model": req.model,
			"choices":   []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": p.NotFound}, "finish_reason": "stop"}},
			"usage":     map[string]int{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
			"citations": []kb.Citation{}})
		if g.o.AuditContent {
			ex.response = capContent(body)
		}
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	h["Content-Type"] = []string{"text/event-stream"}
	w.WriteHeader(http.StatusOK)
	chunk := func(choices any, extra map[string]any) {
		m := map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model, "choices": choices}
		for k, v := range extra {
			m[k] = v
		}
		data, _ := json.Marshal(m)
		_, _ = w.Write(append(append([]byte("data: "), data...), '\n', '\n'))
	}
	chunk([]any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": p.NotFound}, "finish_reason": nil}}, nil)
	chunk([]any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}, nil)
	if includeUsage(req) {
		chunk([]any{}, map[string]any{"usage": map[string]int{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
	}
	chunk([]any{}, map[string]any{"citations": []kb.Citation{}})
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	_ = http.NewResponseController(w).Flush()
}

// includeUsage reports whether the request set stream_options.include_usage.
func includeUsage(req *apiRequest) bool {
	for _, f := range req.fields {
		if f.Name == "stream_options" {
			var so struct {
				IncludeUsage bool `json:"include_usage"`
			}
			return json.Unmarshal(f.Value, &so) == nil && so.IncludeUsage
		}
	}
	return false
}

// relayKBBody relays a whole answer with its citations checked and listed.
func (g *Gateway) relayKBBody(w http.ResponseWriter, resp *http.Response, ex *exchange, p *kb.Prompt) error {
	body, err := readBody(resp, ex)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		if u := usageOf(body); u != nil {
			ex.promptTokens, ex.completionTokens = u.PromptTokens, u.CompletionTokens
		}
		out, ok := citeBody(body, p)
		if !ok {
			g.metrics.upstreamErr.WithLabelValues("status").Inc()
			g.fail(w, ex, errUpstream)
			return nil
		}
		body = out
		if g.o.AuditContent {
			ex.response = capContent(body)
		}
	}
	return g.writeBody(w, resp, body)
}

// citeBody filters each choice's message content and adds the citations.
func citeBody(body []byte, p *kb.Prompt) ([]byte, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return nil, false
	}
	var choices []map[string]json.RawMessage
	if json.Unmarshal(top["choices"], &choices) != nil {
		return nil, false
	}
	var cited []int
	for _, ch := range choices {
		var msg map[string]json.RawMessage
		if json.Unmarshal(ch["message"], &msg) != nil {
			continue
		}
		var content string
		if json.Unmarshal(msg["content"], &content) != nil {
			continue
		}
		text, c := kb.StripCitations(content, len(p.Citations))
		cited = append(cited, c...)
		msg["content"], _ = json.Marshal(text)
		ch["message"], _ = json.Marshal(msg)
	}
	top["choices"], _ = json.Marshal(choices)
	top["citations"], _ = json.Marshal(p.CitationsCited(cited))
	out, err := json.Marshal(top)
	return out, err == nil
}

// relayKBStream relays an SSE answer event by event, filtering each delta's
// content through a citation filter (which may hold back a "[1" until the
// next delta decides it), and sends the citations as the last event before
// [DONE].
func (g *Gateway) relayKBStream(w http.ResponseWriter, resp *http.Response, ex *exchange, p *kb.Prompt) error {
	rc := http.NewResponseController(w)
	copyHeaders(w, resp)
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	f := kb.NewCitationFilter(len(p.Citations))
	chunks := 0
	var u *usage
	var last map[string]json.RawMessage // id, created, model of the last chunk
	var content []byte
	if g.o.AuditContent {
		content = append(content, '[')
		defer func() { ex.response = append(content, ']') }()
	}
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(g.o.WriteTimeout))
		_, err := w.Write(b)
		return err
	}
	event := func(data []byte) error {
		if content != nil && len(content) < maxContentBytes {
			if len(content) > 1 {
				content = append(content, ',')
			}
			content = append(content, data...)
		}
		if err := write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
			return err
		}
		return rc.Flush()
	}
	tail := func() error {
		if rest := f.Flush(); rest != "" {
			if err := event(kbChunk(last, []any{map[string]any{"index": 0, "delta": map[string]string{"content": rest}, "finish_reason": nil}}, nil)); err != nil {
				return err
			}
		}
		return event(kbChunk(last, []any{}, map[string]any{"citations": p.CitationsCited(f.Cited())}))
	}
	done := false
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return errors.New("upstream stream event longer than 64 KiB")
		}
		if len(line) > 0 {
			if ex.ttft == 0 {
				ex.ttft = time.Since(ex.start)
			}
			data, isData := bytes.CutPrefix(line, []byte("data:"))
			data = bytes.TrimSpace(data)
			switch {
			case !isData || len(data) == 0:
				// blank lines end events; ours are written whole
			case bytes.Equal(data, []byte("[DONE]")):
				if err := tail(); err != nil {
					return err
				}
				done = true
				if err := write([]byte("data: [DONE]\n\n")); err != nil {
					return err
				}
				_ = rc.Flush()
			case last != nil && !f.Holding() && plainContent(data):
				// No bracket, none held back: the filter would change
				// nothing, so the event goes on as the upstream wrote it,
				// as on the other routes (the common case, kept cheap).
				chunks++
				if uu := usageOf(data); uu != nil {
					u = uu
				}
				if err := event(data); err != nil {
					return err
				}
			default:
				chunks++
				out, m, uu := filterChunk(data, f)
				if m != nil {
					last = m
				}
				if uu != nil {
					u = uu
				}
				if err := event(out); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			if !done {
				if err := tail(); err != nil {
					return err
				}
			}
			break
		}
		if err != nil {
			return err
		}
	}
	ex.countTokens(u, chunks)
	return nil
}

// plainContent reports whether a chunk's content, if it has one, is a
// string the citation filter leaves as it is: no bracket, no escape that
// could spell one. A chunk with more than one "content" key is not plain.
func plainContent(data []byte) bool {
	key := []byte(`"content":`)
	i := bytes.Index(data, key)
	if i < 0 {
		return true
	}
	rest := bytes.TrimLeft(data[i+len(key):], " ")
	if bytes.Contains(rest, key) {
		return false
	}
	if bytes.HasPrefix(rest, []byte("null")) {
		return true
	}
	if len(rest) == 0 || rest[0] != '"' {
		return false
	}
	for _, c := range rest[1:] {
		switch c {
		case '"':
			return true
		case '[', '\\', 0xE3: // 0xE3 leads '【' (E3 80 90) and other CJK punctuation
			return false
		}
	}
	return false
}

// filterChunk passes one stream chunk's delta contents through f; a
// choice that finishes gets what f still held. It returns the chunk to
// send, its identifying fields and its usage, if any. Data that is not a
// JSON object is dropped from the answer (replaced by an empty object):
// the gateway only forwards what it has read.
func filterChunk(data []byte, f *kb.CitationFilter) ([]byte, map[string]json.RawMessage, *usage) {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return []byte("{}"), nil, nil
	}
	var u *usage
	if raw, ok := top["usage"]; ok {
		var uu usage
		if json.Unmarshal(raw, &uu) == nil {
			u = &uu
		}
	}
	var choices []map[string]json.RawMessage
	if json.Unmarshal(top["choices"], &choices) == nil && len(choices) > 0 {
		for _, ch := range choices {
			var delta map[string]json.RawMessage
			if json.Unmarshal(ch["delta"], &delta) != nil {
				continue
			}
			var text string
			if raw, ok := delta["content"]; ok && json.Unmarshal(raw, &text) == nil {
				text = f.Write(text)
			}
			if fr, ok := ch["finish_reason"]; ok && string(fr) != "null" {
				text += f.Flush()
			}
			if _, ok := delta["content"]; ok || text != "" {
				delta["content"], _ = json.Marshal(text)
			}
			ch["delta"], _ = json.Marshal(delta)
		}
		top["choices"], _ = json.Marshal(choices)
	}
	out, _ := json.Marshal(top)
	return out, top, u
}

// kbChunk makes a chunk of the gateway's own (held-back text, citations)
// with the id, created and model of the upstream's last.
func kbChunk(last map[string]json.RawMessage, choices any, extra map[string]any) []byte {
	m := map[string]any{"object": "chat.completion.chunk", "choices": choices}
	for _, k := range []string{"id", "created", "model", "system_fingerprint"} {
		if v, ok := last[k]; ok {
			m[k] = v
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	data, _ := json.Marshal(m)
	return data
}
