package kb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
)

// ErrNoDocument is returned for a document ID that is not stored.
var ErrNoDocument = errors.New("no such document")

// Info describes a stored document (for operators; it is not filtered by
// access, so never hand it to an API caller).
type Info struct {
	ID         int64       `json:"id"`
	Title      string      `json:"title"`
	Source     string      `json:"source"`
	Collection string      `json:"collection,omitempty"`
	Format     string      `json:"format"`
	SHA256     string      `json:"sha256"`
	Version    int         `json:"version"`
	Size       int64       `json:"size"`
	Class      Class       `json:"class"`
	Ingested   string      `json:"ingested"`
	Chunks     int         `json:"chunks"`
	Flagged    int         `json:"flagged"`
	Allow      []Principal `json:"allow"`
}

// List describes every document, by ID.
func (k *DB) List(ctx context.Context) ([]Info, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT id FROM documents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	out := []Info{}
	for _, id := range ids {
		i, err := k.Show(ctx, id)
		if errors.Is(err, ErrNoDocument) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *i)
	}
	return out, nil
}

// Show describes one document. Errors: ErrNoDocument.
func (k *DB) Show(ctx context.Context, id int64) (*Info, error) {
	i := &Info{ID: id}
	var class int
	err := k.db.QueryRowContext(ctx, `SELECT title, source, collection, format, sha256, version, size, class, ingested,
		(SELECT count(*) FROM chunks WHERE doc = d.id), (SELECT coalesce(sum(flagged), 0) FROM chunks WHERE doc = d.id)
		FROM documents d WHERE id = ?`, id).
		Scan(&i.Title, &i.Source, &i.Collection, &i.Format, &i.SHA256, &i.Version, &i.Size, &class, &i.Ingested, &i.Chunks, &i.Flagged)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("document %d: %w", id, ErrNoDocument)
	}
	if err != nil {
		return nil, fmt.Errorf("show document %d: %w", id, err)
	}
	i.Class = Class(class)
	rows, err := k.db.QueryContext(ctx, `SELECT principal FROM acl WHERE doc = ? ORDER BY principal`, id)
	if err != nil {
		return nil, fmt.Errorf("show document %d: %w", id, err)
	}
	defer rows.Close()
	i.Allow = []Principal{}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		i.Allow = append(i.Allow, Principal(p))
	}
	return i, rows.Err()
}

// SetAccess replaces a document's access list, and its class when class is
// not nil, as metadata only: no chunk is touched and the version stays.
// Errors: ErrNoDocument.
func (k *DB) SetAccess(ctx context.Context, id int64, allow []Principal, class *Class) (err error) {
	if len(allow) == 0 {
		return errors.New("acl: the access list is empty")
	}
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var res IngestResult
	var cur int
	err = tx.QueryRowContext(ctx, `SELECT version, sha256, class FROM documents WHERE id = ?`, id).Scan(&res.Version, &res.SHA256, &cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("document %d: %w", id, ErrNoDocument)
	}
	if err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	c := Class(cur)
	if class != nil {
		if *class < Public || *class > Secret {
			return fmt.Errorf("acl: %v", *class)
		}
		c = *class
		if _, err := tx.ExecContext(ctx, `UPDATE documents SET class = ? WHERE id = ?`, int(c), id); err != nil {
			return fmt.Errorf("acl: %w", err)
		}
	}
	if err := setACL(ctx, k, tx, id, allow); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	if err := bump(ctx, k, tx, "acl_generation"); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	res.DocID = id
	k.auditDoc(audit.KindKBACL, res, "", c, allow)
	return nil
}

// Remove deletes a document, its chunks and its access list in one
// transaction. Errors: ErrNoDocument.
func (k *DB) Remove(ctx context.Context, id int64) (err error) {
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var res IngestResult
	err = tx.QueryRowContext(ctx, `SELECT version, sha256 FROM documents WHERE id = ?`, id).Scan(&res.Version, &res.SHA256)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("document %d: %w", id, ErrNoDocument)
	}
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	for _, q := range []string{`DELETE FROM chunks WHERE doc = ?`, `DELETE FROM acl WHERE doc = ?`, `DELETE FROM documents WHERE id = ?`} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
	}
	if err := bump(ctx, k, tx, "generation"); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	res.DocID = id
	k.auditDoc(audit.KindKBRemove, res, "", 0, nil)
	return nil
}
