package archtest

// Rules are the project's import rules, written against import paths
// relative to the module ("verify", "gateway/...", "..." for all). They are
// derived from the import graph as it is and from what each package's doc
// comment says it must never do; docs/ARCHITECTURE.md explains them. Change
// a rule deliberately, in the same commit as the import that needs it, and
// say why in Why.
var Rules = []Rule{
	{
		Pkg:  "manifests",
		Only: []string{"internal/..."},
		Why:  "manifests is the trust root: it must stay small enough to audit and depend on nothing that could change what a signature means",
	},
	{
		Pkg:  "internal/...",
		Only: []string{"internal/..."},
		Why:  "internal packages are leaves shared by everyone; importing a product package from one would invert the layering",
	},
	{
		Pkg:  "harden",
		Only: []string{"manifests", "internal/..."},
		Why:  "harden changes the host's firewall and identities; it must not pull in install, serving or bundling code",
	},
	{
		Pkg:   "gateway/...",
		Only:  []string{"gateway/...", "manifests", "internal/...", "kb"},
		Never: []string{"provision/...", "harden", "verify/...", "bundles/...", "backup/..."},
		Why:   "the gateway is the only door to the model and runs unprivileged: it must not link code that installs, hardens, verifies or bundles (it reads the knowledge base, package kb, to answer /v1/kb)",
	},
	{
		Pkg:  "verify",
		Only: []string{"manifests", "harden", "gateway/audit", "kb", "backup/layout", "internal/...", "provision/state", "provision/storage/...", "provision/preflight/gpu"},
		// Transitively too: verify must never change the host, and the
		// install orchestrator is the package that does (backup restores
		// through it: verify reads backups' names from backup/layout only).
		Never: []string{"provision", "provision/runtime", "bundles/...", "backup", "gateway"},
		Why:   "verify must never change the host: it reads the install record (provision/state), never the install code (provision)",
	},
	{
		Pkg:  "backup/layout",
		Only: []string{},
		Why:  "where backups show on a host (units, textfiles, archive names) is read by verify; it must stay a leaf",
	},
	{
		Pkg:  "provision/state",
		Only: []string{"manifests", "internal/..."},
		Why:  "the install record is read by status, verify and backup; it must stay a leaf so reading it never drags in the installer",
	},
	{
		Pkg:   "provision/...",
		Never: []string{"verify/...", "backup/...", "kb/...", "gateway", "bundles/fetch"},
		Why:   "install must not depend on the auditor's checks, on backup, on the serving code or on the network fetchers (the isolated host never fetches)",
	},
	{
		Pkg:   "bundles/...",
		Only:  []string{"bundles/...", "manifests", "internal/..."},
		Never: []string{"provision/...", "harden", "verify/...", "gateway/...", "backup/...", "kb/..."},
		Why:   "bundling runs on the connected side; it must not link code that changes or serves an appliance",
	},
	{
		Pkg: "backup/...",
		Only: []string{"backup/...", "manifests", "internal/...", "harden", "bundles/volume",
			"gateway/audit", "gateway/certs", "gateway/tokens",
			"provision", "provision/state", "provision/storage"},
		Never: []string{"verify/...", "kb/..."},
		Why:   "backup reads the appliance's record, keys and logs and restores them through install; it does not audit or serve",
	},
	{
		Pkg:   "kb/...",
		Never: []string{"provision/...", "harden", "verify/...", "backup/...", "bundles/fetch"},
		Why:   "the knowledge base sits beside the gateway (tokens, audit); it must not link install, hardening or audit code",
	},
	{
		Pkg:    "...",
		Except: []string{"cmd/..."},
		Never:  []string{"cmd/..."},
		Why:    "commands are the edge: flags become options passed to library functions, never the other way round",
	},
	{
		Pkg:    "...",
		Except: []string{"cmd/..."},
		Never:  []string{"verify/..."},
		Why:    "verify is the auditor's view; only the CLI runs it, so no library can make its own code pass",
	},
}
