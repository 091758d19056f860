package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// apiError is an error in the shape OpenAI clients parse:
// {"error":{"message":…,"type":…,"param":null,"code":…}}.
type apiError struct {
	status     int
	typ        string
	code       string
	message    string
	retryAfter time.Duration // sets Retry-After when > 0
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// Errors the gateway answers with. Messages say what the client can do;
// none of them carries upstream or host details.
var (
	errNoToken        = &apiError{status: 401, typ: "invalid_request_error", code: "invalid_api_key", message: "missing API token: send 'Authorization: Bearer TOKEN'"}
	errBadToken       = &apiError{status: 401, typ: "invalid_request_error", code: "invalid_api_key", message: "invalid, expired or revoked API token"}
	errForbiddenRole  = &apiError{status: 403, typ: "permission_error", code: "insufficient_role", message: "this token's role may not use this route"}
	errNotFound       = &apiError{status: 404, typ: "invalid_request_error", code: "unknown_url", message: "unknown route; the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models"}
	errMethod         = &apiError{status: 405, typ: "invalid_request_error", code: "method_not_allowed", message: "method not allowed for this route"}
	errTooLarge       = &apiError{status: 413, typ: "invalid_request_error", code: "request_too_large", message: "request body is larger than the gateway allows"}
	errBadJSON        = &apiError{status: 400, typ: "invalid_request_error", code: "invalid_json", message: "request body must be a JSON object"}
	errNoModel        = &apiError{status: 400, typ: "invalid_request_error", code: "model_required", message: "request must name a model"}
	errUpstream       = &apiError{status: 502, typ: "api_error", code: "upstream_error", message: "the model server failed to answer; try again"}
	errUpstreamTime   = &apiError{status: 504, typ: "api_error", code: "upstream_timeout", message: "the model server did not answer in time"}
	errAuditFailed    = &apiError{status: 503, typ: "api_error", code: "audit_unavailable", message: "the gateway cannot write its audit log; requests are refused until it can"}
	errBusy           = &apiError{status: 503, typ: "api_error", code: "server_busy", message: "too many requests in progress; retry shortly", retryAfter: time.Second}
	errUnsupportedCTE = &apiError{status: 415, typ: "invalid_request_error", code: "unsupported_media_type", message: "send the body as application/json"}
)

func errModelForbidden(model string) *apiError {
	return &apiError{status: 403, typ: "permission_error", code: "model_not_allowed", message: "this token may not use model " + strconv.Quote(model)}
}

func errInvalid(param, msg string) *apiError {
	return &apiError{status: 400, typ: "invalid_request_error", code: "invalid_value", message: param + ": " + msg}
}

func errRateLimited(what string, after time.Duration) *apiError {
	return &apiError{status: 429, typ: "rate_limit_error", code: "rate_limit_exceeded", message: what + " limit reached; retry after the time in Retry-After", retryAfter: after}
}

// write answers e as JSON.
func (e *apiError) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.retryAfter > 0 {
		secs := int((e.retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	w.WriteHeader(e.status)
	body := map[string]any{"error": map[string]any{"message": e.message, "type": e.typ, "param": nil, "code": e.code}}
	_ = json.NewEncoder(w).Encode(body)
}
