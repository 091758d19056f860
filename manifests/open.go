package manifests

import (
	"os"
	"path/filepath"
	"strings"
)

// OpenMedia opens a file of a bundle or of its packed volumes (often on
// removable media) for reading, without ever waiting on it: it is opened
// with O_NONBLOCK, so a FIFO put in its place opens at once instead of
// blocking until a writer appears; anything but a regular file is refused
// with a *FileTypeError naming path (which matches ErrVerification); then
// O_NONBLOCK is cleared for ordinary reads. A final symlink is followed,
// and what it points to must be a regular file.
func OpenMedia(path string) (*os.File, error) {
	f, err := openNonblock(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &FileTypeError{Path: path, Type: fileType(st.Mode())}
	}
	if err := setBlocking(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadFile reads a bundle directory's manifest.json or manifest.sig (name)
// as verification does: no symlinks, no waiting on a FIFO, bounded in size.
// A file that is not a regular one is a *FileTypeError.
func ReadFile(dir, name string) ([]byte, error) { return readBounded(dir, name) }

// openByLstat is the portable fallback of openInRoot: it refuses any symlink
// among the path's elements, then opens the file without following a final
// symlink. It is racy against a concurrent attacker where openat2 is not.
func openByLstat(root, rel string) (*os.File, error) {
	p := root
	for _, el := range strings.Split(rel, "/") {
		p = filepath.Join(p, el)
		st, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return nil, &FileTypeError{Path: filepath.Join(root, rel), Type: "reached through a symlink"}
		}
	}
	return os.Open(p)
}

// fileType names a non-regular file mode for error messages.
func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file"
}
