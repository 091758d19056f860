package manifests

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// ValidatePath checks that p is a safe bundle-relative path: slash-separated,
// relative, clean (no empty, "." or ".." elements), valid UTF-8 with no control
// characters or backslashes, at most 4096 bytes with elements of at most 255.
// It cannot see symlinks; the walkers and openers check those on disk.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > 4096:
		return errors.New("path longer than 4096 bytes")
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute path")
	case strings.HasSuffix(p, "/"):
		return errors.New("path ends with '/'")
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return errors.New("path contains a control character or backslash")
		}
	}
	for _, el := range strings.Split(p, "/") {
		switch {
		case el == "":
			return errors.New("path contains an empty element ('//')")
		case el == "." || el == "..":
			return errors.New("path contains '.' or '..'")
		case len(el) > 255:
			return errors.New("path element longer than 255 bytes")
		}
	}
	return nil
}
