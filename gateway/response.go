package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// usage is the OpenAI usage object the upstream reports.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// usageOf reads the usage a completion (or a stream chunk) reports; nil
// when it reports none. The substring test keeps chunks without one cheap.
func usageOf(data []byte) *usage {
	if !bytes.Contains(data, []byte(`"usage"`)) {
		return nil
	}
	var c struct {
		Usage *usage `json:"usage"`
	}
	if json.Unmarshal(data, &c) != nil {
		return nil
	}
	return c.Usage
}

// countTokens records a stream's token counts: the usage it reported, or
// else its content chunks as completion tokens (llama.cpp and vLLM send one
// per token).
func (ex *exchange) countTokens(u *usage, chunks int) {
	if u != nil {
		ex.promptTokens, ex.completionTokens = u.PromptTokens, u.CompletionTokens
	} else {
		ex.completionTokens = chunks
	}
}

// passHeaders are the upstream response headers a client sees; everything
// else (Server, X-Powered-By, cookies, caching, upstream debugging) is
// dropped.
var passHeaders = []string{"Content-Type", "Openai-Processing-Ms", "Openai-Model"}

const maxResponseBytes = 64 << 20

// maxContentBytes bounds how much of a streamed answer content logging keeps.
const maxContentBytes = 1 << 20

// copyHeaders sets the allowed upstream headers on w. ReadResponse
// canonicalized the upstream's header names, and passHeaders are canonical.
func copyHeaders(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	for _, name := range passHeaders {
		if v := resp.Header[name]; len(v) > 0 && v[0] != "" {
			h[name] = v[:1]
		}
	}
}

// relayStream passes an SSE response through event by event, flushing after
// each, and reads usage from the chunk that carries it (the last one when
// the client asked for stream_options.include_usage). Without usage it
// counts content chunks as completion tokens, which is what llama.cpp and
// vLLM send one of per token.
func (g *Gateway) relayStream(w http.ResponseWriter, resp *http.Response, ex *exchange) error {
	rc := http.NewResponseController(w)
	copyHeaders(w, resp)
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	br := bufio.NewReaderSize(resp.Body, 32<<10)
	chunks := 0
	var u *usage
	var content []byte // with content logging: the chunks as one JSON array
	if g.o.AuditContent {
		content = append(content, '[')
		defer func() { ex.response = append(content, ']') }()
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// An event longer than the buffer: pass it on in pieces.
			err = nil
		}
		if len(line) > 0 {
			if ex.ttft == 0 {
				ex.ttft = time.Since(ex.start)
			}
			if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = bytes.TrimSpace(data)
				if len(data) > 0 && !bytes.Equal(data, []byte("[DONE]")) {
					chunks++
					if content != nil && len(content) < maxContentBytes && json.Valid(data) {
						if len(content) > 1 {
							content = append(content, ',')
						}
						content = append(content, data...)
					}
					if uu := usageOf(data); uu != nil {
						u = uu
					}
				}
			}
			_ = rc.SetWriteDeadline(time.Now().Add(g.o.WriteTimeout))
			if _, werr := w.Write(line); werr != nil {
				return werr // the client went away: the caller cancels upstream
			}
			if len(line) <= 2 && (line[0] == '\n' || line[0] == '\r') {
				if ferr := rc.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			_ = rc.Flush()
			break
		}
		if err != nil {
			return err
		}
	}
	ex.countTokens(u, chunks)
	return nil
}

// relayBody passes a whole JSON response through, reading usage from it and
// narrowing a model list to the models the token may use.
func (g *Gateway) relayBody(w http.ResponseWriter, resp *http.Response, ex *exchange, rt route, tok *tokens.Token) error {
	body, err := readBody(resp, ex)
	if err != nil {
		return err
	}
	if u := usageOf(body); resp.StatusCode == http.StatusOK && u != nil {
		ex.promptTokens, ex.completionTokens = u.PromptTokens, u.CompletionTokens
	}
	if resp.StatusCode == http.StatusOK {
		if rt.filters && tok != nil && len(tok.Models) > 0 {
			body = filterModels(body, tok.Models)
		}
		if g.o.AuditContent {
			ex.response = capContent(body)
		}
	}
	return g.writeBody(w, resp, body)
}

// readBody reads a whole upstream answer, up to maxResponseBytes, and
// notes when it arrived as the exchange's time to first token.
func readBody(resp *http.Response, ex *exchange) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxResponseBytes {
		return nil, errors.New("upstream answer larger than 64 MiB")
	}
	ex.ttft = time.Since(ex.start)
	return body, nil
}

// writeBody sends a whole (possibly rewritten) upstream body to the client,
// with the upstream's status and headers and its own length.
func (g *Gateway) writeBody(w http.ResponseWriter, resp *http.Response, body []byte) error {
	copyHeaders(w, resp)
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(resp.StatusCode)
	// A client that reads slowly gets the write timeout, not a handler forever.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(g.o.WriteTimeout))
	_, err := w.Write(body)
	return err
}

// filterModels keeps the entries of an OpenAI model list whose id is
// allowed; a body it cannot read is replaced by an empty list.
func filterModels(body []byte, allowed []string) []byte {
	var list struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return []byte(`{"object":"list","data":[]}`)
	}
	kept := []json.RawMessage{}
	for _, m := range list.Data {
		var id struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &id) == nil && slices.Contains(allowed, id.ID) {
			kept = append(kept, m)
		}
	}
	out, _ := json.Marshal(map[string]any{"object": "list", "data": kept})
	return out
}

// isEventStream reports whether the upstream answers with SSE.
func isEventStream(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
}

// capContent keeps a body for the audit log when it is at most
// maxContentBytes, and otherwise only its size, so that no audit line grows
// past what audit verify reads.
func capContent(b []byte) []byte {
	if len(b) <= maxContentBytes {
		return b
	}
	return []byte(`{"omitted":"larger than 1 MiB","bytes":` + strconv.Itoa(len(b)) + `}`)
}
