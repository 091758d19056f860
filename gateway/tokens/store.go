package tokens

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/flock"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// Role says what a token may do through the gateway.
type Role string

// Roles. A user and an admin may call the inference routes; an auditor may
// only list models (it exists so that a reviewer's token cannot spend GPU
// time or read completions).
const (
	RoleUser    Role = "user"
	RoleAdmin   Role = "admin"
	RoleAuditor Role = "auditor"
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleUser, RoleAdmin, RoleAuditor:
		return r, nil
	}
	return "", fmt.Errorf("role %q is not one of user, admin, auditor", s)
}

// Token is one entry of the token file: everything about a token except its
// secret.
type Token struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Role   Role     `json:"role"`
	Models []string `json:"models,omitempty"` // empty: every model
	// Roles and Clearance are what the token may read in the knowledge
	// base: documents allowed to role:NAME for one of Roles, at or below
	// Clearance (public, internal, secret; empty means public). Older
	// token files have neither, and such tokens read only what is allowed
	// to "all" or to their own user:ID at class public.
	Roles     []string   `json:"roles,omitempty"`
	Clearance string     `json:"clearance,omitempty"`
	RPM       int        `json:"rpm,omitempty"` // requests per minute, 0: unlimited
	TPM       int        `json:"tpm,omitempty"` // tokens per minute, 0: unlimited
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires,omitempty"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	Digest    string     `json:"digest"`

	digest Digest
}

// AllowsModel reports whether t may use model.
func (t *Token) AllowsModel(model string) bool {
	return len(t.Models) == 0 || slices.Contains(t.Models, model)
}

// State names where t stands at now: "active", "revoked" or "expired".
func (t *Token) State(now time.Time) string {
	switch {
	case t.Revoked != nil:
		return "revoked"
	case t.Expires != nil && !now.Before(*t.Expires):
		return "expired"
	}
	return "active"
}

// Store is the content of a token file.
type Store struct {
	Version int      `json:"version"`
	Tokens  []*Token `json:"tokens"`
}

const storeVersion = 1

// ParseStore decodes a token file strictly: unknown fields, duplicate IDs, bad
// digests and unknown roles are errors naming the entry.
func ParseStore(data []byte) (*Store, error) {
	var s Store
	if err := jsonstrict.Decode(data, &s); err != nil {
		return nil, fmt.Errorf("parse token file: %w", err)
	}
	if s.Version != storeVersion {
		return nil, fmt.Errorf("parse token file: version %d is not supported (want %d)", s.Version, storeVersion)
	}
	seen := map[string]bool{}
	for i, t := range s.Tokens {
		if t == nil {
			return nil, fmt.Errorf("parse token file: tokens[%d] is null", i)
		}
		if !ValidID(t.ID) {
			return nil, fmt.Errorf("parse token file: tokens[%d].id %q is not %d hex digits", i, t.ID, idLen)
		}
		if seen[t.ID] {
			return nil, fmt.Errorf("parse token file: tokens[%d].id %s appears twice", i, t.ID)
		}
		seen[t.ID] = true
		if _, err := ParseRole(string(t.Role)); err != nil {
			return nil, fmt.Errorf("parse token file: tokens[%d] (%s): %w", i, t.ID, err)
		}
		d, err := parseDigest(t.Digest)
		if err != nil {
			return nil, fmt.Errorf("parse token file: tokens[%d] (%s): %w", i, t.ID, err)
		}
		t.digest = d
		if t.RPM < 0 || t.TPM < 0 {
			return nil, fmt.Errorf("parse token file: tokens[%d] (%s): negative rate limit", i, t.ID)
		}
		if err := checkAccess(t.Roles, t.Clearance); err != nil {
			return nil, fmt.Errorf("parse token file: tokens[%d] (%s): %w", i, t.ID, err)
		}
	}
	return &s, nil
}

// Load reads a token file. A missing file is an empty store, so the first
// "tokens create" can make it.
func Load(path string) (*Store, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Store{Version: storeVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	s, err := ParseStore(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Save writes s to path atomically with mode 0600, keeping the owner of the
// file it replaces: root running "tokens create" on an installed host must
// leave the file to the gateway's user, which reads it.
func (s *Store) Save(path string) error {
	s.Version = storeVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("save token file: %w", err)
	}
	if err := atomicfile.ReplaceFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save token file %s: %w", path, err)
	}
	return nil
}

// LockPath is the lock file Update creates beside the token file at path
// and leaves there: whoever removes a token file it made removes this too.
func LockPath(path string) string { return path + ".lock" }

// Update loads the token file, lets fn change it and saves it, holding a
// lock (LockPath) so that concurrent updates do not lose each other's
// changes. Nothing is saved when fn fails.
func Update(path string, fn func(*Store) error) error {
	lf, err := os.OpenFile(LockPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock token file: %w", err)
	}
	defer lf.Close()
	if err := flock.Lock(lf); err != nil {
		return fmt.Errorf("lock token file: %w", err)
	}
	s, err := Load(path)
	if err != nil {
		return err
	}
	if err := fn(s); err != nil {
		return err
	}
	return s.Save(path)
}

// CreateOptions describe a new token.
type CreateOptions struct {
	Name    string
	Role    Role
	Models  []string
	Expires time.Duration // 0: never
	RPM     int
	TPM     int
	Now     time.Time // zero: time.Now()
	// Roles and Clearance: see Token.
	Roles     []string
	Clearance string
}

// Create adds a new token to s and returns the token text, which is shown
// once and never stored, and its entry.
func (s *Store) Create(o CreateOptions) (string, *Token, error) {
	if strings.TrimSpace(o.Name) == "" {
		return "", nil, errors.New("create token: the name is empty")
	}
	if _, err := ParseRole(string(o.Role)); err != nil {
		return "", nil, fmt.Errorf("create token: %w", err)
	}
	if o.RPM < 0 || o.TPM < 0 || o.Expires < 0 {
		return "", nil, errors.New("create token: negative limit or expiry")
	}
	if err := checkAccess(o.Roles, o.Clearance); err != nil {
		return "", nil, fmt.Errorf("create token: %w", err)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Second)
	var tok string
	var sec Secret
	for {
		var err error
		tok, sec, err = generate(randReader)
		if err != nil {
			return "", nil, err
		}
		if s.find(sec.ID) == nil {
			break
		}
	}
	t := &Token{ID: sec.ID, Name: o.Name, Role: o.Role, Models: o.Models, RPM: o.RPM, TPM: o.TPM,
		Roles: slices.Compact(slices.Sorted(slices.Values(o.Roles))), Clearance: o.Clearance,
		Created: now, Digest: sec.Digest.String(), digest: sec.Digest}
	if o.Expires > 0 {
		e := now.Add(o.Expires)
		t.Expires = &e
	}
	s.Tokens = append(s.Tokens, t)
	return tok, t, nil
}

// Revoke marks the token with the given ID or name revoked. It fails when
// nothing, or more than one token, matches.
func (s *Store) Revoke(idOrName string, now time.Time) (*Token, error) {
	var match []*Token
	for _, t := range s.Tokens {
		if t.ID == idOrName || t.Name == idOrName {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("revoke: no token has ID or name %q", idOrName)
	case 1:
	default:
		return nil, fmt.Errorf("revoke: %d tokens are named %q; pass the ID", len(match), idOrName)
	}
	if match[0].Revoked == nil {
		r := now.UTC().Truncate(time.Second)
		match[0].Revoked = &r
	}
	return match[0], nil
}

func (s *Store) find(id string) *Token {
	for _, t := range s.Tokens {
		if t.ID == id {
			return t
		}
	}
	return nil
}

// unknownDigest is compared against when the ID is unknown, so that an
// unknown ID costs the same work as a wrong secret.
var unknownDigest Digest

// Authenticate checks a presented token at now. Errors: ErrMalformed,
// ErrUnknown (unknown ID or wrong secret: deliberately not told apart),
// ErrRevoked, ErrExpired. The returned token is non-nil for the last two so
// the caller can name it in the audit log.
func (s *Store) Authenticate(token string, now time.Time) (*Token, error) {
	sec, err := Parse(token)
	if err != nil {
		return nil, err
	}
	t := s.find(sec.ID)
	want := unknownDigest
	if t != nil {
		want = t.digest
	}
	if subtle.ConstantTimeCompare(want[:], sec.Digest[:]) != 1 || t == nil {
		return nil, ErrUnknown
	}
	switch t.State(now) {
	case "revoked":
		return t, ErrRevoked
	case "expired":
		return t, ErrExpired
	}
	return t, nil
}

// Clearances, lowest first.
var Clearances = []string{"public", "internal", "secret"}

// checkAccess checks knowledge-base roles (lower-case letters, digits, '-',
// '_', '.'; at most 64 characters) and a clearance.
func checkAccess(roles []string, clearance string) error {
	for _, r := range roles {
		if !ValidRole(r) {
			return fmt.Errorf("role %q is not lower-case letters, digits, '-', '_' or '.' (at most 64)", r)
		}
	}
	if clearance != "" && !slices.Contains(Clearances, clearance) {
		return fmt.Errorf("clearance %q is not one of public, internal, secret", clearance)
	}
	return nil
}

// ValidRole reports whether s may name a role: lower-case letters, digits,
// '-', '_' and '.', at most 64 of them, so that a role can never carry a
// separator or a wildcard into a token's or a document's access list.
func ValidRole(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Find returns the token with the given ID, or nil.
func (s *Store) Find(id string) *Token { return s.find(id) }
