package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

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
			return nil, fmt.Errorf("open %s: path goes through a symlink", rel)
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
