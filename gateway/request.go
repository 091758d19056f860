package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// route is one allowlisted API route. Only these paths are ever forwarded,
// and they are forwarded as these constants, never as the client's path.
type route struct {
	method  string
	path    string
	body    bool // has a JSON body naming a model
	infer   bool // spends GPU time (auditors may not)
	capGen  bool // accepts max_tokens and n
	filters bool // response lists models: filtered to the token's
}

var routes = map[string]route{
	"/v1/chat/completions": {method: http.MethodPost, path: "/v1/chat/completions", body: true, infer: true, capGen: true},
	"/v1/completions":      {method: http.MethodPost, path: "/v1/completions", body: true, infer: true, capGen: true},
	"/v1/embeddings":       {method: http.MethodPost, path: "/v1/embeddings", body: true, infer: true},
	"/v1/models":           {method: http.MethodGet, path: "/v1/models", filters: true},
}

// apiRequest is what the gateway reads from a request body: enough to
// authorize and cap it. Every other field passes through untouched.
type apiRequest struct {
	fields map[string]json.RawMessage
	model  string
	stream bool
	body   []byte // as forwarded
}

// readRequest reads and checks the JSON body of rt, filling in max_tokens
// when the client left it out, so that no request generates without bound.
func (g *Gateway) readRequest(w http.ResponseWriter, r *http.Request, rt route) (*apiRequest, *apiError) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return nil, errUnsupportedCTE
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.o.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, errInvalid("body", "could not be read")
	}
	return parseRequest(data, rt, g.o.MaxTokens, g.o.MaxN)
}

// parseRequest is readRequest's pure part; FuzzParseRequest exercises it.
func parseRequest(data []byte, rt route, maxTokens, maxN int) (*apiRequest, *apiError) {
	req := &apiRequest{body: data}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&req.fields); err != nil || req.fields == nil {
		return nil, errBadJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errBadJSON
	}
	if err := json.Unmarshal(req.fields["model"], &req.model); err != nil || req.model == "" {
		return nil, errNoModel
	}
	if raw, ok := req.fields["stream"]; ok {
		if err := json.Unmarshal(raw, &req.stream); err != nil {
			return nil, errInvalid("stream", "must be true or false")
		}
	}
	if !rt.capGen {
		return req, nil
	}
	changed := false
	for _, name := range []string{"max_tokens", "max_completion_tokens"} {
		raw, ok := req.fields[name]
		if !ok || string(raw) == "null" {
			continue
		}
		var v int
		if err := json.Unmarshal(raw, &v); err != nil || v < 1 {
			return nil, errInvalid(name, "must be a positive integer")
		}
		if v > maxTokens {
			return nil, errInvalid(name, fmt.Sprintf("%d is more than this gateway allows (%d)", v, maxTokens))
		}
	}
	if isNull(req.fields["max_tokens"]) && isNull(req.fields["max_completion_tokens"]) {
		req.fields["max_tokens"] = json.RawMessage(fmt.Sprint(maxTokens))
		changed = true
	}
	if raw, ok := req.fields["n"]; ok && !isNull(raw) {
		var n int
		if err := json.Unmarshal(raw, &n); err != nil || n < 1 {
			return nil, errInvalid("n", "must be a positive integer")
		}
		if n > maxN {
			return nil, errInvalid("n", fmt.Sprintf("%d is more than this gateway allows (%d)", n, maxN))
		}
	}
	if changed {
		b, err := json.Marshal(req.fields)
		if err != nil {
			return nil, errBadJSON
		}
		req.body = b
	}
	return req, nil
}

func isNull(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

func jsonValid(b []byte) bool { return json.Valid(b) }
