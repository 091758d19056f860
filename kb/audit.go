package kb

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
)

// Auditor receives the knowledge base's audit events; *audit.Log is one.
type Auditor interface{ Append(audit.Record) }

// SetAuditor makes k report kb.ingest, kb.acl, kb.remove and kb.query
// events to a (nil: none). Set it before use.
func (k *DB) SetAuditor(a Auditor) { k.audit = a }

func (k *DB) auditQuery(q Query, hits []Hit, denied int) {
	if k.audit == nil {
		return
	}
	ev := &audit.KBEvent{Principals: q.Caller.principals(), Clearance: q.Caller.Clearance.String(),
		QueryHash: k.QueryHash(q.Text), Filtered: denied}
	for _, h := range hits {
		ev.Results = append(ev.Results, audit.KBHit{Chunk: h.Chunk, Doc: h.Doc, Version: h.Version})
	}
	k.audit.Append(audit.Record{Kind: audit.KindKBQuery, TokenID: q.TokenID, KB: ev})
}

func (k *DB) auditDoc(kind string, res IngestResult, source string, class Class, allow []Principal) {
	if k.audit == nil {
		return
	}
	ps := make([]string, len(allow))
	for i, p := range allow {
		ps[i] = string(p)
	}
	k.audit.Append(audit.Record{Kind: kind, KB: &audit.KBEvent{Principals: ps, Clearance: class.String(),
		Doc: res.DocID, Version: res.Version, SHA256: res.SHA256, Source: source, Chunks: res.Chunks}})
}

// QueryHash is how the audit log names a query: an HMAC-SHA-256 of its text
// under a random key kept in the database, so that equal questions can be
// correlated without recording them, and a reader of the log alone cannot
// test guesses of what was asked.
func (k *DB) QueryHash(text string) string {
	m := hmac.New(sha256.New, k.hashKey)
	m.Write([]byte(text))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}
