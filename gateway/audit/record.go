// Package audit writes and verifies the gateway's audit log: one JSON line
// per request, fsynced, each line carrying the SHA-256 of the line before it,
// with ed25519-signed checkpoints over the chain head. It records who asked
// for what and how it went; it must never record a token's secret, and it
// records prompt or completion text only when the operator asks for it.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Purpose is the signature purpose of checkpoints, so a checkpoint signature
// can never pass as a manifest signature or the other way round.
const Purpose = "audit-checkpoint"

// Record kinds.
const (
	KindStart      = "start"      // the gateway opened the log
	KindRequest    = "request"    // one API request
	KindCheckpoint = "checkpoint" // a signature over the chain so far
	KindRotate     = "rotate"     // first line of a file after rotation
	KindStop       = "stop"       // the gateway closed the log cleanly
	KindRestore    = "restore"    // backup restore put this log back; Backup names the archive
	KindRepair     = "repair"     // the file ended in an incomplete line, now moved aside; Torn says where
)

// Record is one line of the audit log. Request fields are empty for the
// other kinds.
type Record struct {
	Seq  int64     `json:"seq"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	Prev string    `json:"prev"` // hex SHA-256 of the previous line; "" on the very first

	RequestID        string  `json:"requestId,omitempty"`
	TokenID          string  `json:"tokenId,omitempty"`
	Client           string  `json:"client,omitempty"`
	Method           string  `json:"method,omitempty"`
	Route            string  `json:"route,omitempty"`
	Model            string  `json:"model,omitempty"`
	Stream           bool    `json:"stream,omitempty"`
	Status           int     `json:"status,omitempty"`
	Error            string  `json:"error,omitempty"` // the error code answered, never internals
	LatencyMs        float64 `json:"latencyMs,omitempty"`
	TTFTMs           float64 `json:"ttftMs,omitempty"`
	PromptTokens     int     `json:"promptTokens,omitempty"`
	CompletionTokens int     `json:"completionTokens,omitempty"`
	// Content is the request body (and a non-streamed response body), kept
	// only when the operator turned content logging on.
	Content *Content `json:"content,omitempty"`
	// KB describes a knowledge-base event (the kb.* kinds).
	KB *KBEvent `json:"kb,omitempty"`

	KeyID     string               `json:"keyId,omitempty"`     // start, rotate: the checkpoint key
	PublicKey string               `json:"publicKey,omitempty"` // start, rotate: its public key text
	Previous  string               `json:"previous,omitempty"`  // rotate: the file this one follows
	Backup    string               `json:"backup,omitempty"`    // restore: the archive and its manifest hash
	Torn      *Torn                `json:"torn,omitempty"`      // repair: the incomplete line moved aside
	Signature *manifests.Signature `json:"signature,omitempty"` // checkpoint, stop
}

// Torn describes the incomplete last line a writer found and moved aside
// (Log.refresh): what a writer killed in the middle of a write, or a power
// loss, left. Its bytes stay in File, beside the log.
type Torn struct {
	File   string `json:"file"`   // its name, in the log's directory
	Bytes  int64  `json:"bytes"`  // its length
	SHA256 string `json:"sha256"` // the SHA-256 of its bytes, in hex
}

// Content is prompt and completion text, logged only on request.
type Content struct {
	Request  json.RawMessage `json:"request,omitempty"`
	Response json.RawMessage `json:"response,omitempty"`
}

// validUTF8 replaces invalid UTF-8 in r's strings with U+FFFD. encoding/json
// writes an invalid byte as the escape \ufffd, which reads back as U+FFFD
// and encodes again as that character's own bytes: a line holding one would
// never verify. Checking costs a scan of each string, which the encoder does
// anyway.
func (r *Record) validUTF8() {
	torn := new(string)
	if r.Torn != nil {
		torn = &r.Torn.File
	}
	for _, p := range [...]*string{&r.Kind, &r.Prev, &r.RequestID, &r.TokenID, &r.Client, &r.Method,
		&r.Route, &r.Model, &r.Error, &r.KeyID, &r.PublicKey, &r.Previous, &r.Backup, torn} {
		if !utf8.ValidString(*p) {
			*p = strings.ToValidUTF8(*p, "\uFFFD")
		}
	}
}

// lineHash is the chain hash of one line, without its newline.
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// signedText is what a checkpoint signs: its place in the chain and the hash
// of every line before it (through Prev).
func signedText(r *Record) []byte {
	return fmt.Appendf(nil, "kind=%s seq=%d prev=%s time=%s", r.Kind, r.Seq, r.Prev, r.Time.UTC().Format(time.RFC3339Nano))
}
