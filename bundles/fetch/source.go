package fetch

import (
	"net/url"
	"regexp"
	"strings"
)

var commitRef = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsGitSource reports whether src names a git repository for go-getter
// (forced with "git::"), which is fetched as a directory.
func IsGitSource(src string) bool { return strings.HasPrefix(src, "git::") }

// GitPinned reports whether a git source pins a commit with ?ref=<40 hex>.
func GitPinned(src string) bool {
	_, q, ok := strings.Cut(src, "?")
	if !ok {
		return false
	}
	v, err := url.ParseQuery(q)
	return err == nil && commitRef.MatchString(v.Get("ref"))
}

// GitRef returns the ?ref= of a git source ("" when none).
func GitRef(src string) string {
	_, q, ok := strings.Cut(src, "?")
	if !ok {
		return ""
	}
	v, err := url.ParseQuery(q)
	if err != nil {
		return ""
	}
	return v.Get("ref")
}
