package kb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
)

// DefaultMaxFileBytes is the largest file IngestFiles reads by default.
const DefaultMaxFileBytes = 32 << 20

// IngestOptions describe the documents of one ingest.
type IngestOptions struct {
	Allow      []Principal
	Class      Class
	Collection string
	Title      string // for a single file; otherwise each file's own title or name
	MaxBytes   int64  // per file (default DefaultMaxFileBytes)
	Chunking   ChunkOptions
	// Expect, when set, holds the SHA-256 (hex) every file must have, by
	// absolute path: the files of a signed bundle. A file not listed, or
	// whose bytes as read hash otherwise, is refused with ErrNotSigned; the
	// hash is of the very bytes ingested, so a file swapped after the
	// bundle was verified is caught.
	Expect map[string]string
}

// ErrNotSigned is returned (wrapped) for a file of a signed bundle that is
// not in its manifest or differs from it.
var ErrNotSigned = errors.New("file does not match the signed manifest")

// FileResult is the outcome for one file: stored, or refused with Err.
type FileResult struct {
	Path string `json:"path"`
	IngestResult
	Err error `json:"-"`
}

// IngestFiles stores every file named by paths, walking directories (in
// lexical order, not following symbolic links, skipping dot files). Each
// file is one transaction: a bad file (unknown type, binary, corrupt, a zip
// bomb, over the size cap) gets its own error in its FileResult and leaves
// no rows; the other files go on. report is called after each file. The
// returned error is only for a cancelled context or a path that cannot be
// walked at all.
func (k *DB) IngestFiles(ctx context.Context, paths []string, o IngestOptions, report func(FileResult)) error {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxFileBytes
	}
	if len(o.Allow) == 0 {
		return errors.New("ingest: the access list is empty")
	}
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if err != nil {
				report(FileResult{Path: p, Err: err})
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				return nil
			}
			if !d.Type().IsRegular() {
				report(FileResult{Path: p, Err: fmt.Errorf("%w: not a regular file", ErrUnknownType)})
				return nil
			}
			r := FileResult{Path: p}
			r.IngestResult, r.Err = k.ingestFile(ctx, p, o)
			report(r)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (k *DB) ingestFile(ctx context.Context, path string, o IngestOptions) (IngestResult, error) {
	format := Format(path)
	if format == "" {
		return IngestResult{}, fmt.Errorf("%w: %q (want .md, .txt, .html, .docx, .pdf)", ErrUnknownType, filepath.Ext(path))
	}
	data, err := readCapped(path, o.MaxBytes)
	if err != nil {
		return IngestResult{}, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return IngestResult{}, err
	}
	if o.Expect != nil {
		want, ok := o.Expect[abs]
		sum := sha256.Sum256(data)
		if !ok {
			return IngestResult{}, fmt.Errorf("%w: not listed", ErrNotSigned)
		}
		if got := hex.EncodeToString(sum[:]); got != want {
			return IngestResult{}, fmt.Errorf("%w: SHA-256 %s, signed %s", ErrNotSigned, got, want)
		}
	}
	e, err := extract(ctx, format, data)
	if err != nil {
		return IngestResult{}, err
	}
	title := o.Title
	if title == "" {
		title = e.Title
	}
	if title == "" {
		title = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	res, err := k.Put(ctx, Document{Title: title, Source: abs, Collection: o.Collection, Format: format,
		Class: o.Class, Allow: o.Allow, Raw: data, Sections: e.Sections}, o.Chunking)
	if err != nil {
		return res, err
	}
	kind := audit.KindKBIngest
	if res.Unchanged {
		kind = audit.KindKBACL
	}
	k.auditDoc(kind, res, abs, o.Class, o.Allow)
	return res, nil
}

// readCapped reads a regular file of at most max bytes, without following
// a symbolic link.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscallNoFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrUnknownType)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, st.Size(), max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return data, nil
}
