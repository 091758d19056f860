package kb

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// Class is how sensitive a document is. A caller reads a document only when
// its clearance is at least the document's class and one of its principals
// is on the document's access list.
type Class int

// Classes, in increasing order of sensitivity.
const (
	Public Class = iota
	Internal
	Secret
)

var classNames = [...]string{"public", "internal", "secret"}

func (c Class) String() string {
	if c < Public || c > Secret {
		return fmt.Sprintf("class(%d)", int(c))
	}
	return classNames[c]
}

// MarshalText writes the class's name.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// ParseClass reads "public", "internal" or "secret".
func ParseClass(s string) (Class, error) {
	if i := slices.Index(classNames[:], s); i >= 0 {
		return Class(i), nil
	}
	return 0, fmt.Errorf("class %q is not one of public, internal, secret", s)
}

// Principal names who may read a document: "role:NAME" (a role a gateway
// token carries), "user:TOKEN-ID" (one token) or "all" (every caller).
type Principal string

// All is the principal every caller has.
const All Principal = "all"

// ErrPrincipal is returned (wrapped) for a principal that is not well formed.
var ErrPrincipal = errors.New("principal is not role:NAME, user:TOKEN-ID or all")

// ParsePrincipal checks a principal. Role names are lower case letters,
// digits, '-', '_' and '.', at most 64 of them, so that a principal can
// never smuggle a separator or a wildcard into a list; a user is a token ID.
func ParsePrincipal(s string) (Principal, error) {
	if s == string(All) {
		return All, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "role" && kind != "user") || !tokens.ValidRole(name) {
		return "", fmt.Errorf("%w: %q", ErrPrincipal, s)
	}
	if kind == "user" && !tokens.ValidID(name) {
		return "", fmt.Errorf("%w: %q: a user is named by its token ID, 16 hex digits (see 'tokens list')", ErrPrincipal, s)
	}
	return Principal(s), nil
}

// ParsePrincipals reads a comma-separated list such as "role:hr,role:admin".
// Duplicates are dropped; an empty list is an error, since a document
// without readers is one nobody can find.
func ParsePrincipals(list ...string) ([]Principal, error) {
	var out []Principal
	for _, l := range list {
		for _, s := range strings.Split(l, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			p, err := ParsePrincipal(s)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the access list is empty")
	}
	slices.Sort(out)
	return out, nil
}

// Caller is who asks: the principals they hold and their clearance. The
// zero Caller holds "all" only (it is always added) at clearance public.
type Caller struct {
	Principals []Principal
	Clearance  Class
}

// principals returns c's principal set as the query binds it: sorted,
// without duplicates, always including All.
func (c Caller) principals() []string {
	out := []string{string(All)}
	for _, p := range c.Principals {
		if !slices.Contains(out, string(p)) {
			out = append(out, string(p))
		}
	}
	slices.Sort(out)
	return out
}

// String names the caller for logs: principals and clearance.
func (c Caller) String() string {
	return strings.Join(c.principals(), ",") + "@" + c.Clearance.String()
}
