package harden

import (
	"errors"
	"fmt"
)

// ErrConcurrentChange means the ruleset changed between reading it and
// committing ours, and retrying did not get a clean window.
var ErrConcurrentChange = errors.New("the nftables ruleset changed while applying; nothing was changed")

// ErrUnsupported is returned where nftables does not exist (not Linux).
var ErrUnsupported = errors.New("nftables is only available on Linux")

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

// TableRule is one rule: its comment (nft's userdata) and Key, which is
// equal for two rules exactly when their comments and kernel expressions
// are.
type TableRule struct {
	Comment string
	Key     string
	src     any // Rule when built here, the kernel's expressions when read
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

// ruleKey gives a built rule its Key; exprs_linux.go sets it to the
// marshalled kernel expressions.
var ruleKey = func(r Rule) string { return r.Comment + "|" + r.Text }

// Table converts the ruleset to the form the kernel holds.
func (rs Ruleset) Table() *Table {
	t := &Table{}
	for _, c := range rs.Chains {
		tc := TableChain{Name: c.Name, Hook: c.Hook, Type: "filter", Priority: 0, Policy: "drop"}
		for _, r := range c.Rules {
			tc.Rules = append(tc.Rules, TableRule{Comment: r.Comment, Key: ruleKey(r), src: r})
		}
		t.Chains = append(t.Chains, tc)
	}
	return t
}

func (c TableChain) header() string {
	if c.Hook == "" {
		return fmt.Sprintf("chain %s (regular)", c.Name)
	}
	return fmt.Sprintf("chain %s: type %s hook %s priority %d; policy %s", c.Name, c.Type, c.Hook, c.Priority, c.Policy)
}

// ErrNoCounter means our table, or the counted drop at the end of its output
// chain (EgressDenied), is not in the kernel: nothing the appliance drops
// is counted.
var ErrNoCounter = errors.New("no egress drop counter: table inet " + TableName + " or its \"" + EgressDenied + "\" rule is missing")
