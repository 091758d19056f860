package kb

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrDamaged is returned (wrapped) by Integrity for a database SQLite finds
// damaged.
var ErrDamaged = errors.New("knowledge base is damaged")

// Integrity runs SQLite's own integrity check (every page, index and
// constraint; the full-text index included) and returns an error wrapping
// ErrDamaged naming the first problems it reports. It only reads, so it
// runs on a DB from OpenReadOnly: backups check their snapshot with it
// before they are trusted or put back.
func (k *DB) Integrity(ctx context.Context) error {
	rows, err := k.db.QueryContext(ctx, `PRAGMA integrity_check(20)`)
	if err != nil {
		return fmt.Errorf("integrity check %s: %w", k.path, err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("integrity check %s: %w", k.path, err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check %s: %w: %w", k.path, ErrDamaged, err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	return fmt.Errorf("integrity check %s: %w: %s", k.path, ErrDamaged, strings.Join(msgs, "; "))
}
