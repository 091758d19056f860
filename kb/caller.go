package kb

import (
	"errors"
	"fmt"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// ErrToken is returned (wrapped) when a token cannot act as a caller: it is
// not in the token file, or it is revoked or expired.
var ErrToken = errors.New("token may not search")

// TokenCaller returns what a gateway token may read: "all", user:ID, and
// role:R for each of its knowledge-base roles, at its clearance. The token
// file is read on every call, so a revoked or changed token takes effect at
// once. Errors: ErrToken, and errors reading the file.
func TokenCaller(tokenFile, id string, now time.Time) (Caller, error) {
	s, err := tokens.Load(tokenFile)
	if err != nil {
		return Caller{}, err
	}
	t := s.Find(id)
	if t == nil {
		return Caller{}, fmt.Errorf("%w: no token with ID %q in %s", ErrToken, id, tokenFile)
	}
	if st := t.State(now); st != "active" {
		return Caller{}, fmt.Errorf("%w: token %s is %s", ErrToken, id, st)
	}
	return CallerOf(t)
}

// CallerOf maps a token entry to a caller. A token without clearance is
// cleared for public documents only.
func CallerOf(t *tokens.Token) (Caller, error) {
	c := Caller{Principals: []Principal{Principal("user:" + t.ID)}}
	for _, r := range t.Roles {
		p, err := ParsePrincipal("role:" + r)
		if err != nil {
			return Caller{}, err
		}
		c.Principals = append(c.Principals, p)
	}
	if t.Clearance != "" {
		cl, err := ParseClass(t.Clearance)
		if err != nil {
			return Caller{}, err
		}
		c.Clearance = cl
	}
	return c, nil
}
