package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// route is one allowlisted API route. Only these paths are ever forwarded,
// and they are forwarded as these constants, never as the client's path.
type route struct {
	method  string
	path    string
	body    bool   // has a JSON body naming a model
	infer   bool   // spends GPU time (auditors may not)
	capGen  bool   // accepts max_tokens and n
	filters bool   // response lists models: filtered to the token's
	kb      bool   // answered from the knowledge base (see kb.go)
	up      string // the upstream path, when it is not path
}

// upstreamPath is where rt is forwarded.
func (rt route) upstreamPath() string {
	if rt.up != "" {
		return rt.up
	}
	return rt.path
}

var routes = map[string]route{
	"/v1/chat/completions": {method: http.MethodPost, path: "/v1/chat/completions", body: true, infer: true, capGen: true},
	"/v1/completions":      {method: http.MethodPost, path: "/v1/completions", body: true, infer: true, capGen: true},
	"/v1/embeddings":       {method: http.MethodPost, path: "/v1/embeddings", body: true, infer: true},
	"/v1/models":           {method: http.MethodGet, path: "/v1/models", filters: true},
	// Only when a knowledge base is configured (Options.KB); otherwise 404.
	"/v1/kb/chat/completions": {method: http.MethodPost, path: "/v1/kb/chat/completions", up: "/v1/chat/completions",
		body: true, infer: true, capGen: true, kb: true},
}

// apiRequest is a request body as the gateway read it: the values it
// checked, and the canonical body it forwards.
type apiRequest struct {
	model  string
	stream bool
	body   []byte  // canonical: re-encoded from the parsed values, never the client's bytes
	fields []field // the members body encodes, in order
	// clientLimit is whether the client set max_tokens or
	// max_completion_tokens (otherwise the gateway filled max_tokens in).
	clientLimit bool
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
// It parses data once (decodeObject), checks and caps the parsed values, and
// encodes them again as the body to forward. A null max_tokens, n or stream
// counts as absent.
func parseRequest(data []byte, rt route, maxTokens, maxN int) (*apiRequest, *apiError) {
	fields, err := decodeObject(data)
	if err != nil {
		var ce *jsonstrict.KeyError
		if errors.As(err, &ce) {
			return nil, &apiError{status: 400, typ: "invalid_request_error", code: "ambiguous_json",
				message: "request body is ambiguous: " + ce.Msg}
		}
		if errors.Is(err, jsonstrict.ErrTooDeep) {
			return nil, errInvalid("body", err.Error())
		}
		return nil, errBadJSON
	}
	req := &apiRequest{}
	hasLimit := false
	kept := fields[:0]
	for _, f := range fields {
		null := string(f.Value) == "null"
		switch f.Name {
		case "model":
			if f.Value[0] != '"' {
				return nil, errNoModel
			}
			m, _, _ := jsonstrict.Unquote(f.Value, 0) // canonical, so it decodes
			if len(m) == 0 {
				return nil, errNoModel
			}
			req.model = string(m)
		case "stream":
			switch string(f.Value) {
			case "null":
				continue
			case "true", "false":
				req.stream = f.Value[0] == 't'
			default:
				return nil, errInvalid("stream", "must be true or false")
			}
		case "max_tokens", "max_completion_tokens":
			if !rt.capGen {
				break
			}
			if null {
				continue
			}
			v, ok := positiveInt(f.Value)
			if !ok {
				return nil, errInvalid(f.Name, "must be a positive integer")
			}
			if v > maxTokens {
				return nil, errInvalid(f.Name, fmt.Sprintf("%d is more than this gateway allows (%d)", v, maxTokens))
			}
			hasLimit = true
		case "n":
			if !rt.capGen {
				break
			}
			if null {
				continue
			}
			n, ok := positiveInt(f.Value)
			if !ok {
				return nil, errInvalid("n", "must be a positive integer")
			}
			if n > maxN {
				return nil, errInvalid("n", fmt.Sprintf("%d is more than this gateway allows (%d)", n, maxN))
			}
		}
		kept = append(kept, f)
	}
	if req.model == "" {
		return nil, errNoModel
	}
	if rt.capGen && !hasLimit {
		kept = append(kept, field{Name: "max_tokens", Key: []byte(`"max_tokens":`), Value: strconv.AppendInt(nil, int64(maxTokens), 10)})
	}
	req.body, req.fields, req.clientLimit = encodeObject(kept), kept, hasLimit
	return req, nil
}

func jsonValid(b []byte) bool { return json.Valid(b) }
