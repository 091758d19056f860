package manifests

import (
	"errors"
	"fmt"
	"strings"
)

// ErrVerification is matched (errors.Is) by every error that means "these
// bytes are not what a trusted key approved": a bad or missing signature, an
// untrusted key, too few signatures, expiry, rollback, or files that differ.
var ErrVerification = errors.New("verification failed")

// verificationError is a sentinel that also matches ErrVerification.
type verificationError string

func (e verificationError) Error() string        { return string(e) }
func (e verificationError) Is(target error) bool { return target == ErrVerification }

// Reasons a signed manifest is refused; each matches ErrVerification.
var (
	ErrBadSignature = verificationError("signature does not match the manifest")
	ErrUntrustedKey = verificationError("not signed by a trusted key")
	ErrThreshold    = verificationError("too few trusted signatures")
	ErrExpired      = verificationError("manifest expired")
	ErrRollback     = verificationError("manifest version is older than the one accepted before")
	ErrUnsigned     = verificationError("manifest has no signature")
	ErrNotCanonical = verificationError("manifest is malformed")
)

// Problem kinds found when checking files against a manifest.
const (
	ProblemMissing = "missing" // listed, not on disk
	ProblemExtra   = "extra"   // on disk, not listed
	ProblemType    = "type"    // not a regular file (symlink, device, FIFO, directory)
	ProblemSize    = "size"    // size differs
	ProblemMode    = "mode"    // permission bits differ
	ProblemChunk   = "chunk"   // a chunk's bytes differ
	ProblemRead    = "read"    // could not be read
)

// FileProblem is one difference between the files on disk and the manifest.
type FileProblem struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
	Chunk  int    `json:"chunk,omitempty"`
	Offset int64  `json:"offset,omitempty"` // first byte of the bad chunk
	Length int64  `json:"length,omitempty"` // bytes in the bad chunk
}

func (p FileProblem) String() string { return p.Path + ": " + p.Detail }

// FilesError lists every file problem found; it matches ErrVerification.
type FilesError struct {
	Problems []FileProblem
}

func (e *FilesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d file problem(s)", len(e.Problems))
	for i, p := range e.Problems {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		b.WriteString("; ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *FilesError) Is(target error) bool { return target == ErrVerification }

// FileTypeError says a file of a bundle or of its media is not a regular
// file: a symlink (or a path through one), a FIFO, a device, a socket or a
// directory. Bundles hold only regular files, so it matches ErrVerification.
type FileTypeError struct {
	Path string
	Type string // "a symlink", "a FIFO" … or "reached through a symlink"
}

func (e *FileTypeError) Error() string {
	return fmt.Sprintf("%s: is %s, not a regular file; bundles and their volumes hold only regular files", e.Path, e.Type)
}

// Is makes a FileTypeError match ErrVerification.
func (e *FileTypeError) Is(target error) bool { return target == ErrVerification }
