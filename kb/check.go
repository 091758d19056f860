package kb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Problem is one finding of Check.
type Problem struct {
	Check  string `json:"check"` // acl, mode, location, content
	Detail string `json:"detail"`
}

// CheckOptions say what Check compares against.
type CheckOptions struct {
	// Store is the encrypted store's directory; the database must be
	// inside it ("" skips the location check).
	Store string
	// UID is the owner the database file must have (-1 skips the check).
	UID int
}

// Check audits the knowledge base for verify: every document has an access
// list; the file and its directory admit nobody but the owner, who is
// o.UID; the file lies inside o.Store; and every document's stored chunks
// still hash to what was recorded at ingest. It returns the problems found;
// the error is for a database that cannot be read at all.
func (k *DB) Check(ctx context.Context, o CheckOptions) ([]Problem, error) {
	var out []Problem
	add := func(check, format string, args ...any) {
		out = append(out, Problem{check, fmt.Sprintf(format, args...)})
	}
	rows, err := k.db.QueryContext(ctx, `SELECT id FROM documents d WHERE NOT EXISTS (SELECT 1 FROM acl a WHERE a.doc = d.id) ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		add("acl", "document %d has no access list (it is invisible, but says nothing about who should read it)", id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	for _, p := range []string{k.path, filepath.Dir(k.path)} {
		st, err := os.Lstat(p)
		if err != nil {
			add("mode", "%v", err)
			continue
		}
		if st.Mode()&os.ModeSymlink != 0 {
			add("mode", "%s is a symbolic link", p)
		} else if st.Mode().Perm()&0o077 != 0 {
			add("mode", "%s has mode %04o, want no group or other access", p, st.Mode().Perm())
		}
		if uid, ok := fileUID(st); ok && o.UID >= 0 && uid != o.UID {
			add("mode", "%s is owned by uid %d, want %d", p, uid, o.UID)
		}
	}
	if o.Store != "" {
		abs, err1 := filepath.EvalSymlinks(k.path)
		store, err2 := filepath.EvalSymlinks(o.Store)
		if err := errors.Join(err1, err2); err != nil {
			add("location", "%v", err)
		} else if rel, err := filepath.Rel(store, abs); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			add("location", "%s is outside the encrypted store %s", abs, store)
		}
	}

	docs, err := k.db.QueryContext(ctx, `SELECT id, content FROM documents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	want := map[int64]string{}
	for docs.Next() {
		var id int64
		var c string
		if err := docs.Scan(&id, &c); err != nil {
			docs.Close()
			return nil, err
		}
		want[id] = c
	}
	if err := errors.Join(docs.Err(), docs.Close()); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	for id := int64(0); len(want) > 0; id++ {
		c, ok := want[id]
		if !ok {
			continue
		}
		delete(want, id)
		chunks, err := k.storedChunks(ctx, id)
		if err != nil {
			return nil, err
		}
		if got := contentHash(chunks); got != c {
			add("content", "document %d: stored chunks hash to %s, ingest recorded %s (changed outside kb)", id, got, c)
		}
	}
	return out, nil
}

func (k *DB) storedChunks(ctx context.Context, doc int64) ([]Chunk, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT ordinal, heading, page, flagged, text FROM chunks WHERE doc = ? ORDER BY ordinal`, doc)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	defer rows.Close()
	var out []Chunk
	for rows.Next() {
		var c Chunk
		if err := rows.Scan(&c.Ordinal, &c.Heading, &c.Page, &c.Flagged, &c.Text); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
