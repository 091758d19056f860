package backup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// ErrVerification is matched by every error that means the archive is not
// what a trusted key signed: a wrong identity, a changed or truncated
// archive, a bad or untrusted signature, a member that differs. It is
// manifests.ErrVerification, so callers map both to one exit code.
var ErrVerification = manifests.ErrVerification

// ErrIdentity is returned (wrapped, and matching ErrVerification) when none
// of the identities can decrypt the archive.
var ErrIdentity = fmt.Errorf("%w: no identity given can decrypt this backup", ErrVerification)

const maxManifest = 16 << 20

func verificationf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrVerification}, a...)...)
}

// Extract decrypts the archive read from r with ids into dir (which must
// exist and be private), checks the signature with trusted and every
// member's hash, and returns the signed manifest. On error dir may hold
// partial, unverified files: the caller removes it.
func Extract(ctx context.Context, r io.Reader, ids []age.Identity, trusted []manifests.PublicKey, dir string) (*Manifest, error) {
	return extract(ctx, r, ids, trusted, dir, keepAll, nil)
}

// keep says which members extract writes into its directory, and how.
type keep int

const (
	keepAll     keep = iota // every member
	keepDurable             // every member, written to the disk as it comes, for a caller that syncs them (restore)
	// keepChecked writes only what is read after the signature check
	// (configuration, state, the bundle's manifest, the knowledge base):
	// the audit log's members are checked as they stream past (s) and the
	// model's files only hashed, so verifying an archive needs no scratch
	// space for either.
	keepChecked
)

// writes reports whether member name is written under k, with s checking
// the audit log's members as they pass.
func (k keep) writes(name string, s *auditStream) bool {
	if k != keepChecked {
		return true
	}
	if s != nil && isAuditName(name) {
		return false
	}
	rest, model := strings.CutPrefix(name, "bundle/")
	return !model || rest == manifests.ManifestFile || rest == manifests.SignatureFile
}

// extract is Extract, feeding the audit log's members to s as they are
// written (s may be nil), and writing what k says.
func extract(ctx context.Context, r io.Reader, ids []age.Identity, trusted []manifests.PublicKey, dir string, k keep, s *auditStream) (*Manifest, error) {
	dr, err := decrypt(r, ids)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrIdentity
		}
		return nil, verificationf("decrypt: %v (not an age file, or its header was changed)", err)
	}
	return extractTar(ctx, dr, trusted, dir, k, s)
}

// decrypt returns the plaintext of the age file r. A regular file is read
// through age's DecryptReaderAt: it authenticates the final chunk, and with
// it the length, before anything is read, and decrypts each chunk in place
// into the caller's buffer, where the streaming reader allocates a chunk,
// decrypts into it and copies it twice (a third of verify's memory traffic
// and most of its page faults). Both authenticate every chunk under its
// index, so the same bytes come out or none.
func decrypt(r io.Reader, ids []age.Identity) (io.Reader, error) {
	if f, ok := r.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			ra, size, err := age.DecryptReaderAt(f, st.Size(), ids...)
			if err != nil {
				return nil, err
			}
			return io.NewSectionReader(ra, 0, size), nil
		}
	}
	return age.Decrypt(r, ids...)
}

// extractTar reads the decrypted tar stream; it is the parser that faces
// whatever a signer (or a bug) put inside, and is fuzzed. Members named
// like the audit log also go to s, when not nil.
func extractTar(ctx context.Context, r io.Reader, trusted []manifests.PublicKey, dir string, k keep, s *auditStream) (_ *Manifest, err error) {
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	type got struct {
		size int64
		mode uint32
		sum  string
	}
	members := map[string]got{}
	pool := newChunkPool()
	var raw, sig []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, verificationf("read archive: %v (changed or truncated)", err)
		}
		if sig != nil {
			return nil, verificationf("member %q after the signature", h.Name)
		}
		if h.Typeflag != tar.TypeReg {
			return nil, verificationf("member %q is not a regular file (type %q)", h.Name, h.Typeflag)
		}
		for k := range h.PAXRecords {
			// A sparse member expands to its size without reading it from
			// the archive: a few bytes could fill the disk before the
			// signature is checked.
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, verificationf("member %q is a sparse file", h.Name)
			}
		}
		if err := manifests.ValidatePath(h.Name); err != nil {
			return nil, verificationf("member %q: %v", h.Name, err)
		}
		switch h.Name {
		case ManifestName, SignatureName:
			if h.Size > maxManifest {
				return nil, verificationf("%s is larger than 16 MiB", h.Name)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, verificationf("read %s: %v (changed or truncated)", h.Name, err)
			}
			if h.Name == ManifestName {
				if raw != nil {
					return nil, verificationf("%s appears twice", ManifestName)
				}
				raw = b
			} else {
				if raw == nil {
					return nil, verificationf("%s before %s", SignatureName, ManifestName)
				}
				sig = b
			}
			continue
		}
		if raw != nil {
			return nil, verificationf("member %q after the manifest", h.Name)
		}
		if _, dup := members[h.Name]; dup {
			return nil, verificationf("member %q appears twice", h.Name)
		}
		var chain *chunkReader
		if s != nil && isAuditName(h.Name) {
			chain = s.file(h.Name)
		}
		sum, err := extractFile(dir, h.Name, os.FileMode(h.Mode)&0o777, &boundedReader{r: tr, in: cr}, k, k.writes(h.Name, s), chain, pool)
		if err != nil {
			return nil, err
		}
		members[h.Name] = got{size: h.Size, mode: uint32(h.Mode) & 0o7777, sum: sum}
	}
	if raw == nil || sig == nil {
		return nil, verificationf("no signed manifest at the end: the archive was truncated")
	}
	sigs, err := manifests.ParseSignatures(sig)
	if err != nil {
		return nil, verificationf("%s: %v", SignatureName, err)
	}
	if _, err := manifests.Check(sigs, Purpose, raw, trusted, 1); err != nil {
		return nil, fmt.Errorf("backup manifest: %w", err)
	}
	m, err := Parse(raw)
	if err != nil {
		return nil, verificationf("%v", err)
	}
	for _, mb := range m.Members {
		g, ok := members[mb.Name]
		switch {
		case !ok:
			return nil, verificationf("member %s is listed but missing", mb.Name)
		case g.size != mb.Size || g.sum != mb.SHA256:
			return nil, verificationf("member %s: SHA-256 %s, size %d; the manifest says %s, size %d", mb.Name, g.sum, g.size, mb.SHA256, mb.Size)
		case g.mode != mb.Mode:
			return nil, verificationf("member %s: mode %04o; the manifest says %04o", mb.Name, g.mode, mb.Mode)
		}
		delete(members, mb.Name)
	}
	for name := range members {
		return nil, verificationf("member %s is not in the signed manifest", name)
	}
	return m, nil
}

// countingReader counts the bytes read from the archive.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// boundedReader fails once a member has produced more bytes than the whole
// archive has supplied so far, whatever the tar reader believes (a second
// guard against expanding members).
type boundedReader struct {
	r    io.Reader
	in   *countingReader
	read int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.in.n {
		return n, verificationf("a member expands beyond the bytes of the archive")
	}
	return n, err
}

// extractFile writes one member under dir with mode, creating parents, or
// only reads it when write is false; it never follows a symlink (dir holds
// only what this function creates) and never replaces a file. It returns
// the member's SHA-256. When chain is not nil, the member's bytes also go
// to it, and it is ended.
//
// Reading (decryption), hashing and writing overlap (chunks.go): this
// goroutine fills chunks, a hasher and a writer take them, and the audit
// chain's goroutines read the same chunks.
func extractFile(dir, name string, mode os.FileMode, r io.Reader, k keep, write bool, chain *chunkReader, pool *chunkPool) (_ string, err error) {
	if chain != nil {
		defer chain.end()
	}
	var f *os.File
	w := io.Discard
	if write {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", fmt.Errorf("extract %s: %w", name, err)
		}
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscallNoFollow, 0o600); err != nil {
			return "", fmt.Errorf("extract %s: %w", name, err)
		}
		w = f
		if k == keepDurable {
			w = &writeback{f: f}
		}
	}
	h, aw := newHasher(), newAsyncWriter(w, pool)
	var rerr error
	for rerr == nil {
		c := pool.get()
		var n int
		n, rerr = fill(r, c.b)
		if n == 0 {
			c.release()
			break
		}
		c.b = c.b[:n]
		h.add(c)
		if chain != nil {
			c.refs.Add(1)
			chain.send(c)
		}
		aw.put(c)
	}
	err = aw.Close()
	sum := h.end()
	if rerr == io.EOF {
		rerr = nil
	}
	if f != nil {
		// The member's own permission bits (checked against the signed
		// manifest afterwards), so that an extracted bundle is as it was
		// signed; the scratch directory itself stays private.
		err = errors.Join(err, f.Chmod(mode), f.Close())
	}
	if err != nil {
		return "", fmt.Errorf("extract %s: %w", name, err)
	}
	if rerr != nil {
		return "", verificationf("read member %s: %v (changed or truncated)", name, rerr)
	}
	return sum, nil
}
