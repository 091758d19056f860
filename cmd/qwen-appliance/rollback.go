package main

import (
	"errors"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "rollback",
		Usage: "serve the previous release again (the one the last install replaced)",
		Description: `The previous release stays in the encrypted store after an upgrade. rollback
verifies its copy against its signed manifest, starts its runtime beside the
current one, proves it answers, switches the gateway to it atomically (requests
in flight finish on the old runtime) and stops the current runtime. The two
releases swap places, so running rollback again returns to the newer one.

Example:
   qwen-appliance rollback`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/", Usage: "install root"},
			&cli.DurationFlag{Name: "ready-timeout", Usage: "how long the runtime may take to become ready (default 5m)"},
			jsonOutput,
		},
		Action: func(c *cli.Context) error {
			st, err := provision.Rollback(c.Context, provision.RollbackOptions{Root: c.String("root"), ReadyTimeout: c.Duration("ready-timeout"), Log: c.App.ErrWriter})
			switch {
			case errors.Is(err, provision.ErrBusy):
				return withCode(exitError, err, busyHint)
			case errors.Is(err, provision.ErrNoPrevious):
				return withCode(exitError, err, "rollback needs an earlier release installed on this host before the current one")
			case errors.Is(err, manifests.ErrVerification):
				return withCode(exitVerification, err, "the previous release's copy changed in the store: install it again from its bundle")
			case err != nil:
				return withCode(exitError, err, "the current release is still serving; read the step's message above")
			}
			return report(c, map[string]any{"bundle": st.Bundle.Name, "version": st.Bundle.Version, "previousVersion": st.Previous.Version},
				"serving %s version %d (previous: version %d)\n", st.Bundle.Name, st.Bundle.Version, st.Previous.Version)
		},
	})
}
