package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight"
)

func init() {
	register(&cli.Command{
		Name:      "preflight",
		Usage:     "check that this host can run a bundle, before anything is installed",
		ArgsUsage: " ",
		Description: `Reads the bundle's signed manifest (checked against the keys given with
--trust; the model files themselves are not hashed here) and checks this host
against it: the NVIDIA driver and every GPU through NVML (memory, compute
capability, ECC errors, retired pages and row remapping, MIG, temperature,
throttling, persistence, other processes), whether the weights plus the KV
cache for the requested context fit, and on how many GPUs (tensor parallel),
RAM, free disk where the store will live, CPU features, and the kernel
features later steps need (nf_tables, fscrypt or device-mapper, cgroup BPF,
the nvidia and nvidia_uvm modules, no nouveau). Bundles that run on CPU are
sized in RAM instead. It changes nothing on the host.

Each line says what was required, what was found, and pass, warn or fail;
every warning and failure comes with what to do about it. Exit status 4
means the host does not meet the bundle's requirements.

Examples:
   qwen-appliance preflight --bundle /media/usb/qwen2.5-7b --trust release.pub
   qwen-appliance preflight --bundle ./b --trust release.pub --max-context 8192 --concurrency 4 --json`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "bundle directory holding manifest.json and manifest.sig"},
			&cli.IntFlag{Name: "max-context", Usage: "context length to serve, in tokens (default: the bundle's default context, else the model's maximum)"},
			&cli.IntFlag{Name: "concurrency", Value: 1, Usage: "sequences of --max-context tokens that must fit in the KV cache at once"},
			&cli.StringFlag{Name: "store", Value: preflight.DefaultStore, Usage: "absolute path where the model store will live (free space is measured there)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			wideFlag,
		}, trustFlags()...),
		Action: preflightAction,
	})
}

func preflightAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("pass the bundle with --bundle DIR", "preflight takes no arguments, got %q", c.Args().Slice())
	}
	dir := c.String("bundle")
	if dir == "" {
		return usagef("pass --bundle DIR, the directory holding manifest.json", "preflight: --bundle is required")
	}
	if c.Int("max-context") < 0 || c.Int("concurrency") < 1 {
		return usagef("--max-context must be positive and --concurrency at least 1", "preflight: --max-context %d --concurrency %d", c.Int("max-context"), c.Int("concurrency"))
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return err
	}
	signed, err := v.Open(dir)
	if err != nil {
		return openError(err)
	}
	rep, err := preflight.Run(c.Context, signed.Manifest, preflight.Options{
		Store:       c.String("store"),
		Context:     c.Int("max-context"),
		Concurrency: c.Int("concurrency"),
	})
	switch {
	case errors.Is(err, preflight.ErrOptions):
		return usagef("lower --max-context to at most the model's maximum context", "%v", err)
	case errors.Is(err, preflight.ErrModelFacts):
		return withCode(exitError, err, "the manifest must carry the model's layers, heads, head dim, dtype, weights size and context; rebuild the bundle with them")
	case err != nil:
		return err
	}

	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else if err := rep.WriteTable(c.App.Writer, tableWidth(c)); err != nil {
		return err
	}
	if rep.Verdict != preflight.Fail {
		return nil
	}
	var names []string
	for _, f := range rep.Failed() {
		names = append(names, f.Name)
	}
	unfit := fmt.Errorf("host does not meet the requirements of %s version %d: %s", rep.Bundle, rep.Version, strings.Join(names, ", "))
	hint := "see \"What to do\" in the report; --max-context and --concurrency change what must fit"
	if c.Bool("json") {
		return reportedError(exitHostUnfit, unfit, "see the fix of each failed check; --max-context and --concurrency change what must fit")
	}
	return withCode(exitHostUnfit, unfit, hint)
}
