package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/kb"
)

// exchange is what the gateway learns about one request; it becomes one
// audit line and one set of metric observations.
type exchange struct {
	start            time.Time
	requestID        string
	tokenID          string
	client           string
	method           string
	path             string // as asked, for the audit log (truncated)
	route            string // allowlisted route or "other", for metrics
	model            string
	stream           bool
	status           int
	errCode          string
	latency, ttft    time.Duration
	promptTokens     int
	completionTokens int
	request          []byte // only with content logging
	response         []byte
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := [len("req_") + 2*len(b)]byte{'r', 'e', 'q', '_'}
	hex.Encode(id[4:], b[:])
	return string(id[:])
}

// securityHeaders go on every answer. The value slices are shared between
// requests, which is safe because net/http never appends to or changes
// them in place (Header.Add on a full slice copies it).
var (
	securityHeaders = []struct {
		name  string
		value []string
	}{
		{"X-Content-Type-Options", []string{"nosniff"}},
		{"X-Frame-Options", []string{"DENY"}},
		{"Content-Security-Policy", []string{"default-src 'none'; frame-ancestors 'none'"}},
		{"Referrer-Policy", []string{"no-referrer"}},
		{"Cache-Control", []string{"no-store"}},
	}
	hstsHeader = []string{"max-age=31536000; includeSubDomains"}
)

// serveAPI is the gateway's whole request path: throttle, authenticate,
// authorize, limit, forward, account.
func (g *Gateway) serveAPI(w http.ResponseWriter, r *http.Request) {
	g.active.Add(1)
	defer g.active.Done()
	ex := &exchange{start: time.Now(), requestID: newRequestID(), client: r.RemoteAddr, method: r.Method,
		path: auditString(r.URL.Path, 200), route: "other"}
	h := w.Header()
	h["X-Request-Id"] = []string{ex.requestID}
	for _, sh := range securityHeaders {
		h[sh.name] = sh.value
	}
	if r.TLS != nil {
		h["Strict-Transport-Security"] = hstsHeader
	}
	defer g.finish(ex)

	if err := g.audit.Err(); err != nil {
		g.fail(w, ex, errAuditFailed)
		return
	}
	tok, aerr := g.authenticate(r, ex)
	if aerr != nil {
		g.fail(w, ex, aerr)
		return
	}
	rt, ok := routes[r.URL.Path]
	if !ok || rt.kb && g.kb == nil {
		g.fail(w, ex, errNotFound)
		return
	}
	ex.route = rt.path
	if r.Method != rt.method {
		g.fail(w, ex, errMethod)
		return
	}
	if rt.infer && tok.Role == tokens.RoleAuditor {
		g.fail(w, ex, errForbiddenRole)
		return
	}
	var req *apiRequest
	if rt.body {
		if req, aerr = g.readRequest(w, r, rt); aerr != nil {
			g.fail(w, ex, aerr)
			return
		}
		ex.model, ex.stream = req.model, req.stream
		if g.o.AuditContent {
			ex.request = capContent(req.body)
		}
		if !tok.AllowsModel(req.model) {
			g.fail(w, ex, errModelForbidden(req.model))
			return
		}
	}
	now := time.Now()
	if ok, wait := g.rate.take(tok.ID, float64(tok.RPM), 1, now); !ok {
		g.metrics.limited.WithLabelValues(tok.ID, "rpm").Inc()
		g.fail(w, ex, errRateLimited("request", wait))
		return
	}
	if ok, wait := g.tpm.take(tok.ID, float64(tok.TPM), 0, now); rt.infer && !ok {
		g.metrics.limited.WithLabelValues(tok.ID, "tpm").Inc()
		g.fail(w, ex, errRateLimited("token", wait))
		return
	}
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.metrics.limited.WithLabelValues(tok.ID, "concurrency").Inc()
		g.fail(w, ex, errBusy)
		return
	}
	g.metrics.inflight.Inc()
	defer g.metrics.inflight.Dec()
	var kbp *kb.Prompt
	if rt.kb {
		if kbp, aerr = g.serveKB(r.Context(), ex, req, tok); aerr != nil {
			g.fail(w, ex, aerr)
			return
		}
		if kbp.NotFound != "" {
			g.writeNotFound(w, ex, req, kbp)
			return
		}
	}
	g.forward(w, r, ex, rt, req, tok, kbp)
	g.tpm.charge(tok.ID, float64(tok.TPM), float64(ex.promptTokens+ex.completionTokens), time.Now())
}

// authenticate checks the bearer token; a client address with too many
// recent failures is refused before its token is even looked at.
func (g *Gateway) authenticate(r *http.Request, ex *exchange) (*tokens.Token, *apiError) {
	ip := clientIP(r.RemoteAddr)
	limit := float64(g.o.AuthFailures)
	now := time.Now()
	if ok, wait := g.failures.take(ip, limit, 0, now); !ok {
		g.metrics.authFail.WithLabelValues("throttled").Inc()
		return nil, errRateLimited("failed-authentication", wait)
	}
	fail := func(reason string, e *apiError) (*tokens.Token, *apiError) {
		g.failures.charge(ip, limit, 1, now)
		g.metrics.authFail.WithLabelValues(reason).Inc()
		return nil, e
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return fail("missing", errNoToken)
	}
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return fail("malformed", errBadToken)
	}
	t, err := g.tokens.Load().Authenticate(strings.TrimSpace(tok), now)
	if errors.Is(err, tokens.ErrUnknown) {
		// A token created a moment ago works at once: look at the file
		// before refusing (a stat, and a parse only when it changed).
		if rerr := g.reloadTokens(false); rerr == nil {
			t, err = g.tokens.Load().Authenticate(strings.TrimSpace(tok), now)
		}
	}
	if t != nil {
		ex.tokenID = t.ID
	}
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, tokens.ErrMalformed):
		return fail("malformed", errBadToken)
	case errors.Is(err, tokens.ErrRevoked):
		return fail("revoked", errBadToken)
	case errors.Is(err, tokens.ErrExpired):
		return fail("expired", errBadToken)
	default:
		return fail("unknown", errBadToken)
	}
}

// forward sends the request upstream and relays the answer. The upstream
// request lives in the client's context, so a client that goes away
// cancels it, and must end within UpstreamTimeout.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, ex *exchange, rt route, req *apiRequest, tok *tokens.Token, kbp *kb.Prompt) {
	ctx := r.Context()
	up := g.upstream.Load() // one upstream for the whole exchange, retries included
	ureq := &upRequest{method: rt.method, path: rt.upstreamPath(), host: up.host, requestID: ex.requestID, accept: "application/json"}
	if req != nil {
		ureq.body = req.body
		if req.stream {
			ureq.accept = "text/event-stream"
		}
	}
	resp, err := up.pool.do(ctx, ureq, time.Now().Add(g.o.UpstreamTimeout))
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			ex.status, ex.errCode = 499, "client_closed"
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			g.metrics.upstreamErr.WithLabelValues("timeout").Inc()
			g.fail(w, ex, errUpstreamTime)
		default:
			g.metrics.upstreamErr.WithLabelValues("connect").Inc()
			g.o.Log.Warn("upstream request failed", "request", ex.requestID, "err", err)
			g.fail(w, ex, errUpstream)
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		g.metrics.upstreamErr.WithLabelValues("status").Inc()
		g.o.Log.Warn("upstream answered an error", "request", ex.requestID, "status", resp.StatusCode)
		g.fail(w, ex, errUpstream)
		return
	}
	ex.status = resp.StatusCode
	if resp.StatusCode >= 400 && !isOpenAIError(resp) {
		g.fail(w, ex, &apiError{status: resp.StatusCode, typ: "invalid_request_error", code: "upstream_rejected", message: "the model server rejected the request"})
		return
	}
	switch {
	case kbp != nil && isEventStream(resp):
		err = g.relayKBStream(w, resp, ex, kbp)
	case kbp != nil:
		err = g.relayKBBody(w, resp, ex, kbp)
	case isEventStream(resp):
		err = g.relayStream(w, resp, ex)
	default:
		err = g.relayBody(w, resp, ex, rt, tok)
	}
	if err != nil {
		if r.Context().Err() != nil {
			ex.errCode = "client_closed"
		} else {
			ex.errCode = "relay_failed"
			g.metrics.upstreamErr.WithLabelValues("relay").Inc()
		}
	}
}

// isOpenAIError peeks whether an upstream 4xx answer is an OpenAI error
// object (which is passed on); anything else is replaced.
func isOpenAIError(resp *http.Response) bool {
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return false
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(data), resp.Body), resp.Body}
	return err == nil && bytes.Contains(data, []byte(`"error"`))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (g *Gateway) fail(w http.ResponseWriter, ex *exchange, e *apiError) {
	ex.status, ex.errCode = e.status, e.code
	e.write(w)
}

// finish records the exchange in the audit log and the metrics.
func (g *Gateway) finish(ex *exchange) {
	ex.latency = time.Since(ex.start)
	g.metrics.observe(ex)
	rec := audit.Record{
		Time: ex.start, RequestID: ex.requestID, TokenID: ex.tokenID, Client: ex.client, Method: ex.method,
		Route: ex.path, Model: ex.model, Stream: ex.stream, Status: ex.status, Error: ex.errCode,
		LatencyMs: float64(ex.latency.Microseconds()) / 1000, TTFTMs: float64(ex.ttft.Microseconds()) / 1000,
		PromptTokens: ex.promptTokens, CompletionTokens: ex.completionTokens,
	}
	if g.o.AuditContent && (ex.request != nil || ex.response != nil) {
		rec.Content = &audit.Content{Request: validJSON(ex.request), Response: validJSON(ex.response)}
	}
	g.audit.Append(rec)
}

func validJSON(b []byte) []byte {
	if len(b) == 0 || !jsonValid(b) {
		return nil
	}
	return b
}

func clientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// auditString makes a client-supplied string fit for the audit log: invalid
// UTF-8 becomes U+FFFD, and a string longer than n bytes is cut at the last
// character boundary at or before n. The log must store exactly what it
// encodes: encoding/json writes invalid bytes as \ufffd escapes, which read
// back as U+FFFD and encode again as other bytes, and audit verify would
// call the line edited.
func auditString(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
