package kb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/ncruces/go-sqlite3/driver"
)

// schemaVersion is kept in PRAGMA user_version; Open refuses a database
// written by a newer program rather than guess at its layout.
const schemaVersion = 1

// The schema. Class is stored as its rank (public 0, internal 1, secret 2)
// so that clearance is one comparison. The term index is not stored: it is
// built in memory from the chunks (see index.go), and meta's generation
// counters tell every process holding one that a write has made it stale
// (generation: documents or chunks changed; acl_generation: only access).
const schema = `
CREATE TABLE documents (
	id         INTEGER PRIMARY KEY,
	title      TEXT    NOT NULL,
	source     TEXT    NOT NULL,
	collection TEXT    NOT NULL DEFAULT '',
	format     TEXT    NOT NULL,
	sha256     TEXT    NOT NULL,
	content    TEXT    NOT NULL, -- SHA-256 over the stored chunks, see contentHash
	version    INTEGER NOT NULL,
	size       INTEGER NOT NULL,
	class      INTEGER NOT NULL CHECK (class BETWEEN 0 AND 2),
	ingested   TEXT    NOT NULL,
	UNIQUE (collection, source)
);
CREATE TABLE chunks (
	id      INTEGER PRIMARY KEY,
	doc     INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
	ordinal INTEGER NOT NULL,
	heading TEXT    NOT NULL,
	page    INTEGER NOT NULL DEFAULT 0,
	text    TEXT    NOT NULL,
	flagged INTEGER NOT NULL DEFAULT 0,
	UNIQUE (doc, ordinal)
);
CREATE TABLE acl (
	doc       INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
	principal TEXT    NOT NULL,
	PRIMARY KEY (doc, principal)
) WITHOUT ROWID;
CREATE INDEX acl_principal ON acl (principal, doc);
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta VALUES ('generation', 0), ('acl_generation', 0);
CREATE TABLE secrets (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO secrets VALUES ('query_hash_key', randomblob(32));
`

// DB is an open knowledge base. It is safe for concurrent use; writes are
// serialised by SQLite.
type DB struct {
	db      *sql.DB
	path    string
	audit   Auditor
	hashKey []byte // keys QueryHash

	mu         sync.RWMutex
	idx        *index // nil until the first search
	background bool   // see SetBackgroundRebuild
	rebuilding bool
	wg         sync.WaitGroup
	// rebuildGate, when set, is shared with other handles of the same
	// file (see Shared): one background rebuild at a time among them;
	// onIndex is told of each index a background rebuild made.
	rebuildGate chan struct{}
	onIndex     func(*index)

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // see prepared
}

// StorePath is where an installed appliance keeps its knowledge base: a
// kb/ directory of its own (mode 0700) inside the encrypted store, so that
// the kb CLI's default and verify's checks name the same file.
func StorePath(store string) string { return filepath.Join(store, "kb", "kb.db") }

// Open opens the knowledge base at path, creating it (mode 0600, parent
// directory 0700) when it does not exist. It refuses a path that is a
// symbolic link or not a regular file, and a schema newer than this
// program's.
func Open(path string) (*DB, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open knowledge base: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscallNoFollow, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	st, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open knowledge base %s: not a regular file", path)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(wal)&_pragma=synchronous(normal)"
	db, err := driver.Open(dsn)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	k := &DB{db: db, path: path}
	if err := k.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	// SQLite creates its -wal and -shm files with mode 0666 less the
	// umask; tighten them (the directory is 0700 as well).
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
		}
	}
	if err := db.QueryRow(`SELECT value FROM secrets WHERE key = 'query_hash_key'`).Scan(&k.hashKey); err != nil {
		db.Close()
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	return k, nil
}

// ErrNotKB is returned by OpenReadOnly for a file that is not a knowledge
// base written by this program: empty, another SQLite database, or no
// SQLite database at all.
var ErrNotKB = errors.New("not a knowledge-base database")

// OpenReadOnly opens the existing knowledge base at path for reading only,
// as verify does: it never creates the file, its directory, the schema or
// -wal/-shm files, and never writes to the database. It refuses a path that
// is missing, a symbolic link or not a regular file, and returns an error
// wrapping ErrNotKB for a file without this program's schema (an empty file
// included). The DB it returns is for Check and other reads; any write
// fails. Without a -wal file the connection is immutable=1: a writer that
// opens the database while it is held is not seen, which for verify's
// one short pass is the price of creating nothing.
func OpenReadOnly(path string) (*DB, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base: %w", err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open knowledge base %s: not a regular file", path)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("open knowledge base %s: empty file: %w", path, ErrNotKB)
	}
	// mode=ro opens the file O_RDONLY; with a journal_mode(wal) database
	// and no -wal/-shm beside it (no writer open), SQLite would still
	// create them to read through the WAL, so a missing -wal makes the
	// connection immutable instead: nothing else has the database open,
	// so nothing can change under it.
	q := "mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)"
	if _, err := os.Lstat(path + "-wal"); errors.Is(err, os.ErrNotExist) {
		q += "&immutable=1"
	}
	db, err := driver.Open("file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q)
	if err != nil {
		return nil, fmt.Errorf("open knowledge base %s: %w", path, err)
	}
	k := &DB{db: db, path: path}
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("open knowledge base %s: %w: %w", path, ErrNotKB, err)
	}
	if v != schemaVersion {
		db.Close()
		return nil, fmt.Errorf("open knowledge base %s: schema version %d, want %d: %w", path, v, schemaVersion, ErrNotKB)
	}
	if err := db.QueryRow(`SELECT value FROM secrets WHERE key = 'query_hash_key'`).Scan(&k.hashKey); err != nil {
		db.Close()
		return nil, fmt.Errorf("open knowledge base %s: %w: %w", path, ErrNotKB, err)
	}
	return k, nil
}

func (k *DB) migrate() error {
	var v int
	if err := k.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	switch {
	case v == schemaVersion:
		return nil
	case v > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this program's %d", v, schemaVersion)
	case v != 0:
		return fmt.Errorf("schema version %d is not known", v)
	}
	tx, err := k.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

// Path is the database file.
func (k *DB) Path() string { return k.path }

// Close waits for a background index build and closes the database.
func (k *DB) Close() error {
	k.wg.Wait()
	k.stmtMu.Lock()
	var errs []error
	for _, s := range k.stmts {
		errs = append(errs, s.Close())
	}
	k.stmts = nil
	k.stmtMu.Unlock()
	return errors.Join(append(errs, k.db.Close())...)
}

// prepared returns query prepared once for the life of k: ingest runs the
// same few statements for every file, and preparing them each time cost
// as much as running them.
func (k *DB) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	k.stmtMu.Lock()
	defer k.stmtMu.Unlock()
	if s, ok := k.stmts[query]; ok {
		return s, nil
	}
	s, err := k.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if k.stmts == nil {
		k.stmts = map[string]*sql.Stmt{}
	}
	k.stmts[query] = s
	return s, nil
}

// exec runs query in tx through its prepared statement.
func (k *DB) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	s, err := k.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, s).ExecContext(ctx, args...)
}

// queryRow runs query in tx through its prepared statement.
func (k *DB) queryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	s, err := k.prepared(ctx, query)
	if err != nil {
		// A Row carrying the error, as QueryRowContext returns for a bad query.
		return tx.QueryRowContext(ctx, query, args...)
	}
	return tx.StmtContext(ctx, s).QueryRowContext(ctx, args...)
}

// Snapshot writes a consistent copy of the whole knowledge base to dst
// (which must not exist) while readers and writers go on: the backup
// issue's online snapshot. The copy is made in a private directory beside
// dst and has mode 0600 before it gets its name.
func (k *DB) Snapshot(ctx context.Context, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("snapshot %s: already exists", dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot %s: %w", dst, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".kb-snapshot-*")
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", dst, err)
	}
	defer os.RemoveAll(tmp)
	p := filepath.Join(tmp, "kb.db")
	if _, err := k.db.ExecContext(ctx, `VACUUM INTO ?`, p); err != nil {
		return fmt.Errorf("snapshot %s: %w", dst, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		return fmt.Errorf("snapshot %s: %w", dst, err)
	}
	if err := os.Link(p, dst); err != nil {
		return fmt.Errorf("snapshot %s: %w", dst, err)
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}
