//go:build unix

package kb

import (
	"os"
	"syscall"
)

func fileUID(st os.FileInfo) (int, bool) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(s.Uid), true
	}
	return 0, false
}

// sidecarsLike makes the database's -wal and -shm files, when root opens a
// database another user owns (the gateway's, on an installed host), owned
// by that user before SQLite writes them: root's "kb ingest" must not leave
// files beside the database that the gateway, reading it, cannot open.
func sidecarsLike(path string, db os.FileInfo) error {
	s, ok := db.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 || s.Uid == 0 {
		return nil
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		f, err := os.OpenFile(path+suffix, os.O_RDWR|os.O_CREATE|syscallNoFollow, 0o600)
		if err != nil {
			return err
		}
		err = f.Chown(int(s.Uid), int(s.Gid))
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
