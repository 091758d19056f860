package verify

import (
	"context"
	"errors"
	"fmt"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(Check{
		ID: "gateway.audit-chain", Title: "the audit log's hash chain and signed checkpoints are intact up to now",
		Severity: Critical, Controls: []string{"AU-2", "AU-9", "AU-10", "AU-12"},
		Rationale:   "Every request is logged; an edited, removed, reordered or truncated line breaks the chain or a signed checkpoint.",
		Remediation: "Preserve the log as evidence and investigate; 'qwen-appliance audit verify' names the first bad line.",
		Run:         checkAuditChain,
	})
}

func checkAuditChain(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Gateway.AuditLog == "" {
		return notApplicable("install recorded no audit log")
	}
	g := t.State.Gateway
	files, err := audit.Files(g.AuditLog)
	if err != nil {
		return errored(err)
	}
	opts := audit.VerifyOptions{Live: true}
	if g.AuditKey != "" {
		if opts.Trusted, err = manifests.LoadPublicKeys(g.AuditKey); err != nil {
			return errored(fmt.Errorf("audit key: %w", err))
		}
	}
	rep, err := audit.Verify(files, opts)
	if errors.Is(err, audit.ErrTampered) {
		return fail(err.Error(), ev("files", "%v", files))
	}
	if err != nil {
		return errored(err, ev("files", "%v", files))
	}
	evs := []Evidence{
		ev("files", "%d", len(rep.Files)), ev("lines", "%d (%d requests)", rep.Lines, rep.Requests),
		ev("signed checkpoints", "%d, last at seq %d of %d", rep.Checkpoints, rep.LastSignedSeq, rep.LastSeq),
		ev("signing keys", "%v (self-keyed %v)", rep.KeyIDs, rep.SelfKeyed),
	}
	for _, w := range rep.Warnings {
		evs = append(evs, ev("warning", "%s", w))
	}
	return pass(fmt.Sprintf("%d lines chained, %d signed checkpoints", rep.Lines, rep.Checkpoints), evs...)
}
