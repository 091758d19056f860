package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/verify"
)

// verifyFleet is 'verify-report --fleet DIR...': every host's signed report
// checked, then compared in one table (verify.Fleet).
func verifyFleet(c *cli.Context) error {
	if c.NArg() == 0 {
		return usagef("pass one report directory per host: verify-report --fleet DIR...", "--fleet needs report directories")
	}
	format := c.String("format")
	if c.Bool("json") {
		format = "json"
	}
	if format != "text" && format != "json" && format != "junit" {
		return usagef("--format takes text, json or junit", "unknown fleet report format %q", format)
	}
	paths := c.StringSlice("trust")
	if len(paths) == 0 {
		return usagef("pass --trust KEY.pub for the hosts' report-signing keys (repeatable)", "no trusted key given")
	}
	keys, err := manifests.LoadPublicKeys(paths...)
	if err != nil {
		return withCode(exitError, err, "check the --trust file")
	}
	o := verify.FleetOptions{Dirs: c.Args().Slice(), Trusted: keys}
	if s := c.String("max-age"); s != "" {
		if o.MaxAge, err = parseSpan(s); err != nil || o.MaxAge <= 0 {
			return usagef("--max-age takes a span such as 7d or 36h", "--max-age %q is not a positive span", s)
		}
	}
	f, err := verify.Fleet(c.Context, o)
	if err != nil {
		return withCode(exitError, err, "each argument must be a directory written by 'verify --report-dir'")
	}
	if err := f.WriteTo(c.App.Writer, format); err != nil {
		return err
	}
	if n := f.Problems(); n > 0 {
		return reportedError(exitVerification, fmt.Errorf("%d of %d host(s) drifted or failed checks", n, len(f.Hosts)), "see the DRIFT and FAILED CHECKS columns")
	}
	return nil
}
