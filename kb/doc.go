// Package kb is the appliance's knowledge base: documents ingested from
// files, cut into chunks, and searched lexically with an understanding of
// Chinese text, each document readable only by the principals on its access
// list and at or below the caller's clearance. The gateway and the CLI share
// it, for search and for cited answers (BuildPrompt: numbered context from
// the readable chunks, or a not-found answer without calling the model).
//
// It must never return, count or reveal a chunk the caller may not read:
// access is checked inside the index query, before ranking and before the
// result limit, and a document without an access list is invisible.
package kb
