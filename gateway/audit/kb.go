package audit

// Knowledge-base record kinds (package kb writes them).
const (
	KindKBIngest = "kb.ingest" // a document stored or replaced
	KindKBACL    = "kb.acl"    // a document's access list or class changed
	KindKBRemove = "kb.remove" // a document removed
	KindKBQuery  = "kb.query"  // a search
)

// KBEvent is the knowledge-base part of a record. It never holds query or
// document text: a query is named by a keyed hash, documents by ID, version
// and content hash.
type KBEvent struct {
	Principals []string `json:"principals,omitempty"` // the caller's (query) or the new access list (ingest, acl)
	Clearance  string   `json:"clearance,omitempty"`  // query: the caller's; ingest, acl: the document's class
	QueryHash  string   `json:"queryHash,omitempty"`
	Results    []KBHit  `json:"results,omitempty"`
	Filtered   int      `json:"filtered,omitempty"` // query: matching chunks skipped as unreadable (a count only)
	// ModelCalled is set on the query event of an answer (the gateway's
	// /v1/kb/chat/completions, 'kb ask'): whether the chunks went to the
	// model, or the not-found answer was given without calling it.
	ModelCalled *bool  `json:"modelCalled,omitempty"`
	Doc         int64  `json:"doc,omitempty"`
	Version     int    `json:"version,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
	Source      string `json:"source,omitempty"`
	Chunks      int    `json:"chunks,omitempty"`
}

// KBHit names one returned chunk and the document version it came from.
type KBHit struct {
	Chunk   int64 `json:"chunk"`
	Doc     int64 `json:"doc"`
	Version int   `json:"version"`
}
