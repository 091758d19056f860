package harden

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// ErrConcurrentChange means the ruleset changed between reading it and
// committing ours, and retrying did not get a clean window.
var ErrConcurrentChange = errors.New("the nftables ruleset changed while applying; nothing was changed")

// Table is the content of our nftables table, live or intended. A nil *Table
// means the table does not exist.
type Table struct {
	Chains []TableChain
}

// TableChain is one chain of Table as the kernel holds it.
type TableChain struct {
	Name     string
	Hook     string // "input", "output", "forward", … or "" for a regular chain
	Type     string // "filter", …
	Priority int32
	Policy   string // "accept", "drop" or "" for a regular chain
	Rules    []TableRule
}

// TableRule is one rule: its comment (nft's userdata) and expressions.
type TableRule struct {
	Comment string
	Exprs   []expr.Any
}

// State is the live table and the ruleset generation it was read at.
type State struct {
	Gen   uint32
	Table *Table // nil: our table does not exist
}

// Netfilter is the kernel seam: read our table, and replace it in one
// atomic batch if the ruleset is still at generation gen. A nil want deletes
// our table. Implementations return an error wrapping ErrConcurrentChange
// when gen is stale and must never touch another table.
type Netfilter interface {
	Live() (State, error)
	Replace(gen uint32, want *Table) error
}

// Table converts the ruleset to the form the kernel holds.
func (rs Ruleset) Table() *Table {
	t := &Table{}
	for _, c := range rs.Chains {
		tc := TableChain{Name: c.Name, Hook: c.Hook, Type: "filter", Priority: 0, Policy: "drop"}
		for _, r := range c.Rules {
			tc.Rules = append(tc.Rules, TableRule{Comment: r.Comment, Exprs: r.Exprs})
		}
		t.Chains = append(t.Chains, tc)
	}
	return t
}

// fingerprint identifies a rule by its comment and marshalled expressions,
// so rules read back from the kernel compare equal to the ones we built.
func (r TableRule) fingerprint() string {
	var b strings.Builder
	b.WriteString(r.Comment)
	for _, e := range r.Exprs {
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), e)
		if err != nil {
			fmt.Fprintf(&b, "|%T!%v", e, err)
			continue
		}
		b.WriteString("|" + hex.EncodeToString(data))
	}
	return b.String()
}

func (c TableChain) header() string {
	if c.Hook == "" {
		return fmt.Sprintf("chain %s (regular)", c.Name)
	}
	return fmt.Sprintf("chain %s: type %s hook %s priority %d; policy %s", c.Name, c.Type, c.Hook, c.Priority, c.Policy)
}

func comment(udata []byte) string {
	s, _ := userdata.GetString(udata, userdata.TypeComment)
	return s
}

var hooks = map[string]*nftables.ChainHook{
	"prerouting":  nftables.ChainHookPrerouting,
	"input":       nftables.ChainHookInput,
	"forward":     nftables.ChainHookForward,
	"output":      nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
	"ingress":     nftables.ChainHookIngress,
}

func hookName(h *nftables.ChainHook) string {
	if h == nil {
		return ""
	}
	for n, v := range hooks {
		if *v == *h {
			return n
		}
	}
	return fmt.Sprintf("hook%d", *h)
}
