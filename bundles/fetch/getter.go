package fetch

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	getter "github.com/hashicorp/go-getter"
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

// Get fetches src with go-getter (s3, gcs, git, hg, or any address its
// detectors understand) into dst: a file, or a directory when dir is set.
// Archives are not unpacked and symlinks are refused. go-getter does not
// hash while downloading, so callers hash the result afterwards (one read of
// a local file).
func Get(ctx context.Context, src, dst string, dir bool) error {
	pwd, _ := os.Getwd()
	mode := getter.ClientModeFile
	if dir {
		mode = getter.ClientModeDir
	}
	getters := map[string]getter.Getter{}
	for k, g := range getter.Getters {
		getters[k] = g
	}
	// go-getter links local files by default; a bundle needs the bytes.
	getters["file"] = &getter.FileGetter{Copy: true}
	c := &getter.Client{
		Getters:         getters,
		Ctx:             ctx,
		Src:             src,
		Dst:             dst,
		Pwd:             pwd,
		Mode:            mode,
		Decompressors:   map[string]getter.Decompressor{},
		DisableSymlinks: true,
	}
	if err := c.Get(); err != nil {
		return fmt.Errorf("go-getter %s: %w", src, err)
	}
	return nil
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
