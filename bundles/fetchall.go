package bundles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// fetchAll runs the downloads, jobs at a time. Every file is tried; the
// errors of all failed ones are returned together.
func fetchAll(ctx context.Context, c *fetch.Client, items []*item, jobs int) error {
	// Largest first, so one big file does not start last and finish alone.
	order := append([]*item(nil), items...)
	sort.SliceStable(order, func(a, b int) bool { return order[a].want.Size > order[b].want.Size })
	sem := make(chan struct{}, jobs)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, it := range order {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fetchOne(ctx, c, it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

func fetchOne(ctx context.Context, c *fetch.Client, it *item) error {
	var err error
	switch it.kind {
	case specs.KindHF, specs.KindHTTP, specs.KindFile:
		it.digest, err = c.Download(ctx, it.want, it.part)
	case specs.KindGenerated:
		c.Progress.Start(it.dest, -1, 0)
		it.digest, err = generate(ctx, it)
		c.Progress.Add(it.dest, it.digest.Size)
		c.Progress.Done(it.dest, err)
	case kindGit:
		c.Progress.Start(it.dest, -1, 0)
		err = gitFetch(ctx, it)
		c.Progress.Done(it.dest, err)
	default:
		c.Progress.Start(it.dest, -1, 0)
		it.digest, err = getterFetch(ctx, it)
		c.Progress.Add(it.dest, it.digest.Size)
		c.Progress.Done(it.dest, err)
	}
	return err
}

// generate writes a generated file into its part file, hashing it as it is
// written.
func generate(ctx context.Context, it *item) (d fetch.Digest, err error) {
	f, err := os.OpenFile(it.part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return d, err
	}
	pr, pw := io.Pipe()
	go func() {
		werr := it.gen.Write(io.MultiWriter(f, pw))
		pw.CloseWithError(werr)
	}()
	d, err = fetch.HashReader(ctx, pr, 0)
	pr.CloseWithError(errors.New("hashing stopped"))
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		return d, fmt.Errorf("generate %s: %w", it.dest, err)
	}
	if it.want.SHA256 != "" && d.SHA256 != it.want.SHA256 {
		return d, &fetch.MismatchError{Name: it.dest, URL: it.source, What: "sha256", Want: it.want.SHA256, Got: d.SHA256}
	}
	return d, nil
}

// getterFetch fetches a single file with go-getter, then hashes it (go-getter
// cannot hash while it downloads).
func getterFetch(ctx context.Context, it *item) (fetch.Digest, error) {
	os.Remove(it.part)
	if err := fetch.Get(ctx, it.source, it.part, false); err != nil {
		return fetch.Digest{}, err
	}
	f, err := os.Open(it.part)
	if err != nil {
		return fetch.Digest{}, err
	}
	defer f.Close()
	d, err := fetch.HashReader(ctx, f, 0)
	if err != nil {
		return d, fmt.Errorf("hash %s: %w", it.dest, err)
	}
	if it.want.SHA256 != "" && d.SHA256 != it.want.SHA256 {
		os.Remove(it.part)
		return d, &fetch.MismatchError{Name: it.dest, URL: it.source, What: "sha256", Want: it.want.SHA256, Got: d.SHA256}
	}
	return d, nil
}

// gitFetch checks out a git repository with go-getter into a directory under
// the cache, then hashes every file of it (skipping .git). Symlinks and other
// non-regular files are refused: a bundle holds regular files only.
func gitFetch(ctx context.Context, it *item) error {
	if err := os.RemoveAll(it.part); err != nil {
		return err
	}
	if err := fetch.Get(ctx, it.source, it.part, true); err != nil {
		return err
	}
	it.tree = nil
	return filepath.WalkDir(it.part, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(it.part, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
			return nil
		case d.IsDir() && rel == ".git":
			return filepath.SkipDir
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: %s in the repository is not a regular file", it.source, rel)
		}
		if err := manifests.ValidatePath(it.dest + "/" + rel); err != nil {
			return fmt.Errorf("%s: %s: %v", it.source, rel, err)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := "0644"
		if info.Mode().Perm()&0o111 != 0 {
			mode = "0755"
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		dg, err := fetch.HashReader(ctx, f, 0)
		f.Close()
		if err != nil {
			return fmt.Errorf("hash %s: %w", rel, err)
		}
		it.tree = append(it.tree, treeFile{rel: rel, mode: mode, digest: dg})
		return nil
	})
}
