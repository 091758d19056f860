package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/kb"
)

func init() {
	register(
		Check{
			ID: "kb.acl", Title: "every knowledge-base document has an access list",
			Severity: High, Controls: []string{"AC-3", "AC-6"},
			Rationale:   "A document without an access list is invisible to every caller, but it also records nobody's decision about who may read it: an access list removed outside the CLI, or a half-finished import.",
			Remediation: "Give each named document an access list with 'qwen-appliance kb acl set DOC --allow role:NAME,...', or remove it with 'kb remove DOC'.",
			Run:         kbCheck("acl", "every document has an access list"),
		},
		Check{
			ID: "kb.permissions", Title: "the knowledge base is owned by the gateway's service user, file 0600 and directory 0700",
			Severity: High, Controls: []string{"AC-3", "AC-6", "SC-28"},
			Rationale:   "The database holds every document's text, whatever its class; any other local account that can read it bypasses the access lists.",
			Remediation: "chown -R the store's kb/ directory to the gateway's service user (qwen-appliance), chmod 0700 the directory and 0600 kb.db and its -wal/-shm files; find out who changed them.",
			Run:         kbCheck("mode", "file and directory private to the service user"),
		},
		Check{
			ID: "kb.location", Title: "the knowledge base lies inside the encrypted model store",
			Severity: Critical, Controls: []string{"SC-28", "SC-28(1)"},
			Rationale:   "Documents are as sensitive as the weights; outside the store (a symbolic link to another disk) they would be readable from a stolen or decommissioned disk.",
			Remediation: "Move kb.db back into STORE/kb/ (replace the symbolic link with a directory) and re-ingest from the original documents if the copy outside cannot be trusted; wipe the outside copy.",
			Run:         kbCheck("location", "inside the encrypted store"),
		},
		Check{
			ID: "kb.content", Title: "stored knowledge-base chunks still hash to what ingest recorded",
			Severity: High, Controls: []string{"SI-7", "SI-7(1)"},
			Rationale:   "A chunk edited in the database, bypassing ingest, changes what the model is told about company policy without a trace in the audit log.",
			Remediation: "Re-ingest each named document from its source ('qwen-appliance kb ingest PATH ...'), which replaces its chunks and raises its version; investigate who wrote to the database.",
			Run:         kbCheck("content", "stored chunks match their recorded hashes"),
		},
	)
}

// kbPath is where an installed appliance keeps its knowledge base: the
// store's kb/ directory, as the kb CLI's --db default.
func kbPath(t *Target) string {
	if t.State == nil || t.State.Store.Dir == "" {
		return ""
	}
	return kb.StorePath(t.State.Store.Dir)
}

// kbCheck returns a check's Run that keeps kb.Check's problems of one kind.
func kbCheck(kind, ok string) func(context.Context, *Target) Outcome {
	return func(ctx context.Context, t *Target) Outcome {
		p := kbPath(t)
		if p == "" {
			return notApplicable("install recorded no model store")
		}
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return notApplicable("no knowledge base at " + p)
		} else if err != nil {
			return errored(err)
		}
		evs := []Evidence{ev("database", "%s", p), ev("store", "%s", t.State.Store.Dir)}
		probs, err := kbProblems(ctx, t, p)
		if err != nil {
			return errored(err, evs...)
		}
		var bad []string
		for _, pr := range probs {
			if pr.Check == kind {
				bad = append(bad, pr.Detail)
				evs = append(evs, ev("problem", "%s", pr.Detail))
			}
		}
		if len(bad) > 0 {
			return fail(strings.Join(bad, "; "), evs...)
		}
		if kind == "mode" {
			evs = append(evs, ev("owner", "uid %d (%s)", kbUID(t), t.State.ServiceUser))
		}
		return pass(ok, evs...)
	}
}

// kbUID is the owner the database must have: the gateway's service user,
// or -1 (not checked) when install recorded none.
func kbUID(t *Target) int {
	if t.State.ServiceUser == "" {
		return -1
	}
	return t.State.ServiceUID
}

func kbProblems(ctx context.Context, t *Target, p string) ([]kb.Problem, error) {
	// Read-only: verify never changes the host, not even -wal/-shm files.
	k, err := kb.OpenReadOnly(p)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	probs, err := k.Check(ctx, kb.CheckOptions{Store: t.State.Store.Dir, UID: kbUID(t)})
	if err != nil {
		return nil, fmt.Errorf("knowledge base %s: %w", p, err)
	}
	return probs, nil
}
