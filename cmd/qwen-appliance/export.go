//go:build !appliance

// The export commands build OCI images and charts for a cluster on the
// connected side; the lean appliance build leaves them (and
// go-containerregistry) out.

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/bundles/export"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(&cli.Command{
		Name:  "export",
		Usage: "make a Helm chart with OCI images, or a Zarf package, from a bundle",
		Subcommands: []*cli.Command{
			{
				Name:      "helm",
				Usage:     "verify a bundle; build model and gateway images (OCI, no Docker) and a Helm chart",
				ArgsUsage: " ",
				Description: `Checks the bundle's signature and every byte first, as 'manifest verify' does
(exit 3 when it is refused). Then builds, without Docker, two OCI images into an
OCI image layout (CHART/images unless --images is given):
  the model image: the signed bundle byte for byte, one layer per file, plus
    manifest.json and manifest.sig; every file is hashed again as it is written;
  the gateway image: the qwen-appliance binary given with --binary (ship the
    lean 'make appliance' build) with its loader and libraries, run as UID 65532.
and writes the chart: a runtime Deployment of vLLM pods (--runtime-image, by
digest; runtime.replicas for throughput; GPUs per pod and --tensor-parallel-size
from --tensor-parallel or the preflight plan, --plan), the model mounted
read-only as an image volume and checked against the signed manifest by an init
container ('manifest verify') before vLLM starts; a gateway StatefulSet running
'serve' (gateway.replicas, each replica writing its audit log to a claim of its
own that outlives restarts, scale-down and uninstall, so its hash chain
continues), which reaches the runtime Service only over mutual TLS: vLLM
requires a client certificate (--ssl-cert-reqs 2) and the gateway checks the
runtime's, both from a CA of their own made with 'qwen-appliance tls
pair' and given as two Secrets the chart never makes; NetworkPolicies: a
default deny, the gateway reachable only on the API port from
gateway.clientCIDRs and on the metrics port from the monitoring namespace and
connecting only to the runtime pods, the runtime reachable only from the gateway
pods and connecting nowhere (no DNS: the gateway takes the runtime Service's
address from its environment); tokens, TLS and the audit key as Secrets, copied
0600 into memory for the gateway by an init container ('stage-secrets');
Prometheus annotations and an optional ServiceMonitor; every pod within Pod
Security "restricted". --values files are merged over the chart's defaults and
checked against its schema.
Runtime pods need Kubernetes 1.33 or later (image volumes); render with
'helm template --kube-version 1.33.0' or later. See docs/kubernetes.md.

Example:
   qwen-appliance export helm --bundle ./demo --trust release.pub --out ./chart \
       --runtime-image vllm/vllm-openai@sha256:<digest> --binary bin/appliance/qwen-appliance \
       --plan preflight.json --values site.yaml
   qwen-appliance tls pair --dir pair --host RELEASE-qwen-appliance-runtime.NAMESPACE.svc`,
				Flags: append(exportFlags(),
					&cli.StringFlag{Name: "out", Usage: "chart directory to create (must not exist)"},
					&cli.StringFlag{Name: "images", Usage: "OCI layout directory to create (default: OUT/images, left out of the chart)"},
				),
				Action: exportHelm,
			},
			{
				Name:      "zarf",
				Usage:     "write a Zarf package directory: zarf.yaml, the chart, the images as an OCI archive",
				ArgsUsage: " ",
				Description: `Does what 'export helm' does into OUT/chart, turns the OCI layout into the
archive OUT/images.tar, and writes OUT/zarf.yaml: one component with the chart
(local path) and the images, the built ones from the archive and the runtime
image by digest. zarf.yaml is checked against Zarf's v1alpha1 schema before
it is written. 'zarf package create OUT' then makes the package to carry across
the gap (Zarf is not needed, nor run, here).

Example:
   qwen-appliance export zarf --bundle ./demo --trust release.pub --out ./pkg \
       --runtime-image vllm/vllm-openai@sha256:<digest> --binary bin/appliance/qwen-appliance`,
				Flags: append(exportFlags(),
					&cli.StringFlag{Name: "out", Usage: "package directory to create (must not exist)"},
					&cli.StringFlag{Name: "namespace", Value: "qwen-appliance", Usage: "namespace Zarf deploys the chart to"},
				),
				Action: exportZarf,
			},
		},
	})
}

func exportFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "bundle", Usage: "signed bundle directory"},
		&cli.StringFlag{Name: "runtime-image", Usage: "vLLM OpenAI server image, pinned: NAME@sha256:HEX"},
		&cli.StringFlag{Name: "binary", Usage: "qwen-appliance executable for the gateway image (default: this one; prefer the 'make appliance' build)"},
		&cli.StringFlag{Name: "registry", Value: export.DefaultRegistry, Usage: "registry and path the built images are named under"},
		&cli.StringFlag{Name: "plan", Usage: "'qwen-appliance preflight --json' report from a GPU node like the cluster's: GPUs per pod and context"},
		&cli.IntFlag{Name: "tensor-parallel", Usage: "GPUs per pod (overrides --plan; default: the plan's, else 1)"},
		&cli.StringSliceFlag{Name: "values", Usage: "YAML file merged over the chart's values (repeatable)"},
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
	}, trustFlags()...)
}

// exportOptions turns the shared flags into export.Options.
func exportOptions(c *cli.Context, out string) (export.Options, error) {
	help := fmt.Sprintf("run '%s --help'", c.Command.HelpName)
	if c.NArg() > 0 {
		return export.Options{}, usagef(help, "unexpected argument %q", c.Args().First())
	}
	for _, f := range []string{"bundle", "runtime-image"} {
		if c.String(f) == "" {
			return export.Options{}, usagef("pass --"+f+"; "+help, "missing required flag --%s", f)
		}
	}
	if out == "" {
		return export.Options{}, usagef("pass --out DIR, a directory that does not exist yet", "missing required flag --out")
	}
	if err := export.CheckDigestRef(c.String("runtime-image")); err != nil {
		return export.Options{}, usagef("look the digest up where the image was reviewed (crane digest IMAGE) and pass NAME@sha256:HEX", "--runtime-image: %v", err)
	}
	if c.Int("tensor-parallel") < 0 {
		return export.Options{}, usagef("--tensor-parallel takes the number of GPUs per pod", "--tensor-parallel %d is negative", c.Int("tensor-parallel"))
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return export.Options{}, err
	}
	o := export.Options{
		Bundle: c.String("bundle"), Verifier: v, Out: out, RuntimeImage: c.String("runtime-image"),
		Binary: c.String("binary"), Registry: c.String("registry"), TensorParallel: c.Int("tensor-parallel"),
		Log: func(format string, args ...any) { fmt.Fprintf(c.App.ErrWriter, "export: "+format+"\n", args...) },
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return o, withCode(exitError, err, "pass --binary PATH")
		}
	}
	if p := c.String("plan"); p != "" {
		if o.Plan, err = os.ReadFile(p); err != nil {
			return o, withCode(exitError, err, "check the --plan path")
		}
		o.PlanName = p
	}
	for _, p := range c.StringSlice("values") {
		data, err := os.ReadFile(p)
		if err != nil {
			return o, withCode(exitError, err, "check the --values path")
		}
		o.Values = append(o.Values, export.ValuesFile{Name: p, Data: data})
	}
	return o, nil
}

// exportError maps a library error to its exit code and hint.
func exportError(err error) error {
	var ve *export.ValuesError
	switch {
	case errors.Is(err, manifests.ErrVerification):
		return withCode(exitVerification, err, verificationHint(err))
	case errors.As(err, &ve) && errors.Is(err, export.ErrSharedClaim):
		return withCode(exitError, err, "see 'The audit logs' in docs/kubernetes.md")
	case errors.As(err, &ve):
		return withCode(exitError, err, "fix "+ve.File+": its keys must be settings of the chart's values.yaml (see values.schema.json)")
	case errors.Is(err, export.ErrOption):
		return withCode(exitUsage, err, "see 'qwen-appliance export --help'")
	}
	return withCode(exitError, err, "")
}

func exportHelm(c *cli.Context) error {
	o, err := exportOptions(c, c.String("out"))
	if err != nil {
		return err
	}
	o.Images = c.String("images")
	res, err := export.Helm(c.Context, o)
	if err != nil {
		return exportError(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	printExport(c, res)
	fmt.Fprintf(c.App.Writer, "next: copy the images to the cluster's registry, create the Secrets (gateway-runtime TLS: 'qwen-appliance tls pair', see docs/kubernetes.md), then: helm install RELEASE %s\n", res.Chart)
	return nil
}

func exportZarf(c *cli.Context) error {
	out := c.String("out")
	o, err := exportOptions(c, out)
	if err != nil {
		return err
	}
	res, err := export.Zarf(c.Context, export.ZarfOptions{Options: o, Namespace: c.String("namespace")})
	if err != nil {
		return exportError(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	printExport(c, &res.Result)
	fmt.Fprintf(c.App.Writer, "%-14s %s (valid against Zarf's v1alpha1 schema)\n", "zarf.yaml", res.ZarfYAML)
	fmt.Fprintf(c.App.Writer, "next: zarf package create %s\n", res.Package)
	return nil
}

func printExport(c *cli.Context, r *export.Result) {
	w := c.App.Writer
	fmt.Fprintf(w, "exported %s version %d (signature by %s)\n", r.Bundle, r.Version, strings.Join(r.KeyIDs, ", "))
	fmt.Fprintf(w, "%-14s %s\n", "chart", r.Chart)
	fmt.Fprintf(w, "%-14s %s\n", "OCI layout", r.Layout)
	for _, im := range r.Images {
		fmt.Fprintf(w, "%-14s %s (%s)\n", im.Role+" image", im.Pinned(), space.Format(im.Bytes))
	}
	fmt.Fprintf(w, "%-14s %s, %d GPU(s) per pod (%s)\n", "runtime image", r.RuntimeImage, r.TensorParallel, r.TPSource)
}
