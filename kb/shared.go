package kb

import (
	"fmt"
	"os"
	"sync"
)

// Shared is a knowledge base that a long-running reader (the gateway) holds
// read-only while operators change it with the kb commands. OpenReadOnly
// alone would not do: with no writer open it reads the file as immutable
// and would go on serving access lists that were changed or revoked since.
// So Shared looks at the database and its -wal file before every use and
// opens the database again when either changed, keeping the term index
// (only what changed is reloaded: access lists at once, terms in the
// background). It never creates or writes a file.
type Shared struct {
	path string

	mu    sync.Mutex
	cur   *sharedHandle
	stamp [2]fileStamp
	gate  chan struct{} // one background index rebuild at a time
}

type sharedHandle struct {
	db   *DB
	refs sync.WaitGroup
}

// fileStamp is what tells that a file changed: which file it is, its size
// and its modification time (nanoseconds on the filesystems the store uses).
type fileStamp struct {
	info os.FileInfo // nil: missing
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{st}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}

// OpenShared returns a Shared for the database at path. Nothing is opened
// until the first Acquire, so a gateway starts even when the knowledge base
// is not there yet.
func OpenShared(path string) *Shared { return &Shared{path: path, gate: make(chan struct{}, 1)} }

// Acquire returns the database as it is now and a func to call when done
// with it. Errors are OpenReadOnly's, when there is no usable database.
func (s *Shared) Acquire() (*DB, func(), error) {
	stamp := [2]fileStamp{stampOf(s.path), stampOf(s.path + "-wal")}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || !stamp[0].same(s.stamp[0]) || !stamp[1].same(s.stamp[1]) {
		db, err := OpenReadOnly(s.path)
		switch {
		case err != nil && s.cur == nil:
			return nil, nil, err
		case err == nil:
			db.SetBackgroundRebuild(true)
			db.rebuildGate, db.onIndex = s.gate, s.adopt
			if old := s.cur; old != nil {
				old.db.mu.RLock()
				db.idx = old.db.idx // reused until the generations say otherwise
				old.db.mu.RUnlock()
				go func() { old.refs.Wait(); old.db.Close() }()
			}
			s.cur, s.stamp = &sharedHandle{db: db}, stamp
		}
		// A failed reopen (a writer holds the -wal this process may not
		// read) keeps the previous handle: the next call tries again.
	}
	h := s.cur
	h.refs.Add(1)
	return h.db, h.refs.Done, nil
}

// adopt gives the current handle an index a background rebuild made,
// when it is newer than the one it has: the rebuild may have run on a
// handle that was replaced while it ran.
func (s *Shared) adopt(x *index) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return
	}
	k := s.cur.db
	k.mu.Lock()
	if k.idx == nil || x.gen > k.idx.gen {
		k.idx = x
	}
	k.mu.Unlock()
}

// Path is the database file.
func (s *Shared) Path() string { return s.path }

// Close closes the database once the calls that acquired it are done.
func (s *Shared) Close() error {
	s.mu.Lock()
	h := s.cur
	s.cur = nil
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	h.refs.Wait()
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("close knowledge base: %w", err)
	}
	return nil
}
