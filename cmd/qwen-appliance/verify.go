package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
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
			&cli.StringFlag{Name: "key", Usage: "private key that signs the report directory"},
			&cli.BoolFlag{Name: "list", Usage: "list the checks with their IDs, controls and what they prove, and exit"},
			wideFlag,
		},
		Action: verifyRun,
	})
	register(&cli.Command{
		Name:      "verify-report",
		Usage:     "check that a signed verify report directory is intact",
		ArgsUsage: "DIR",
		Description: `Checks the signature over a report directory written by 'verify --report-dir'
and every file in it (report, evidence), then prints the report's summary.

Example:
   qwen-appliance verify-report /srv/audit/2026-11 --trust host-audit.pub`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "trust", Usage: "public key of the host that signed the report (repeatable)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
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
	return writeTable(c, []string{"ID", "SEVERITY", "CONTROLS", "PROVES"}, rows)
}

func verifyReportCheck(c *cli.Context) error {
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
