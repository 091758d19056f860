package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Modes the store uses: only the owner may enter directories, and files are
// read-only even for the owner, so a compromised server cannot rewrite the
// weights it serves.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o400
)

// checkTree walks the store at dir (locked or not: names may be
// ciphertext) and returns a *PermissionError naming every entry that is not
// owned by owner, has group or other permission bits, is a writable file, or
// is not a regular file or directory. It follows no symlinks. A store with a
// guest may give the guest's group search permission on its root (mode 0710,
// group the guest's), and one top-level directory owned by the guest is
// checked against the guest's own rules (see Guest). The guest's directory
// is known by its owner, not its name: a locked fscrypt store shows only
// ciphertext names.
func checkTree(dir string, owner Owner, guest *Guest) error {
	var problems []PermissionProblem
	guestDir := ""
	add := func(path, format string, args ...any) {
		problems = append(problems, PermissionProblem{Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			add(path, "cannot be read: %v", err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			add(path, "cannot be examined: %v", err)
			return nil
		}
		mode := fi.Mode()
		uid, gid, ok := fileOwner(fi)
		if guest != nil && ok {
			switch {
			case path == dir:
				if uid != owner.UID || (gid != owner.GID && gid != guest.Owner.GID) {
					add(path, "owned by uid %d gid %d, want uid %d and gid %d (%s) or %d (%s)", uid, gid, owner.UID, owner.GID, owner.label(), guest.Owner.GID, guest.Owner.label())
				}
				want := dirMode
				if gid == guest.Owner.GID {
					want = GuestRootMode
				}
				if !mode.IsDir() || mode.Perm()&^want != 0 || mode&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) != 0 {
					add(path, "directory mode %04o is looser than %04o", mode.Perm(), want)
				}
				return nil
			case uid == guest.Owner.UID && filepath.Dir(path) == dir:
				if guestDir != "" {
					add(path, "a second top-level entry of the guest %s (the first is %s)", guest.Owner.label(), guestDir)
					return skipDir(d)
				}
				guestDir = path
				if !mode.IsDir() {
					add(path, "the guest's top-level entry is a %s, not a directory", typeName(mode))
				}
				fallthrough
			case guestDir != "" && strings.HasPrefix(path, guestDir+string(filepath.Separator)):
				guest.check(path, fi, add)
				return nil
			}
		}
		if ok && (uid != owner.UID || gid != owner.GID) {
			add(path, "owned by uid %d gid %d, want uid %d gid %d (%s)", uid, gid, owner.UID, owner.GID, owner.label())
		}
		switch {
		case mode.IsDir():
			if mode.Perm()&^dirMode != 0 || mode&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) != 0 {
				add(path, "directory mode %04o is looser than %04o", mode.Perm(), dirMode)
			}
		case mode.IsRegular():
			// Copied-in data is 0400 (0500 for the runtime's binaries, which
			// verify checks against the manifest); the runtime's own state
			// beside it (Ollama's blobs, keys) needs owner write. Group and
			// others get nothing, ever.
			if mode.Perm()&0o077 != 0 || mode&(fs.ModeSetgid|fs.ModeSetuid) != 0 {
				add(path, "file mode %04o is looser than %04o", mode.Perm(), fileMode)
			}
		default:
			add(path, "is a %s; a store holds only regular files and directories", typeName(mode))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check permissions of %s: %w", dir, err)
	}
	if len(problems) > 0 {
		return &PermissionError{Problems: problems}
	}
	return nil
}

// metadataPermProblem checks that the metadata file is root's (or the
// caller's) and private.
func metadataPermProblem(path string, fi fs.FileInfo) *PermissionProblem {
	if !fi.Mode().IsRegular() {
		return &PermissionProblem{Path: path, Detail: "is a " + typeName(fi.Mode()) + ", not a regular file"}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &PermissionProblem{Path: path, Detail: fmt.Sprintf("mode %04o lets other users read the wrapped keys (want 0600)", fi.Mode().Perm())}
	}
	if uid, _, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return &PermissionProblem{Path: path, Detail: fmt.Sprintf("owned by uid %d, want root", uid)}
	}
	return nil
}

func (o Owner) label() string {
	if o.Name != "" {
		return o.Name
	}
	return fmt.Sprintf("uid %d", o.UID)
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
