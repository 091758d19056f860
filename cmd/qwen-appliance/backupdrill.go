package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/verify"
)

// drillOffline are verify's checks that read only files, and so can run
// against a drill's scratch root; every other check needs the running
// host (services, firewall, listeners, the unlocked store, GPUs) and is
// reported as not applicable.
var drillOffline = map[string]bool{
	"integrity.manifest":     true,
	"integrity.config-files": true,
	"integrity.model-files":  true,
	"gateway.audit-chain":    true,
	"kb.acl":                 true,
	"kb.content":             true,
}

// drillHostChecks runs verify's file checks against the tree a drill
// restored, with the backed-up install record moved under it.
func drillHostChecks(ctx context.Context, root string, st *state.State, m *backup.Manifest) []backup.Check {
	var only []string
	var out []backup.Check
	for _, c := range verify.Checks() {
		switch {
		case c.ID == "integrity.model-files" && !m.IncludesModel:
			out = append(out, backup.Check{Name: c.ID, OK: true, Status: backup.NotApplicable,
				Detail: "the backup holds no weights (made without --include-model): the signed bundle re-creates them"})
		case drillOffline[c.ID]:
			only = append(only, c.ID)
		default:
			out = append(out, backup.Check{Name: c.ID, OK: true, Status: backup.NotApplicable,
				Detail: "checks the running host; a drill restores files only"})
		}
	}
	// The knowledge base's owner is the service user's on the host; in
	// the scratch root it is whoever runs the drill.
	st.ServiceUser = ""
	rep, err := verify.Run(ctx, verify.Options{Target: verify.Target{Root: root, State: st, Full: true}, Only: only})
	if err != nil {
		return append(out, backup.Check{Name: "verify", Status: backup.Fail, Detail: err.Error()})
	}
	for _, r := range rep.Results {
		c := backup.Check{Name: r.ID, OK: r.Status == verify.Pass || r.Status == verify.NotApplicable, Detail: r.Message}
		switch r.Status {
		case verify.Pass:
			c.Status = backup.Pass
		case verify.NotApplicable:
			c.Status = backup.NotApplicable
		default:
			c.Status = backup.Fail
			var ev []string
			for _, e := range r.Evidence {
				ev = append(ev, e.Name+": "+e.Value)
			}
			if len(ev) > 0 {
				c.Detail += fmt.Sprintf(" (%s)", strings.Join(ev, "; "))
			}
		}
		out = append(out, c)
	}
	return out
}
