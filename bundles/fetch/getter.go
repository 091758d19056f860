//go:build !appliance

package fetch

import (
	"context"
	"fmt"
	"os"

	getter "github.com/hashicorp/go-getter"
)

// Get fetches src with go-getter (s3, gcs, git, hg, or any address its
// detectors understand) into dst: a file, or a directory when dir is set.
// Archives are not unpacked and symlinks are refused. go-getter does not
// hash while downloading, so callers hash the result afterwards (one read of
// a local file). The appliance build (-tags appliance) has no go-getter and
// returns ErrConnectedOnly.
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
