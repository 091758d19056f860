package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func init() {
	register(&cli.Command{
		Name:  "backup",
		Usage: "back up, check and restore an installation (age-encrypted, signed)",
		Subcommands: []*cli.Command{{
			Name:      "create",
			Usage:     "write one encrypted archive of everything needed to rebuild this host",
			UsageText: "qwen-appliance backup create --out FILE --recipient AGE-RECIPIENT... [--recipient-file F] [--key SIGNING.key] [--include-model] [--root R]",
			Description: `Writes one age file (X25519 "age1…" or hybrid post-quantum "age1pq1…"
recipients; at least one) holding a tar of: ROOT/etc/qwen-appliance (token file,
TLS CA and server keys, audit and store keys, trusted bundle keys), the install
state, harden record, unit and rules files, the audit log with its rotated
files and checkpoints, the store's metadata and protectors, and the installed
bundle's manifest and signature. The weights only with --include-model: the
signed bundle re-creates them. Its last members are a manifest listing every
member's SHA-256, the bundle version and the audit chain head, and a signature
by --key (default: the appliance's audit key, ROOT/etc/qwen-appliance/audit.key).

The gateway keeps serving: the audit log is copied up to its last complete
line, and that line's sequence number and hash are recorded as the head. The
decryption identity is never needed, read or written here. A successful
backup rewrites the Prometheus textfile --metrics-textfile with
qwen_backup_last_success_timestamp_seconds (the BackupStale alert reads it).`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "archive to write (must not exist)"},
				&cli.StringFlag{Name: "out-dir", Usage: "write qwen-backup-TIMESTAMP.age into `DIR` instead of --out"},
				&cli.IntFlag{Name: "keep", Usage: "with --out-dir: after a success, remove all but the newest `N` backups there"},
				&cli.StringSliceFlag{Name: "recipient", Aliases: []string{"r"}, Usage: "age recipient (age1… or age1pq1…), repeatable"},
				&cli.StringSliceFlag{Name: "recipient-file", Aliases: []string{"R"}, Usage: "file of age recipients, one a line"},
				&cli.StringFlag{Name: "key", Usage: "private key that signs the inner manifest (default ROOT/etc/qwen-appliance/audit.key)"},
				&cli.BoolFlag{Name: "include-model", Usage: "also back up the bundle's weights"},
				&cli.StringFlag{Name: "root", Value: "/", Usage: "the installation's root PREFIX"},
				&cli.StringFlag{Name: "metrics-textfile", Usage: "Prometheus textfile to update on success ('none' skips; default ROOT" + backup.DefaultTextfileDir + "/" + backup.TextfileName + " when that directory exists)"},
				&cli.BoolFlag{Name: "json", Usage: "print the manifest as JSON"},
			},
			Action: backupCreate,
		}, {
			Name:      "schedule",
			Usage:     "install a systemd timer that runs backup create with retention",
			UsageText: "qwen-appliance backup schedule --out-dir D --keep N --recipient-file F [--key K] [--on-calendar daily] [--include-model] [--root R]",
			Description: `Writes ROOT/etc/systemd/system/qwen-appliance-backup.service (a oneshot running
'backup create --out-dir D --keep N' with idle I/O priority) and its timer
(OnCalendar, Persistent, up to 15 minutes' random delay), then, on a host
booted with systemd and --root /, enables and starts the timer. Elsewhere it
writes the files and says so. Paths must be absolute. Pair it with the
BackupStale alert (docs/monitoring.md).`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out-dir", Usage: "directory the backups go to (absolute)"},
				&cli.IntFlag{Name: "keep", Value: 7, Usage: "backups to keep"},
				&cli.StringFlag{Name: "recipient-file", Usage: "file of age recipients (absolute)"},
				&cli.StringFlag{Name: "key", Usage: "signing key (default: the audit key)"},
				&cli.StringFlag{Name: "on-calendar", Value: "daily", Usage: "systemd calendar expression"},
				&cli.BoolFlag{Name: "include-model", Usage: "also back up the weights"},
				&cli.StringFlag{Name: "root", Value: "/", Usage: "write the units under this PREFIX"},
				jsonOutput,
			},
			Action: backupSchedule,
		}, {
			Name:      "verify",
			Usage:     "decrypt an archive and check its signature, every hash and the audit chain",
			UsageText: "qwen-appliance backup verify FILE --identity F --trust PUB [--drill]",
			Description: `Decrypts into a private temporary directory (removed afterwards), checks the
manifest's signature against --trust, every member's SHA-256, size and mode,
that nothing is missing or added, and that the audit log verifies (signed
checkpoints by the backed-up audit key) up to the recorded head. The audit log
and the model's files are checked as they stream past and never written, so
only configuration, state and the knowledge-base snapshot need scratch space;
--drill writes everything. --drill also
restores the archive into a scratch root beside it (restore's own steps, less
those that change the host: no users, chown, install or services) and checks
the restored tree: the token file has an active token, the TLS server
certificate chains to the CA and is valid now, the audit key pair matches, the
audit log verifies across its new restore record, the harden record matches
its rules file, and verify's file checks (integrity.*, gateway.audit-chain,
kb.acl, kb.content) pass on the backed-up install record; verify's checks of
the running host are reported as not applicable. --report records each
check's outcome (800-53 CP-4, CP-9, CP-10). A wrong identity, a flipped or
truncated archive, an untrusted signer, a failed drill check: exit 3.`,
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "age identity file (keep it offline)"},
				&cli.StringSliceFlag{Name: "trust", Usage: "public key the backup must be signed by"},
				&cli.BoolFlag{Name: "drill", Usage: "also restore into a scratch root and check that the restored host would work"},
				&cli.StringFlag{Name: "report", Usage: "write the report as JSON to `FILE`, signed (FILE.sig, purpose backup-drill) with --key"},
				&cli.StringFlag{Name: "key", Usage: "private key that signs --report"},
				&cli.StringFlag{Name: "metrics-textfile", Usage: "with --drill: Prometheus textfile to record the outcome in (e.g. " + backup.DefaultTextfileDir + "/" + backup.DrillTextfileName + ")"},
				&cli.StringFlag{Name: "scratch", Usage: "directory to decrypt into (a private temporary directory inside it, removed afterwards; default $TMPDIR)"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			},
			Action: backupVerify,
		}, {
			Name:      "restore",
			Usage:     "rebuild an installation from a backup and its signed bundle",
			UsageText: "qwen-appliance backup restore FILE --identity F --trust PUB --bundle B [--bundle-trust K.pub] [--root R] [--store S] [--force]",
			Description: `Verifies the whole archive first (nothing changes before that passes), then
puts back ROOT/etc/qwen-appliance and the audit log, appends a signed "restore"
record naming the backup to the log, and installs --bundle with the backed-up
settings (listen addresses, CIDRs, egress, store path): the same tokens work,
the same CA signs the gateway's certificate, and the audit chain continues.
The model store is created anew (the old one's key material may be erased);
its new recovery key is printed once. The bundle is checked against the keys
the backed-up installation trusted unless --bundle-trust is given.
Without --bundle, a backup made with --include-model installs the bundle it
holds (verified like any other). Refused: an existing installation without
--force, a backup from a newer bundle version than --bundle (exit 3). A restore killed at any point is
finished by running the same command again.`,
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "age identity file"},
				&cli.StringSliceFlag{Name: "trust", Usage: "public key the backup must be signed by"},
				&cli.StringFlag{Name: "bundle", Usage: "the signed bundle to install (same or newer version than the backup's; default: the one in a backup made with --include-model)"},
				&cli.StringSliceFlag{Name: "bundle-trust", Usage: "public key the bundle must be signed by (default: the backed-up trusted keys)"},
				&cli.StringFlag{Name: "root", Value: "/", Usage: "install under this PREFIX"},
				&cli.StringFlag{Name: "store", Usage: "model store directory (default: the backed-up one)"},
				&cli.BoolFlag{Name: "force", Usage: "restore over an existing installation"},
				&cli.StringSliceFlag{Name: "probe", Usage: "address verify's egress probe must fail to reach (default: the backed-up ones)"},
				jsonOutput,
			},
			Action: backupRestore,
		}},
	})
}

func parseRecipients(c *cli.Context) ([]age.Recipient, error) {
	var rs []age.Recipient
	for _, s := range c.StringSlice("recipient") {
		r, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil {
			return nil, usagef("--recipient takes an age public key (age1… or age1pq1…); make one with age-keygen [-pq]", "--recipient %q: %v", s, err)
		}
		rs = append(rs, r...)
	}
	for _, p := range c.StringSlice("recipient-file") {
		f, err := os.Open(p)
		if err != nil {
			return nil, withCode(exitError, err, "check --recipient-file")
		}
		r, err := age.ParseRecipients(f)
		f.Close()
		if err != nil {
			return nil, usagef("--recipient-file holds age public keys, one a line", "--recipient-file %s: %v", p, err)
		}
		rs = append(rs, r...)
	}
	if len(rs) == 0 {
		return nil, usagef("pass --recipient age1… (the public half of an identity kept offline)", "no recipient given: nobody could decrypt the backup")
	}
	return rs, nil
}

func backupCreate(c *cli.Context) error {
	out := c.String("out")
	switch {
	case out != "" && c.String("out-dir") != "":
		return usagef("pass --out FILE or --out-dir DIR", "both --out and --out-dir given")
	case c.String("out-dir") != "":
		out = filepath.Join(c.String("out-dir"), backup.Name(time.Now()))
	case out == "":
		return usagef("pass --out FILE", "--out is required")
	case c.IsSet("keep"):
		return usagef("--keep prunes an --out-dir", "--keep without --out-dir")
	}
	if c.IsSet("keep") && c.Int("keep") < 1 {
		return usagef("--keep takes a number from 1 up", "--keep %d", c.Int("keep"))
	}
	rs, err := parseRecipients(c)
	if err != nil {
		return err
	}
	root := c.String("root")
	keyPath := c.String("key")
	if keyPath == "" {
		keyPath = filepath.Join(root, provision.ConfigDir, "audit.key")
	}
	k, err := privateKey(keyPath)
	if err != nil {
		return withCode(exitError, err, "pass --key SIGNING.key")
	}
	textfile := c.String("metrics-textfile")
	switch textfile {
	case "none":
		textfile = ""
	case "":
		if d := filepath.Join(root, backup.DefaultTextfileDir); isDir(d) {
			textfile = filepath.Join(d, backup.TextfileName)
		}
	}
	m, err := backup.Create(c.Context, backup.Options{Root: root, Out: out, Recipients: rs, Key: k,
		IncludeModel: c.Bool("include-model"), Textfile: textfile, Tool: toolVersion(), Log: c.App.ErrWriter,
		Extra: kbBackupExtra(root)})
	if err != nil {
		if errors.Is(err, state.ErrNotInstalled) {
			return withCode(exitError, err, "pass the installation's --root")
		}
		return err
	}
	if c.IsSet("keep") {
		removed, err := backup.Prune(c.String("out-dir"), c.Int("keep"))
		for _, p := range removed {
			fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: backup: removed %s (--keep %d)\n", p, c.Int("keep"))
		}
		if err != nil {
			return fmt.Errorf("backup written to %s, but: %w", out, err)
		}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, m)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s: %d members, %s version %d, audit head seq %d, signed by %s\n",
		out, len(m.Members), m.Bundle.Name, m.Bundle.Version, m.AuditHead.Seq, k.ID)
	return nil
}

// isDir reports whether p is a directory (following symlinks).
func isDir(p string) bool { fi, err := os.Stat(p); return err == nil && fi.IsDir() }

// openArgs reads the FILE, --identity and --trust that verify and restore share.
func openArgs(c *cli.Context, verb string) (string, []age.Identity, []manifests.PublicKey, error) {
	if c.NArg() != 1 {
		return "", nil, nil, usagef("qwen-appliance backup "+verb+" FILE --identity F --trust PUB", "want exactly one FILE, got %d", c.NArg())
	}
	if len(c.StringSlice("identity")) == 0 {
		return "", nil, nil, usagef("pass --identity FILE, the age identity the backup was made for", "no identity given")
	}
	if len(c.StringSlice("trust")) == 0 {
		return "", nil, nil, usagef("pass --trust PUB, the public key that signed the backup (the audit key's audit.pub by default)", "no trusted key given")
	}
	var ids []age.Identity
	for _, p := range c.StringSlice("identity") {
		f, err := os.Open(p)
		if err != nil {
			return "", nil, nil, withCode(exitError, err, "check --identity")
		}
		id, err := age.ParseIdentities(f)
		f.Close()
		if err != nil {
			return "", nil, nil, usagef("--identity takes an age identity file (AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1…)", "--identity %s: %v", p, err)
		}
		ids = append(ids, id...)
	}
	keys, err := manifests.LoadPublicKeys(c.StringSlice("trust")...)
	if err != nil {
		return "", nil, nil, withCode(exitError, err, "check --trust")
	}
	return c.Args().First(), ids, keys, nil
}

func backupError(err error) error {
	if errors.Is(err, backup.ErrInstall) {
		switch {
		case errors.Is(err, manifests.ErrVerification):
			return withCode(exitVerification, err, "the bundle failed verification: check --bundle and --bundle-trust")
		case errors.Is(err, provision.ErrHostUnfit):
			return withCode(exitHostUnfit, err, "run 'qwen-appliance preflight' for the full table")
		}
		return withCode(exitError, err, "the configuration is restored; fix the cause and run the same restore again to finish")
	}
	switch {
	case errors.Is(err, backup.ErrIdentity):
		return withCode(exitVerification, err, "pass the identity whose recipient the backup was made for")
	case errors.Is(err, manifests.ErrUntrustedKey):
		return withCode(exitVerification, err, "pass the public key of the key that signed the backup with --trust")
	case errors.Is(err, backup.ErrNewerBackup):
		return withCode(exitVerification, err, "restore with the bundle version the backup was taken from, or a newer one")
	case errors.Is(err, manifests.ErrVerification):
		return withCode(exitVerification, err, "the archive was changed, truncated or damaged: use another copy")
	case errors.Is(err, provision.ErrHostUnfit):
		return withCode(exitHostUnfit, err, "run 'qwen-appliance preflight' for the full table")
	case errors.Is(err, backup.ErrNoBundle):
		return withCode(exitUsage, err, "pass --bundle DIR, the signed bundle to install")
	case errors.Is(err, backup.ErrInstalled):
		return withCode(exitError, err, "uninstall first, or pass --force to restore over it")
	}
	return err
}

// lessGC makes the garbage collector run a quarter as often: checking the
// audit chain allocates a few strings per line and keeps almost none, so
// the heap stays small and collecting it was a fifth of verify's CPU time.
func lessGC() { debug.SetGCPercent(400) }

func backupVerify(c *cli.Context) error {
	file, ids, keys, err := openArgs(c, "verify")
	if err != nil {
		return err
	}
	lessGC()
	var signer *manifests.PrivateKey
	if c.String("report") != "" {
		if c.String("key") == "" {
			return usagef("pass --key K.key to sign the --report", "--report needs --key")
		}
		k, err := privateKey(c.String("key"))
		if err != nil {
			return withCode(exitError, err, "check --key")
		}
		signer = &k
	}
	rep, err := backup.Verify(c.Context, backup.VerifyOptions{File: file, Identities: ids, Trusted: keys, Drill: c.Bool("drill"), Scratch: c.String("scratch"),
		CheckKB: checkKBFile, HostChecks: drillHostChecks})
	if p := c.String("metrics-textfile"); p != "" && c.Bool("drill") {
		if werr := backup.WriteDrillTextfile(p, time.Now(), err == nil); werr != nil {
			return errors.Join(backupError(err), werr)
		}
	}
	if signer != nil {
		// A failed drill is worth a signed record too.
		if werr := writeDrillReport(c.String("report"), rep, err, *signer); werr != nil {
			return errors.Join(backupError(err), werr)
		}
	}
	if err != nil {
		return backupError(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, rep)
	}
	w, m := c.App.Writer, rep.Manifest
	fmt.Fprintf(w, "ok: %s: %d members, %s version %d, taken %s, signed by %v\n", file, len(m.Members), m.Bundle.Name, m.Bundle.Version, m.Created.Format("2006-01-02T15:04:05Z"), rep.Signers)
	if rep.KB != "" {
		fmt.Fprintf(w, "knowledge base snapshot: %s\n", rep.KB)
	}
	if rep.Audit != nil {
		fmt.Fprintf(w, "audit log: %d lines verified up to head seq %d (%d signed checkpoints)\n", rep.Audit.Lines, m.AuditHead.Seq, rep.Audit.Checkpoints)
	}
	var na []string
	for _, d := range rep.Drill {
		if d.Status == backup.NotApplicable {
			na = append(na, d.Name)
			continue
		}
		fmt.Fprintf(w, "drill %s: %s: %s\n", d.Name, d.Status, d.Detail)
	}
	if len(na) > 0 {
		fmt.Fprintf(w, "drill: not applicable to a scratch root (%d, see --json): %s\n", len(na), strings.Join(na, ", "))
	}
	return nil
}

func backupRestore(c *cli.Context) error {
	file, ids, keys, err := openArgs(c, "restore")
	if err != nil {
		return err
	}
	lessGC()
	res, err := backup.Restore(c.Context, backup.RestoreOptions{File: file, Identities: ids, Trusted: keys,
		Bundle: c.String("bundle"), BundleTrust: c.StringSlice("bundle-trust"), Root: c.String("root"), Store: c.String("store"), Force: c.Bool("force"),
		Install: provision.Options{Log: c.App.ErrWriter, Executable: selfPath(), ManPage: []byte(manPage(c.App)), ProbeTargets: listFlag(c, "probe"), KB: installKB{}}})
	if err != nil {
		return backupError(err)
	}
	w := c.App.Writer
	st := res.Install.State
	if c.Bool("json") {
		return printJSON(w, map[string]any{"backup": file, "auditHeadSeq": res.Manifest.AuditHead.Seq, "bundle": st.Bundle.Name,
			"version": st.Bundle.Version, "restoreRecord": res.Backup, "recoveryKey": res.Install.RecoveryKey})
	}
	fmt.Fprintf(w, "restored %s (audit head seq %d) and installed %s version %d\n", file, res.Manifest.AuditHead.Seq, st.Bundle.Name, st.Bundle.Version)
	fmt.Fprintf(w, "audit log continues with a restore record: %s\n", res.Backup)
	if res.Install.RecoveryKey != "" {
		fmt.Fprintf(w, "\nnew store recovery key (shown once, keep it offline):\n  %s\n", res.Install.RecoveryKey)
	}
	return nil
}

// drillReport is what --report records: the check, its outcome, and when.
type drillReport struct {
	Time   string         `json:"time"`
	OK     bool           `json:"ok"`
	Error  string         `json:"error,omitempty"`
	Report *backup.Report `json:"report,omitempty"`
}

// writeDrillReport writes FILE and FILE.sig (purpose backup-drill), for
// contingency-plan testing records (800-53 CP-4, CP-9).
func writeDrillReport(path string, rep *backup.Report, verr error, k manifests.PrivateKey) error {
	dr := drillReport{Time: time.Now().UTC().Format(time.RFC3339), OK: verr == nil, Report: rep}
	if verr != nil {
		dr.Error = verr.Error()
	}
	data, err := json.MarshalIndent(dr, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	var sigs manifests.Signatures
	sigs.Add(manifests.Sign(k, backup.PurposeDrill, data))
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return atomicfile.WriteFile(path+".sig", sigs.Marshal(), 0o644)
}

func backupSchedule(c *cli.Context) error {
	o := backup.ScheduleOptions{Program: provision.ProgramPath, OutDir: c.String("out-dir"), Keep: c.Int("keep"),
		RecipientFile: c.String("recipient-file"), Key: c.String("key"), OnCalendar: c.String("on-calendar")}
	if c.Bool("include-model") {
		o.Extra = append(o.Extra, "--include-model")
	}
	root := c.String("root")
	if root != "/" {
		o.Extra = append(o.Extra, "--root", root)
	}
	service, timer, err := backup.Units(o)
	if err != nil {
		return usagef("pass absolute --out-dir and --recipient-file, and --keep 1 or more", "%v", err)
	}
	return installTimer(c, root, backup.ScheduleService, backup.ScheduleTimer, service, timer,
		fmt.Sprintf("%s, backups to %s, keeping %d", o.OnCalendar, o.OutDir, o.Keep))
}
