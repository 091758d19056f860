package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
)

// auditFile is one file of the audit log as it will be copied: a rotated
// file whole, the current file up to its last complete line.
type auditFile struct {
	path string
	f    *os.File
	size int64 // bytes to copy
}

// snapshotAudit opens the log at path (the current file) and its rotated
// files, oldest first, and fixes how much of each to copy. The gateway keeps
// appending while the copy runs: the log is append-only, so the prefix up to
// the last newline seen now is a consistent chain whatever comes after it.
// The current file is opened first so that a rotation during the call
// cannot make it skip a file: a rotated file that is the one already open
// (same inode), or newer than it, is left out. It returns the files and the
// chain head (the last line of the current file's prefix).
func snapshotAudit(path string) (files []auditFile, head AuditHead, err error) {
	cur, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, AuditHead{Seq: -1}, nil
	}
	if err != nil {
		return nil, head, fmt.Errorf("audit log: %w", err)
	}
	defer func() {
		if err != nil {
			for _, a := range files {
				a.f.Close()
			}
		}
	}()
	size, last, err := audit.CompletePrefix(cur)
	if err != nil {
		cur.Close()
		return nil, head, fmt.Errorf("audit log %s: %w", path, err)
	}
	curStat, err := cur.Stat()
	if err != nil {
		cur.Close()
		return nil, head, err
	}
	all, err := audit.Files(path)
	if err != nil {
		cur.Close()
		return nil, head, err
	}
	for _, p := range all[:len(all)-1] {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if os.SameFile(st, curStat) {
			break // rotated after we opened it: ours, and anything later is newer
		}
		f, err := os.Open(p)
		if err != nil {
			cur.Close()
			return nil, head, fmt.Errorf("audit log: %w", err)
		}
		files = append(files, auditFile{path: p, f: f, size: st.Size()})
	}
	if size > 0 {
		files = append(files, auditFile{path: path, f: cur, size: size})
	} else {
		// Just rotated: the new file's first line is not on disk yet, and
		// the head is the last line of the file before.
		cur.Close()
		if len(files) > 0 {
			if _, last, err = audit.CompletePrefix(files[len(files)-1].f); err != nil {
				return nil, head, err
			}
		}
	}
	head = AuditHead{Seq: -1}
	if last != nil {
		var r struct {
			Seq int64 `json:"seq"`
		}
		if err := json.Unmarshal(last, &r); err != nil {
			return nil, head, fmt.Errorf("audit log %s: last line is not a record: %v", path, err)
		}
		sum := sha256.Sum256(last)
		head = AuditHead{Seq: r.Seq, LineSHA256: hex.EncodeToString(sum[:])}
	}
	return files, head, nil
}
