package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(&cli.Command{
		Name:  "audit",
		Usage: "check the gateway's audit log",
		Subcommands: []*cli.Command{{
			Name:      "verify",
			Usage:     "verify an audit log's hash chain and signed checkpoints",
			UsageText: "qwen-appliance audit verify [--trust K.pub] [--live] FILE [FILE...]",
			Description: "Finds edited, removed, added, reordered and truncated lines. Give rotated\n" +
				"files oldest first, the current file last. Without --trust the log's own\n" +
				"start records name the checkpoint key, which catches careless edits but not a\n" +
				"forger who re-signs; pass the gateway's public key with --trust.",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "trust", Usage: "public key file(s) checkpoints must be signed with"},
				&cli.BoolFlag{Name: "live", Usage: "the log is still being written: accept an unsigned tail"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			},
			Action: auditVerify,
		}},
	})
}

func auditVerify(c *cli.Context) error {
	if c.NArg() == 0 {
		return usagef("name the log: audit verify FILE", "no audit log given")
	}
	var o audit.VerifyOptions
	if paths := c.StringSlice("trust"); len(paths) > 0 {
		keys, err := manifests.LoadPublicKeys(paths...)
		if err != nil {
			return withCode(exitError, err, "check --trust")
		}
		o.Trusted = keys
	}
	o.Live = c.Bool("live")
	rep, err := audit.Verify(c.Args().Slice(), o)
	if errors.Is(err, audit.ErrTampered) {
		return withCode(exitVerification, err, "the log was changed after it was written; compare with a copy kept off this host")
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, rep)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "ok: %d lines (seq %d..%d), %d requests, %d signed checkpoints by %v\n",
		rep.Lines, rep.FirstSeq, rep.LastSeq, rep.Requests, rep.Checkpoints, rep.KeyIDs)
	if rep.SelfKeyed && rep.Checkpoints > 0 {
		fmt.Fprintln(c.App.ErrWriter, "note: checked against the key the log names itself; pass --trust K.pub to rule out re-signing")
	}
	for _, s := range rep.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "warning:", s)
	}
	return nil
}
