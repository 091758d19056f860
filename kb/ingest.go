package kb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Document is one document to store: its extracted sections and what the
// knowledge base records about it.
type Document struct {
	Title      string
	Source     string // where it came from (a path); with Collection, its identity
	Collection string
	Format     string // markdown, text, html, docx, pdf
	Class      Class
	Allow      []Principal
	Raw        []byte // the file as read, for its SHA-256 and size
	Sections   []Section
}

// IngestResult says what Put did with a document.
type IngestResult struct {
	DocID     int64  `json:"doc"`
	Version   int    `json:"version"`
	Chunks    int    `json:"chunks"`
	Flagged   int    `json:"flagged"`
	SHA256    string `json:"sha256"`
	Unchanged bool   `json:"unchanged,omitempty"` // same content as the stored version: only class, title and access were set
	TextBytes int    `json:"textBytes"`           // extracted text indexed
}

// Put stores d in one transaction: a new document gets version 1; a
// document with the same collection and source gets the next version, its
// old chunks replaced; the same content again keeps its version and chunks
// and only takes d's title, class and access list. Either all of it becomes
// visible or none of it does.
func (k *DB) Put(ctx context.Context, d Document, o ChunkOptions) (res IngestResult, err error) {
	if len(d.Allow) == 0 {
		return res, errors.New("ingest: the access list is empty")
	}
	if d.Class < Public || d.Class > Secret {
		return res, fmt.Errorf("ingest: %v", d.Class)
	}
	sum := sha256.Sum256(d.Raw)
	res.SHA256 = hex.EncodeToString(sum[:])
	if d.Title == "" {
		d.Title = d.Source
	}
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("ingest %s: %w", d.Source, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var oldSum string
	err = k.queryRow(ctx, tx, `SELECT id, version, sha256 FROM documents WHERE collection = ? AND source = ?`,
		d.Collection, d.Source).Scan(&res.DocID, &res.Version, &oldSum)
	now := time.Now().UTC().Format(time.RFC3339)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		res.Version = 1
		r, err := k.exec(ctx, tx, `INSERT INTO documents (title, source, collection, format, sha256, content, version, size, class, ingested)
			VALUES (?, ?, ?, ?, ?, '', 1, ?, ?, ?)`, d.Title, d.Source, d.Collection, d.Format, res.SHA256, len(d.Raw), int(d.Class), now)
		if err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
		if res.DocID, err = r.LastInsertId(); err != nil {
			return res, err
		}
	case err != nil:
		return res, fmt.Errorf("ingest %s: %w", d.Source, err)
	case oldSum == res.SHA256:
		res.Unchanged = true
		if _, err := k.exec(ctx, tx, `UPDATE documents SET title = ?, class = ?, format = ? WHERE id = ?`,
			d.Title, int(d.Class), d.Format, res.DocID); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
	default:
		res.Version++
		if _, err := k.exec(ctx, tx, `UPDATE documents SET title = ?, format = ?, sha256 = ?, version = ?, size = ?, class = ?, ingested = ? WHERE id = ?`,
			d.Title, d.Format, res.SHA256, res.Version, len(d.Raw), int(d.Class), now, res.DocID); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
		if err := deleteChunks(ctx, k, tx, res.DocID); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
	}
	if err := setACL(ctx, k, tx, res.DocID, d.Allow); err != nil {
		return res, fmt.Errorf("ingest %s: %w", d.Source, err)
	}
	if !res.Unchanged {
		chunks := Split(d.Sections, o)
		if err := insertChunks(ctx, k, tx, res.DocID, chunks, &res); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
		if _, err := k.exec(ctx, tx, `UPDATE documents SET content = ? WHERE id = ?`, contentHash(chunks), res.DocID); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
	} else if err := k.queryRow(ctx, tx, `SELECT count(*), coalesce(sum(flagged), 0), coalesce(sum(length(text)), 0) FROM chunks WHERE doc = ?`,
		res.DocID).Scan(&res.Chunks, &res.Flagged, &res.TextBytes); err != nil {
		return res, fmt.Errorf("ingest %s: %w", d.Source, err)
	}
	// The access list was set either way; the terms changed unless the
	// content is the same.
	if err := bump(ctx, k, tx, "acl_generation"); err != nil {
		return res, fmt.Errorf("ingest %s: %w", d.Source, err)
	}
	if !res.Unchanged {
		if err := bump(ctx, k, tx, "generation"); err != nil {
			return res, fmt.Errorf("ingest %s: %w", d.Source, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("ingest %s: commit: %w", d.Source, err)
	}
	return res, nil
}

// chunkBatch is how many chunks one INSERT writes: a statement per row
// cost more than the rows themselves. The rest of a document's chunks go
// one by one, so that only two statements are ever prepared.
const chunkBatch = 8

func insertChunks(ctx context.Context, k *DB, tx *sql.Tx, doc int64, chunks []Chunk, res *IngestResult) error {
	args := make([]any, 0, 6*chunkBatch)
	for len(chunks) > 0 {
		n := 1
		if len(chunks) >= chunkBatch {
			n = chunkBatch
		}
		args = args[:0]
		for _, c := range chunks[:n] {
			args = append(args, doc, c.Ordinal, c.Heading, c.Page, c.Text, c.Flagged)
			res.Chunks++
			res.TextBytes += len(c.Text)
			if c.Flagged {
				res.Flagged++
			}
		}
		chunks = chunks[n:]
		q := `INSERT INTO chunks (doc, ordinal, heading, page, text, flagged) VALUES (?, ?, ?, ?, ?, ?)` +
			strings.Repeat(`, (?, ?, ?, ?, ?, ?)`, n-1)
		if _, err := k.exec(ctx, tx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

func deleteChunks(ctx context.Context, k *DB, tx *sql.Tx, doc int64) error {
	_, err := k.exec(ctx, tx, `DELETE FROM chunks WHERE doc = ?`, doc)
	return err
}

func setACL(ctx context.Context, k *DB, tx *sql.Tx, doc int64, allow []Principal) error {
	if _, err := k.exec(ctx, tx, `DELETE FROM acl WHERE doc = ?`, doc); err != nil {
		return err
	}
	for _, p := range allow {
		if _, err := ParsePrincipal(string(p)); err != nil {
			return err
		}
		if _, err := k.exec(ctx, tx, `INSERT INTO acl (doc, principal) VALUES (?, ?)`, doc, string(p)); err != nil {
			return err
		}
	}
	return nil
}

// bump advances a generation counter in the same transaction as the write
// it announces, so a reader never sees the write without the new count.
func bump(ctx context.Context, k *DB, tx *sql.Tx, key string) error {
	_, err := k.exec(ctx, tx, `UPDATE meta SET value = value + 1 WHERE key = ?`, key)
	return err
}

// contentHash is the SHA-256 over a document's chunks (ordinal, heading,
// page, flag and text of each, length-prefixed), kept with the document so
// that Check can tell whether the stored chunks were changed afterwards.
func contentHash(chunks []Chunk) string {
	h := sha256.New()
	for _, c := range chunks {
		fmt.Fprintf(h, "%d\x00%d:%s\x00%d\x00%t\x00%d:%s\x00", c.Ordinal, len(c.Heading), c.Heading, c.Page, c.Flagged, len(c.Text), c.Text)
	}
	return hex.EncodeToString(h.Sum(nil))
}
