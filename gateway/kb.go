package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/kb"
)

// The knowledge-base route, POST /v1/kb/chat/completions: a chat completion
// answered from the documents the token may read. It passes every check the
// other inference routes pass (token, rate limits, model allowlist, body
// canonicalization), then:
//
//   - reads the token's knowledge-base roles and clearance from the token
//     file now, so a changed or revoked token counts at once; a token with
//     no role (tokens create --roles) may not use the route;
//   - retrieves, inside the index, only chunks the token may read
//     (kb.BuildPrompt), and puts them first in the conversation as numbered
//     data blocks;
//   - answers not-found without calling the model when nothing relevant is
//     readable: the same bytes, by the same path, whether the documents do
//     not exist or the token may not read them;
//   - strips citations of blocks that were never given, and adds a
//     citations array (in a stream, as the last event before [DONE]);
//   - writes one kb.query audit event, linked to the request line by the
//     request ID, without question, chunk or answer text unless content
//     logging is on.

var (
	errNoKBRole     = &apiError{status: 403, typ: "permission_error", code: "kb_access_required", message: "this token has no knowledge-base role; an administrator gives it one with 'qwen-appliance tokens create --roles ROLE'"}
	errKBUnavail    = &apiError{status: 503, typ: "api_error", code: "kb_unavailable", message: "the knowledge base cannot be read now; try again"}
	errKBOneChoice  = &apiError{status: 400, typ: "invalid_request_error", code: "invalid_value", message: "n: the knowledge-base route answers with one choice"}
	errKBNoQuestion = &apiError{status: 400, typ: "invalid_request_error", code: "invalid_value", message: "messages: the conversation needs a user message with text"}
)

// kbCaller reads what token id may read from the token file as it is now.
// A token the file no longer lists as active is refused like a bad token.
func (g *Gateway) kbCaller(id string, now time.Time) (*tokens.Token, kb.Caller, *apiError) {
	// The file as it is now: one stat, and a parse only when it changed
	// (tokens.Update replaces the file, so every change is a new file).
	if err := g.reloadTokens(false); err != nil {
		g.o.Log.Warn("token file unreadable for a knowledge-base request", "err", err)
		return nil, kb.Caller{}, errKBUnavail
	}
	t := g.tokens.Load().Find(id)
	if t == nil || t.State(now) != "active" {
		return nil, kb.Caller{}, errBadToken
	}
	if len(t.Roles) == 0 {
		return nil, kb.Caller{}, errNoKBRole
	}
	c, err := kb.CallerOf(t)
	if err != nil {
		return nil, kb.Caller{}, errNoKBRole
	}
	return t, c, nil
}

// kbMessage is a chat message as the route reads it for retrieval.
type kbMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// parseKBRequest reads the conversation of a canonical request: its
// messages (kept whole, as canonical JSON, to be forwarded after the
// gateway's system message), the text of each for retrieval, the reserve
// for the answer (max_tokens or max_completion_tokens), and refuses n > 1.
// FuzzParseKBRequest exercises it.
func parseKBRequest(req *apiRequest) (msgs []json.RawMessage, turns []kb.Turn, reserve int, aerr *apiError) {
	var haveMsgs bool
	for _, f := range req.fields {
		switch f.Name {
		case "messages":
			haveMsgs = true
			if err := json.Unmarshal(f.Value, &msgs); err != nil || len(msgs) == 0 {
				return nil, nil, 0, errInvalid("messages", "must be a non-empty array of messages")
			}
			for i, raw := range msgs {
				var m kbMessage
				if err := json.Unmarshal(raw, &m); err != nil || m.Role == "" {
					return nil, nil, 0, errInvalid("messages", fmt.Sprintf("message %d must be an object with a role", i))
				}
				text, ok := contentText(m.Content)
				if !ok {
					return nil, nil, 0, errInvalid("messages", fmt.Sprintf("message %d: content must be a string or an array of parts", i))
				}
				turns = append(turns, kb.Turn{Role: m.Role, Text: text})
			}
		case "max_tokens", "max_completion_tokens":
			if n, ok := positiveInt(f.Value); ok {
				reserve = max(reserve, n)
			}
		case "n":
			if n, ok := positiveInt(f.Value); ok && n > 1 {
				return nil, nil, 0, errKBOneChoice
			}
		}
	}
	if !haveMsgs {
		return nil, nil, 0, errInvalid("messages", "required")
	}
	return msgs, turns, reserve, nil
}

// contentText reads a message's content: a string, null, or an array of
// parts whose text parts are joined.
func contentText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", false
	}
	for _, p := range parts {
		if p.Type == "text" {
			s += p.Text + "\n"
		}
	}
	return s, true
}

// kbBody is the request forwarded upstream: the client's fields as the
// gateway encoded them, with the gateway's system message first in
// messages and max_tokens set to the reserve the budget kept.
func kbBody(req *apiRequest, msgs []json.RawMessage, system string, reserve int) []byte {
	sys, _ := json.Marshal(map[string]string{"role": "system", "content": system})
	list := append([]byte{'['}, sys...)
	for _, m := range msgs {
		list = append(append(list, ','), m...)
	}
	list = append(list, ']')
	fields := make([]field, 0, len(req.fields))
	for _, f := range req.fields {
		switch f.Name {
		case "messages":
			f.Value = list
		case "max_tokens":
			if !req.clientLimit {
				f.Value = strconv.AppendInt(nil, int64(reserve), 10)
			}
		}
		fields = append(fields, f)
	}
	return encodeObject(fields)
}

// serveKB answers one knowledge-base request; serveAPI has authenticated,
// limited and parsed it.
func (g *Gateway) serveKB(ctx context.Context, ex *exchange, req *apiRequest, tok *tokens.Token) (*kb.Prompt, *apiError) {
	t, caller, aerr := g.kbCaller(tok.ID, time.Now())
	if aerr != nil {
		return nil, aerr
	}
	msgs, turns, reserve, aerr := parseKBRequest(req)
	if aerr != nil {
		return nil, aerr
	}
	if !req.clientLimit {
		reserve = min(g.o.MaxTokens, g.o.KBContextTokens/4)
	}
	k, done, err := g.kb.Acquire()
	if err != nil {
		g.o.Log.Warn("knowledge base not available", "request", ex.requestID, "err", err)
		g.metrics.kbOutcome(t.Roles, "error")
		return nil, errKBUnavail
	}
	defer done()
	start := time.Now()
	p, err := k.BuildPrompt(ctx, caller, turns, kb.PromptOptions{ContextTokens: g.o.KBContextTokens, ReserveTokens: reserve,
		NotFoundZH: g.o.KBNotFoundZH, NotFoundEN: g.o.KBNotFoundEN})
	g.metrics.kbRetrieval.Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, kb.ErrNoQuestion):
		return nil, errKBNoQuestion
	case errors.Is(err, kb.ErrNoRoom):
		g.metrics.kbDecisions.WithLabelValues("no_room").Inc()
		return nil, &apiError{status: 400, typ: "invalid_request_error", code: "context_length_exceeded",
			message: fmt.Sprintf("the conversation and max_tokens %d leave no room for knowledge-base context in the model's %d-token context; send fewer or shorter messages or a smaller max_tokens", reserve, g.o.KBContextTokens)}
	case err != nil:
		g.o.Log.Warn("knowledge-base retrieval failed", "request", ex.requestID, "err", err)
		g.metrics.kbOutcome(t.Roles, "error")
		return nil, errKBUnavail
	}
	g.metrics.kbDecisions.WithLabelValues(p.Decision).Inc()
	g.metrics.kbContext.Observe(float64(p.ContextTokens))
	called := p.NotFound == ""
	ev := k.AuditEvent(p, called)
	rec := audit.Record{Kind: audit.KindKBQuery, RequestID: ex.requestID, TokenID: tok.ID, KB: ev}
	if g.o.AuditContent {
		c, _ := json.Marshal(map[string]any{"query": p.Query, "context": p.Texts()})
		rec.Content = &audit.Content{Request: c}
	}
	g.audit.Append(rec)
	if !called {
		g.metrics.kbOutcome(t.Roles, "not_found")
		return p, nil
	}
	g.metrics.kbOutcome(t.Roles, "answered")
	req.body = kbBody(req, msgs, p.System, reserve)
	return p, nil
}

// kbOutcome counts one knowledge-base query for each of the token's roles.
func (m *metrics) kbOutcome(roles []string, outcome string) {
	for _, r := range slices.Compact(slices.Sorted(slices.Values(roles))) {
		m.kbQueries.WithLabelValues(r, outcome).Inc()
	}
}
