// Package tokens issues and checks the gateway's API tokens. A token is
// shown once, when it is created; the store keeps only the SHA-256 digest of
// its secret part, so a leaked token file grants nothing. It must never store,
// log or return a secret after Create.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A token reads qwa_<id>_<secret>: the ID (16 hex digits) names the token in
// logs and metrics; the secret (64 hex digits, 256 random bits) is what
// proves possession. Hex keeps the separator unambiguous and the length
// fixed.
const (
	prefix    = "qwa_"
	idLen     = 16
	secretLen = 64
	// Len is the length of every well-formed token.
	Len = len(prefix) + idLen + 1 + secretLen
)

// Errors returned by Parse and Store.Authenticate. They are distinct so the
// gateway can count them, but all of them answer the client the same way.
var (
	ErrMalformed = errors.New("token is malformed")
	ErrUnknown   = errors.New("token is not known")
	ErrRevoked   = errors.New("token was revoked")
	ErrExpired   = errors.New("token has expired")
)

// Digest is the SHA-256 digest of a token's secret. Digests have a fixed
// length, so comparing them in constant time leaks nothing about the secret.
type Digest [sha256.Size]byte

// String encodes d as "sha256:" and hex digits, the form kept in the file.
func (d Digest) String() string { return "sha256:" + hex.EncodeToString(d[:]) }

// parseDigest decodes the form written by Digest.String.
func parseDigest(s string) (Digest, error) {
	var d Digest
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*len(d) {
		return d, fmt.Errorf("digest %q is not sha256: and %d hex digits", s, 2*len(d))
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// Secret is a parsed token: its public ID and the digest of its secret. The
// secret itself is dropped as soon as it is hashed.
type Secret struct {
	ID     string
	Digest Digest
}

// Parse splits a presented token into its ID and the digest of its secret.
// It returns ErrMalformed (wrapped, naming what is wrong) for anything that
// is not exactly qwa_<16 hex>_<64 hex>.
func Parse(token string) (Secret, error) {
	if len(token) != Len {
		return Secret{}, fmt.Errorf("%w: length %d, want %d", ErrMalformed, len(token), Len)
	}
	if !strings.HasPrefix(token, prefix) {
		return Secret{}, fmt.Errorf("%w: does not start with %q", ErrMalformed, prefix)
	}
	rest := token[len(prefix):]
	id, secret := rest[:idLen], rest[idLen+1:]
	if rest[idLen] != '_' {
		return Secret{}, fmt.Errorf("%w: no '_' after the %d-digit ID", ErrMalformed, idLen)
	}
	if !isLowerHex(id) {
		return Secret{}, fmt.Errorf("%w: ID is not lower-case hex", ErrMalformed)
	}
	if !isLowerHex(secret) {
		return Secret{}, fmt.Errorf("%w: secret is not lower-case hex", ErrMalformed)
	}
	return Secret{ID: id, Digest: sha256.Sum256([]byte(secret))}, nil
}

// ValidID reports whether id has the form of a token ID.
func ValidID(id string) bool { return len(id) == idLen && isLowerHex(id) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// generate makes a new token from r and returns it with its parsed form.
func generate(r io.Reader) (string, Secret, error) {
	var id [idLen / 2]byte
	var secret [secretLen / 2]byte
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return "", Secret{}, fmt.Errorf("generate token: %w", err)
	}
	if _, err := io.ReadFull(r, secret[:]); err != nil {
		return "", Secret{}, fmt.Errorf("generate token: %w", err)
	}
	tok := prefix + hex.EncodeToString(id[:]) + "_" + hex.EncodeToString(secret[:])
	s, err := Parse(tok)
	return tok, s, err
}

// randReader is the source of token randomness; tests may replace it.
var randReader io.Reader = rand.Reader
