package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/backup/layout"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/sdtimer"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/verify"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "verify",
		Usage: "re-prove on the running host what install set up, as a NIST SP 800-53 report",
		Description: `Runs every check (or those matching --only) against the installation recorded
under ROOT/var/lib/qwen-appliance: installed bytes against the signed manifest,
unit and config hashes, firewall and an active egress probe, listeners, store
encryption and permissions, service identity and telemetry, the gateway's
authentication, TLS and route allowlist, and GPU health. Each result is pass,
fail, error or not applicable, with the evidence seen and UTC timestamps.
--report-dir writes the report in every format, the raw evidence and a detached
signature (check it later with 'qwen-appliance verify-report').

Examples:
   qwen-appliance verify --trust release.pub
   qwen-appliance verify --full --format junit > verify.xml
   qwen-appliance verify --report-dir /srv/audit/2026-11 --key host-audit.key
   qwen-appliance verify --list
   qwen-appliance verify --metrics-textfile /var/lib/prometheus/node-exporter/qwen_verify.prom

--metrics-textfile (or --format prometheus) gives one qwen_verify_check_ok
series per check for the node exporter's textfile collector; the alert rules
FirewallMissing, StoreLocked, VerifyFailing and VerifyStale read it.
'qwen-appliance verify-schedule' runs verify that way on a systemd timer.

Exit status 3 means at least one check failed; 1 means no check failed but some
could not run (status "error"), or verify itself could not run.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/", Usage: "install root the state was recorded under"},
			&cli.StringSliceFlag{Name: "trust", Usage: "trusted public key for the installed manifest (default: the keys install recorded)"},
			&cli.BoolFlag{Name: "full", Usage: "hash every chunk of every installed file (default: sizes, modes and sampled chunks)"},
			&cli.StringSliceFlag{Name: "only", Usage: "run only checks whose ID matches this pattern, e.g. 'network.*' (repeatable)"},
			&cli.StringSliceFlag{Name: "probe", Usage: "an address the egress probe must fail to reach (repeatable; adds to those install recorded)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "report format on stdout: " + strings.Join(verify.Formats, ", ")},
			&cli.BoolFlag{Name: "json", Usage: "same as --format json"},
			&cli.StringFlag{Name: "report-dir", Usage: "also write a signed report directory here (needs --key)"},
			&cli.StringFlag{Name: "metrics-textfile", Usage: "also write the result as Prometheus metrics to this file (atomically, mode 0644), for the node exporter's textfile collector"},
			&cli.StringFlag{Name: "key", Usage: "private key that signs the report directory"},
			&cli.BoolFlag{Name: "list", Usage: "list the checks with their IDs, controls and what they prove, and exit"},
			wideFlag,
		},
		Action: verifyRun,
	})
	register(&cli.Command{
		Name:      "verify-schedule",
		Usage:     "run verify on a systemd timer, writing its result where the alert rules read it",
		UsageText: "qwen-appliance verify-schedule [--on-calendar '*:0/15'] [--textfile-dir D] [--root R]",
		Description: `Writes qwen-appliance-verify.service and .timer under ROOT/etc/systemd/system
and, on a systemd host with --root /, enables the timer. Each run is
'verify --metrics-textfile TEXTFILE_DIR/` + verify.TextfileName + `': a firewall flushed
by hand, a store left locked after a reboot or any other failed check then
reaches a person through the FirewallMissing, StoreLocked and VerifyFailing
alerts, and a timer that stopped running through VerifyStale.

Example:
   qwen-appliance verify-schedule --on-calendar '*:0/15'

Exit status 2 means a bad --on-calendar or --textfile-dir; 1 means the units
could not be written or enabled.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "on-calendar", Value: "*:0/15", Usage: "systemd calendar expression: when verify runs"},
			&cli.StringFlag{Name: "textfile-dir", Value: layout.DefaultTextfileDir, Usage: "the node exporter's --collector.textfile.directory"},
			&cli.StringFlag{Name: "root", Value: "/", Usage: "install root: units go under ROOT/etc/systemd/system"},
			jsonOutput,
		},
		Action: verifySchedule,
	})
	register(&cli.Command{
		Name:      "verify-report",
		Usage:     "check that a signed verify report directory is intact, or compare a fleet's",
		ArgsUsage: "DIR | --fleet DIR...",
		Description: `Checks the signature over a report directory written by 'verify --report-dir'
and every file in it (report, evidence), then prints the report's summary.

With --fleet, takes the report directories of many hosts (one each), checks
every one the same way and prints one table: host, bundle, firewall ruleset
hash, when it reported, failed checks, and drift: a host on another bundle or
ruleset than most hosts, a report older than --max-age, a report signed by a
key not given with --trust or changed after signing. Exit status 3 when any
host drifted or failed a check.

Examples:
   qwen-appliance verify-report /srv/audit/2026-11 --trust host-audit.pub
   qwen-appliance verify-report --fleet /srv/audit/gpu-* --trust fleet.pub --max-age 7d --format junit`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "trust", Usage: "public key of the host that signed the report (repeatable)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.BoolFlag{Name: "fleet", Usage: "compare the reports of many hosts (one directory each)"},
			&cli.StringFlag{Name: "max-age", Usage: "with --fleet: flag reports older than this (7d, 36h)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "with --fleet: text, json or junit"},
		},
		Action: verifyReportCheck,
	})
}

func verifyRun(c *cli.Context) error {
	if c.Bool("list") {
		return listChecks(c)
	}
	format := c.String("format")
	if c.Bool("json") {
		format = "json"
	}
	if !containsString(verify.Formats, format) {
		return usagef("--format takes "+strings.Join(verify.Formats, ", "), "unknown report format %q", format)
	}
	var key manifests.PrivateKey
	if dir := c.String("report-dir"); dir != "" {
		if c.String("key") == "" {
			return usagef("pass --key KEY.key to sign the report (make one with 'qwen-appliance keys generate')", "--report-dir needs --key")
		}
		k, err := privateKey(c.String("key"))
		if err != nil {
			return err
		}
		key = k
	}
	root := c.String("root")
	st, err := state.Load(root)
	if err != nil {
		hint := "check --root; run 'qwen-appliance install' first"
		return withCode(exitError, err, hint)
	}
	for _, p := range c.StringSlice("probe") {
		if _, err := netip.ParseAddr(p); err != nil {
			return usagef("--probe takes an IP address", "--probe %q: %v", p, err)
		}
		st.Firewall.ProbeTargets = append(st.Firewall.ProbeTargets, p)
	}
	target := verify.Target{Root: root, State: st, Full: c.Bool("full")}
	if paths := c.StringSlice("trust"); len(paths) > 0 {
		if target.Trusted, err = manifests.LoadPublicKeys(paths...); err != nil {
			return withCode(exitError, err, "check the --trust file")
		}
	}
	rep, err := verify.Run(c.Context, verify.Options{Target: target, Only: c.StringSlice("only"), Tool: "qwen-appliance " + toolVersion()})
	if errors.Is(err, verify.ErrNoSuchCheck) {
		return withCode(exitUsage, err, "'qwen-appliance verify --list' names every check; --only takes patterns such as 'network.*'")
	}
	if err != nil {
		return withCode(exitUsage, err, "--only takes path.Match patterns such as 'network.*'")
	}
	if dir := c.String("report-dir"); dir != "" {
		if err := verify.WriteDir(dir, rep, key); err != nil {
			return withCode(exitError, err, "choose an empty --report-dir")
		}
		fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: signed report written to %s (key %s)\n", dir, key.ID)
	}
	if p := c.String("metrics-textfile"); p != "" {
		if err := writeTextfile(p, rep.Metrics()); err != nil {
			return withCode(exitError, err, "check --metrics-textfile: a path root may write")
		}
	}
	if err := rep.WriteTo(c.App.Writer, format); err != nil {
		return err
	}
	switch {
	case rep.Summary.Fail > 0:
		return reportedError(exitVerification, fmt.Errorf("%d check(s) failed", rep.Summary.Fail), "see each failure's remediation above")
	case rep.Summary.Error > 0:
		return reportedError(exitError, fmt.Errorf("%d check(s) could not run", rep.Summary.Error), "see each error's message above")
	}
	return nil
}

func listChecks(c *cli.Context) error {
	checks := verify.Checks()
	if c.Bool("json") || c.String("format") == "json" {
		type row struct {
			ID          string   `json:"id"`
			Title       string   `json:"title"`
			Severity    string   `json:"severity"`
			Rationale   string   `json:"rationale"`
			Remediation string   `json:"remediation"`
			Controls    []string `json:"controls"`
		}
		var rows []row
		for _, ch := range checks {
			rows = append(rows, row{ch.ID, ch.Title, string(ch.Severity), ch.Rationale, ch.Remediation, ch.Controls})
		}
		return printJSON(c.App.Writer, rows)
	}
	var rows [][]string
	for _, ch := range checks {
		rows = append(rows, []string{ch.ID, string(ch.Severity), strings.Join(ch.Controls, ", "), ch.Title})
	}
	return writeTable(c, []string{"ID", "SEVERITY", "CONTROLS", "PROVES"}, rows, 0)
}

func verifyReportCheck(c *cli.Context) error {
	if c.Bool("fleet") {
		return verifyFleet(c)
	}
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	paths := c.StringSlice("trust")
	if len(paths) == 0 {
		return usagef("pass --trust KEY.pub, the public key of the host that signed the report", "no trusted key given")
	}
	keys, err := manifests.LoadPublicKeys(paths...)
	if err != nil {
		return withCode(exitError, err, "check the --trust file")
	}
	rep, ids, err := verify.VerifyReport(c.Context, dir, keys)
	if errors.Is(err, manifests.ErrVerification) {
		return withCode(exitVerification, err, "the report was changed after it was signed, or signed by another key")
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return rep.WriteTo(c.App.Writer, "json")
	}
	s := rep.Summary
	fmt.Fprintf(c.App.Writer, "OK report from host %s, %s, signed by %s: %d pass, %d fail, %d error, %d not applicable\n",
		rep.Host, rep.Finished.Format("2006-01-02T15:04:05Z07:00"), strings.Join(ids, ", "), s.Pass, s.Fail, s.Error, s.NotApplicable)
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeTextfile replaces path with data, atomically, so the node exporter
// never reads half a file; it makes the directory when it is missing (no
// node exporter installed yet), as backup create does.
func writeTextfile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

func verifySchedule(c *cli.Context) error {
	root, dir := c.String("root"), c.String("textfile-dir")
	if !filepath.IsAbs(dir) {
		return usagef("pass an absolute --textfile-dir", "--textfile-dir %q is not absolute", dir)
	}
	args := []string{provision.ProgramPath, "verify", "--metrics-textfile", filepath.Join(dir, verify.TextfileName)}
	if root != "/" {
		args = append(args, "--root", root)
	}
	service, timer, err := sdtimer.Render(sdtimer.Options{
		Writer: "qwen-appliance verify-schedule", Description: "qwen-appliance verify (NIST SP 800-53 checks)",
		Args: args, OnCalendar: c.String("on-calendar"), Delay: "1min", After: "qwen-appliance-gateway.service",
	})
	if err != nil {
		return usagef("--on-calendar takes a systemd calendar expression such as '*:0/15' or hourly", "%v", err)
	}
	return installTimer(c, root, verifyService, verifyTimer, service, timer,
		fmt.Sprintf("verify (%s), metrics to %s", c.String("on-calendar"), args[3]))
}

// Names of the scheduled verify's units.
const (
	verifyService = "qwen-appliance-verify.service"
	verifyTimer   = "qwen-appliance-verify.timer"
)

// installTimer writes a service and timer pair under ROOT/etc/systemd/system
// and, on a systemd host with root /, enables the timer.
func installTimer(c *cli.Context, root, serviceName, timerName, service, timer, what string) error {
	dir := filepath.Join(root, harden.UnitDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range map[string]string{serviceName: service, timerName: timer} {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	res := map[string]any{"service": serviceName, "timer": timerName, "unitDir": dir, "enabled": false, "schedule": what}
	if root == "/" && harden.SystemdBooted() {
		if err := harden.Systemctl(c.Context, "daemon-reload"); err != nil {
			return err
		}
		if err := harden.Systemctl(c.Context, "enable", "--now", timerName); err != nil {
			return err
		}
		res["enabled"] = true
		return report(c, res, "enabled %s: %s\n", timerName, what)
	}
	return report(c, res, "wrote %s and %s under %s; not enabled (no systemd, or --root is not /)\n", serviceName, timerName, dir)
}
