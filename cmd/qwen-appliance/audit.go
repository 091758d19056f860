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
			UsageText: "qwen-appliance audit verify (--trust K.pub | --no-trust) [--live] FILE [FILE...]",
			Description: "Finds edited, removed, added, reordered and truncated lines. Give rotated\n" +
				"files oldest first, the current file last. Pass the gateway's public audit key\n" +
				"with --trust. Without it the log's own start records name the checkpoint key,\n" +
				"which catches careless edits but not a forger who re-chains the log and signs\n" +
				"it with a key of their own: such a check exits 3 (verification failed) after\n" +
				"saying what it could not check, unless --no-trust says that is all you want.",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "trust", Usage: "public key file(s) checkpoints must be signed with"},
				&cli.BoolFlag{Name: "no-trust", Usage: "no trusted key: check the chain against the key the log names itself, and exit 0 if it holds"},
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
	paths := c.StringSlice("trust")
	if len(paths) > 0 && c.Bool("no-trust") {
		return usagef("give one of them", "--trust and --no-trust exclude each other")
	}
	if len(paths) > 0 {
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
	// Without a trusted key the chain held, but who signed it is unknown.
	var untrusted error
	if rep.SelfKeyed {
		untrusted = errors.New("not verified against a trusted key: could not check that the checkpoints were signed by the gateway (they were checked against the key the log names itself, so a forger who re-chained the log and signed it with a key of their own would pass)")
		if rep.Checkpoints == 0 {
			untrusted = errors.New("not verified against a trusted key: the log has no signed checkpoints, so could not check who wrote it, nor that lines were not removed from its end")
		}
	}
	const hint = "pass the gateway's public audit key with --trust K.pub, or --no-trust to accept a check of the chain alone"
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
		if untrusted != nil && !c.Bool("no-trust") {
			return reportedError(exitVerification, untrusted, hint)
		}
		return nil
	}
	w, verdict := c.App.Writer, "ok"
	if untrusted != nil && !c.Bool("no-trust") {
		verdict = "chain intact, signer not trusted"
	}
	fmt.Fprintf(w, "%s: %d lines (seq %d..%d), %d requests, %d signed checkpoints by %v\n",
		verdict, rep.Lines, rep.FirstSeq, rep.LastSeq, rep.Requests, rep.Checkpoints, rep.KeyIDs)
	for _, s := range rep.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "warning:", s)
	}
	if untrusted != nil {
		if !c.Bool("no-trust") {
			return withCode(exitVerification, untrusted, hint)
		}
		fmt.Fprintln(c.App.ErrWriter, "note (--no-trust):", untrusted)
	}
	return nil
}
