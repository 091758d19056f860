package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles"
	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/bundles/volume"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "bundle",
		Usage: "build a signed bundle on a connected machine; pack and unpack its volumes",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "fetch what a spec names, check every hash, and write a signed bundle directory",
				ArgsUsage: "NAME | --spec FILE",
				Description: `Fetches the model at its pinned revision and the runtime's artefacts, checks
every file against the SHA-256 the spec or the Hugging Face hub gives for it
(hashing while downloading), and writes --out with the files, an SBOM
(sbom.cdx.json) and the signed manifest. Nothing is signed unless every hash
matched. Downloads resume after an interruption (partial files are kept in
--cache; run the same command again), retry with backoff and run --jobs at a
time. HF_TOKEN and HF_ENDPOINT (a mirror) are honoured.

Before any hub is asked or anything fetched, it checks what the command line
must supply: every required runtime artefact (--artifact NAME=URL), and the
model facts preflight sizes a host with (model.layers, attentionHeads, kvHeads,
headDim or hiddenSize, maxContext). Facts the spec leaves out are read from the
model's config.json or GGUF header once fetched (the spec wins where both say);
the weights' size is the model files' size. A spec that still lacks facts is
refused with exit 2, naming them, and nothing is signed: otherwise preflight
would refuse the bundle on the isolated side, after it crossed the gap.

Built-in specs: ` + strings.Join(specs.Names(), ", ") + ` ('bundle specs NAME' prints one).

Progress goes to stderr on a terminal; with --json, stdout carries one JSON
result and stderr carries JSON-lines progress events.

Example:
   qwen-appliance bundle create demo --out ./demo-bundle --key release.key
   qwen-appliance bundle create --spec my-model.yaml --out /srv/b --key release.key`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "spec", Usage: "the operator's own spec file (YAML) instead of a built-in NAME"},
					&cli.StringFlag{Name: "out", Usage: "bundle directory to write (must not exist, or be empty)"},
					&cli.StringFlag{Name: "key", Usage: "private key file NAME.key to sign the manifest with"},
					&cli.StringFlag{Name: "cache", Usage: "directory for partial downloads (default: a hidden sibling of --out)"},
					&cli.IntFlag{Name: "jobs", Value: 4, Usage: "files downloaded at once"},
					&cli.StringSliceFlag{Name: "artifact", Usage: "supply a runtime artefact: NAME=URL or NAME=URL#sha256=HEX (repeatable)"},
					&cli.BoolFlag{Name: "allow-unpinned", Usage: "fetch sources and artefacts with no SHA-256 pin, recording what arrived (marked in the SBOM)"},
					createdFlag, expiresFlag,
					&cli.BoolFlag{Name: "json", Usage: "JSON result on stdout, JSON-lines progress on stderr"},
				},
				Action: bundleCreate,
			},
			{
				Name:      "specs",
				Usage:     "list the built-in specs, or print one",
				ArgsUsage: "[NAME]",
				Description: "Without NAME, lists the specs 'bundle create' knows; with NAME, prints that spec.\n" +
					"With --json, the list is an array of {name, description} and one spec is\n" +
					"{name, description, yaml}, yaml holding the file as printed without --json.\n\n" +
					"Example:\n   qwen-appliance bundle specs qwen2.5-7b-instruct",
				Flags:  []cli.Flag{jsonOutput},
				Action: bundleSpecs,
			},
			packCommand(),
			unpackCommand(),
			inspectCommand(),
			verifyCommand(),
		},
	})
}

// reporter returns the progress reporter for c: JSON lines with --json, a
// redrawn block on a terminal, nothing otherwise. It always writes to stderr.
func reporter(c *cli.Context, op string) *progress.Reporter {
	w := c.App.ErrWriter
	switch {
	case c.Bool("json"):
		return progress.New(w, progress.JSON, op)
	case isTerminal(w):
		return progress.New(w, progress.Terminal, op)
	}
	return progress.New(w, progress.Quiet, op)
}

func loadKey(c *cli.Context) (manifests.PrivateKey, error) {
	p := c.String("key")
	if p == "" {
		return manifests.PrivateKey{}, usagef("pass --key NAME.key (make one with 'qwen-appliance keys generate --out NAME')", "--key is required")
	}
	return privateKey(p)
}

func bundleCreate(c *cli.Context) error {
	var spec *specs.Spec
	var err error
	switch {
	case c.String("spec") != "" && c.NArg() > 0:
		return usagef("give a built-in NAME or --spec FILE, not both", "both NAME %q and --spec given", c.Args().First())
	case c.String("spec") != "":
		spec, err = specs.LoadFile(c.String("spec"))
	case c.NArg() == 1:
		spec, err = specs.Load(c.Args().First())
	default:
		return usagef("name a built-in spec ("+strings.Join(specs.Names(), ", ")+") or pass --spec FILE", "want one spec NAME or --spec FILE")
	}
	if err != nil {
		return withCode(exitError, err, "fix the spec at the place named (see docs/bundles.md)")
	}
	if c.String("out") == "" {
		return usagef("pass --out DIR, a new directory for the bundle", "--out is required")
	}
	key, err := loadKey(c)
	if err != nil {
		return err
	}
	created, expires, err := validity(c)
	if err != nil {
		return err
	}
	arts := map[string]string{}
	for _, a := range c.StringSlice("artifact") {
		name, url, ok := strings.Cut(a, "=")
		if !ok || name == "" || url == "" {
			return usagef("--artifact takes NAME=URL or NAME=URL#sha256=HEX", "--artifact %q", a)
		}
		arts[name] = url
	}
	if c.Int("jobs") < 1 {
		return usagef("--jobs takes a number of at least 1", "--jobs %d", c.Int("jobs"))
	}
	rep := reporter(c, "fetch")
	defer rep.Stop()
	start := time.Now()
	res, err := bundles.Create(c.Context, spec, bundles.CreateOptions{
		Out: c.String("out"), Cache: c.String("cache"), Key: key, Jobs: c.Int("jobs"),
		Now: func() time.Time { return created }, Valid: expires.Sub(created),
		Artifacts: arts, AllowUnpinned: c.Bool("allow-unpinned"), Progress: rep,
		Tool: "qwen-appliance " + toolVersion(),
	})
	rep.Stop()
	if err != nil {
		return createErr(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, struct {
			*bundles.Result
			Seconds float64 `json:"seconds"`
		}{res, time.Since(start).Seconds()})
	}
	fmt.Fprintf(c.App.Writer, "wrote %s: %s version %d, %d files, %s", res.Dir, res.Name, res.Version, res.Files, space.Format(res.Bytes))
	if res.Revision != "" {
		fmt.Fprintf(c.App.Writer, ", revision %s", res.Revision)
	}
	if len(res.Skipped) > 0 {
		fmt.Fprintf(c.App.Writer, "; without optional artefact(s) %s (pass --artifact NAME=URL)", strings.Join(res.Skipped, ", "))
	}
	fmt.Fprintln(c.App.Writer)
	for _, u := range res.Unpinned {
		fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: warning: %s was not pinned; its hash was recorded at download\n", u)
	}
	return nil
}

func createErr(err error) error {
	var me *fetch.MismatchError
	var se *fetch.StatusError
	var mf *bundles.MissingFactsError
	switch {
	case errors.As(err, &mf):
		return withCode(exitUsage, err, "write them under model: in the spec (see 'qwen-appliance bundle specs qwen2.5-7b-instruct'), or add the model's config.json to its sources")
	case errors.Is(err, bundles.ErrInput):
		return withCode(exitUsage, err, "supply runtime artefacts with --artifact NAME=URL#sha256=HEX, naming ones the spec lists")
	case errors.As(err, &me), errors.Is(err, manifests.ErrVerification):
		return withCode(exitVerification, err, "a fetched file differs from its pin: nothing was signed; check the source, or the spec's sha256")
	case errors.Is(err, space.ErrNoSpace):
		return withCode(exitError, err, "free space or pass --out (and --cache) on a larger filesystem")
	case errors.As(err, &se):
		return withCode(exitError, err, "check the URL and, for gated Hugging Face repositories, HF_TOKEN")
	case specs.IsError(err):
		return withCode(exitError, err, "fix the spec at the place named, or supply it with --artifact / --allow-unpinned")
	case errors.Is(err, fetch.ErrOffline):
		return withCode(exitError, err, "bundle create runs on a connected machine: check its network and DNS, or set HF_ENDPOINT to a mirror it can reach; then run the same command again (fetched files are kept)")
	case errors.Is(err, fetch.ErrConnectedOnly):
		return withCode(exitUsage, err, "run 'bundle create' with the full build ('make build') on the connected side, or use an https://, hf:// or file:// source")
	}
	return withCode(exitError, err, "run the same command again to resume the downloads")
}

func bundleSpecs(c *cli.Context) error {
	type entry struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		YAML        string `json:"yaml,omitempty"`
	}
	if c.NArg() == 0 {
		list := []entry{}
		var text strings.Builder
		for _, n := range specs.Names() {
			s, err := specs.Load(n)
			if err != nil {
				return err
			}
			list = append(list, entry{Name: n, Description: s.Description})
			fmt.Fprintf(&text, "%-26s %s\n", n, s.Description)
		}
		return report(c, list, "%s", text.String())
	}
	data, err := specs.Embedded(c.Args().First())
	if err != nil {
		return usagef("run 'qwen-appliance bundle specs' for the list", "%v", err)
	}
	s, err := specs.Load(c.Args().First())
	if err != nil {
		return err
	}
	return report(c, entry{Name: c.Args().First(), Description: s.Description, YAML: string(data)}, "%s", data)
}

func packCommand() *cli.Command {
	return &cli.Command{
		Name:      "pack",
		Usage:     "cut a bundle directory into tar volumes with a signed index and optional parity",
		ArgsUsage: "DIR",
		Description: `Writes DIR as one tar stream (manifest first) cut into volumes of
--volume-size bytes (K, M, G, T suffixes: 4G is 4 GiB), plus --parity
Reed-Solomon parity volumes that can rebuild that many lost or corrupt
volumes, and NAME-vVERSION.index.json with its signature (.index.sig), listing
each volume's size and SHA-256 and each entry's path and size. Every file is
checked against the manifest while it is archived.

Example:
   qwen-appliance bundle pack ./bundle --out /media/usb --volume-size 4G --parity 2 --key release.key`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "directory for the volumes (must not exist, or be empty)"},
			&cli.StringFlag{Name: "volume-size", Value: "4G", Usage: "bytes per data volume (plain, or with K, M, G, T)"},
			&cli.IntFlag{Name: "parity", Usage: "Reed-Solomon parity volumes (each rebuilds one lost or corrupt volume)"},
			&cli.StringFlag{Name: "key", Usage: "private key file NAME.key to sign the volume index with"},
			&cli.BoolFlag{Name: "json", Usage: "print the index as JSON; JSON-lines progress on stderr"},
		},
		Action: bundlePack,
	}
}

func bundlePack(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	if c.String("out") == "" {
		return usagef("pass --out VOLDIR, a new directory for the volumes", "--out is required")
	}
	size, err := space.Parse(c.String("volume-size"))
	if err != nil || size < volume.MinVolumeSize {
		return usagef("--volume-size takes bytes or a size like 650M, 4G (at least 64K)", "--volume-size %q", c.String("volume-size"))
	}
	if p := c.Int("parity"); p < 0 || p > 128 {
		return usagef("--parity takes 0 to 128", "--parity %d", p)
	}
	key, err := loadKey(c)
	if err != nil {
		return err
	}
	rep := reporter(c, "pack")
	x, err := volume.Pack(c.Context, dir, volume.PackOptions{Out: c.String("out"), VolumeSize: size, Parity: c.Int("parity"), Key: key, Progress: rep})
	rep.Stop()
	if err != nil {
		if errors.Is(err, manifests.ErrVerification) {
			return withCode(exitVerification, err, "the bundle changed after it was signed: run 'bundle verify' on it, or create it again")
		}
		return withCode(exitError, err, "check DIR is a signed bundle and --out a new directory with room")
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, x)
	}
	fmt.Fprintf(c.App.Writer, "packed %s version %d into %s: %d data volume(s), %d parity volume(s), %s stream; index %s\n",
		x.Name, x.Version, c.String("out"), x.DataVolumes, x.ParityVolumes, space.Format(x.StreamSize), volume.IndexName(volume.Prefix(x.Name, x.Version)))
	return nil
}

func unpackCommand() *cli.Command {
	return &cli.Command{
		Name:      "unpack",
		Usage:     "check packed volumes, rebuild damaged ones from parity, and unpack the bundle",
		ArgsUsage: "VOLDIR",
		Description: `Checks the index signature with --trust, hashes every volume in VOLDIR and
matches it to the index by content (naming missing, corrupt, duplicated and
out-of-order volumes), rebuilds up to the parity count of volumes into a
temporary directory, then streams the archive into a temporary directory next
to --out, checking every entry against the index and every file against the
signed manifest, and renames it to --out only when everything matched. The
volumes in VOLDIR are only read, never changed or deleted.

Example:
   qwen-appliance bundle unpack /media/usb --out /srv/bundle --trust release.pub`,
		Flags: append(trustFlags(),
			&cli.StringFlag{Name: "out", Usage: "bundle directory to create (must not exist, or be empty)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON; JSON-lines progress on stderr"},
		),
		Action: bundleUnpack,
	}
}

func bundleUnpack(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	if c.String("out") == "" {
		return usagef("pass --out DIR, a new directory for the bundle", "--out is required")
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return err
	}
	rep := reporter(c, "unpack")
	r, err := volume.Unpack(c.Context, dir, volume.UnpackOptions{Out: c.String("out"), Verifier: v, Progress: rep})
	rep.Stop()
	if err != nil {
		return volumeErr(c, r, err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, r)
	}
	printProblems(c.App.ErrWriter, r)
	fmt.Fprintf(c.App.Writer, "unpacked %s version %d into %s: %d files, %s", r.Name, r.Version, r.Dir, r.Files, space.Format(r.Bytes))
	if len(r.Rebuilt) > 0 {
		fmt.Fprintf(c.App.Writer, "; rebuilt volume(s) %v from parity", r.Rebuilt)
	}
	fmt.Fprintln(c.App.Writer)
	return nil
}

func printProblems(w io.Writer, r *volume.Report) {
	if r == nil {
		return
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "qwen-appliance: warning: %s\n", p.Detail)
	}
}

// volumeErr maps a failure to read volumes to its exit code and hint.
func volumeErr(c *cli.Context, r *volume.Report, err error) error {
	var ve *volume.VolumesError
	var ae *volume.ArchiveError
	switch {
	case errors.As(err, &ve) && ve.Rebuildable:
		return withCode(exitVerification, err, "run 'bundle unpack', which rebuilds them from parity, or copy the named volumes again")
	case errors.As(err, &ve):
		return withCode(exitVerification, err, "copy the named volumes again from the original media")
	case errors.As(err, &ae):
		return withCode(exitVerification, err, "the archive is not what the signed index describes: do not use these volumes; pack them again")
	case errors.Is(err, manifests.ErrVerification):
		return withCode(exitVerification, err, verificationHint(err))
	case errors.Is(err, space.ErrNoSpace):
		return withCode(exitError, err, "free space, or pass --out on a larger filesystem")
	}
	return withCode(exitError, err, "check VOLDIR holds the volumes and the .index.json and .index.sig files")
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a bundle directory or packed volumes hold, without unpacking",
		ArgsUsage: "DIR|VOLDIR",
		Description: `For a bundle directory: the manifest's name, version, model, runtime and
files. For packed volumes: the index (volumes, sizes, which are present) and
the manifest read from the head of the first volume; nothing is hashed. With
--trust the signature is checked (index for volumes, manifest for a directory).

Example:
   qwen-appliance bundle inspect /media/usb --trust release.pub`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "trust", Usage: "trusted public key file NAME.pub (optional: checks the signature)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: bundleInspect,
	}
}

func isBundleDir(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, manifests.ManifestFile))
	return err == nil
}

func bundleInspect(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	var trusted []manifests.PublicKey
	if ps := c.StringSlice("trust"); len(ps) > 0 {
		if trusted, err = manifests.LoadPublicKeys(ps...); err != nil {
			return withCode(exitError, err, "check the --trust file")
		}
	}
	w := c.App.Writer
	if isBundleDir(dir) {
		var m *manifests.Manifest
		verified := false
		if len(trusted) > 0 {
			s, err := manifests.Verifier{Trusted: trusted, AllowExpired: true}.Open(dir)
			if err != nil {
				return openError(err)
			}
			m, verified = s.Manifest, true
		} else {
			data, err := manifests.ReadFile(dir, manifests.ManifestFile)
			if errors.Is(err, manifests.ErrVerification) {
				return withCode(exitVerification, err, verificationHint(err))
			}
			if err != nil {
				return err
			}
			if m, err = manifests.Parse(data); err != nil {
				return withCode(exitError, err, "the manifest is damaged: get a fresh copy of the bundle")
			}
		}
		if c.Bool("json") {
			return printJSON(w, map[string]any{"kind": "directory", "signatureVerified": verified, "manifest": m})
		}
		printManifest(w, m, verified)
		return nil
	}
	info, err := volume.Inspect(dir, trusted)
	if err != nil {
		if errors.Is(err, manifests.ErrVerification) {
			return withCode(exitVerification, err, verificationHint(err))
		}
		return withCode(exitError, err, "DIR must be a bundle directory (manifest.json) or hold packed volumes (*.index.json)")
	}
	if c.Bool("json") {
		return printJSON(w, map[string]any{"kind": "volumes", "info": info})
	}
	x := info.Index
	state := "index signature NOT checked (pass --trust)"
	if info.Verified {
		state = "index signature verified"
	}
	fmt.Fprintf(w, "packed bundle %s version %d (%s)\n", x.Name, x.Version, state)
	fmt.Fprintf(w, "stream %s in %d data volume(s) of up to %s, %d parity volume(s); %d entries, %s of files\n",
		space.Format(x.StreamSize), x.DataVolumes, space.Format(x.VolumeSize), x.ParityVolumes, len(x.Entries), space.Format(x.ContentSize()))
	present := map[int]bool{}
	for _, n := range info.Present {
		present[n] = true
	}
	for _, v := range x.Volumes {
		st := "present (not hashed)"
		if !present[v.Number] {
			st = "MISSING or wrong size"
		}
		fmt.Fprintf(w, "  %-40s %-6s %12d bytes  sha256 %s…  %s\n", v.Name, v.Kind, v.Size, v.SHA256[:16], st)
	}
	if info.Manifest != nil {
		printManifest(w, info.Manifest, info.Verified)
	}
	return nil
}

func printManifest(w io.Writer, m *manifests.Manifest, verified bool) {
	state := "signature NOT checked (pass --trust)"
	if verified {
		state = "signature verified"
	}
	fmt.Fprintf(w, "bundle %s version %d (%s), created %s, expires %s\n", m.Name, m.Version, state,
		m.Created.Format(time.RFC3339), m.Expires.Format(time.RFC3339))
	fmt.Fprintf(w, "model %s (%s, %s, %s), revision %s\n", m.Model.Name, m.Model.Architecture, m.Model.Format, m.Model.Dtype, m.Provenance.Revision)
	fmt.Fprintf(w, "runtime %s %s on %v\n", m.Runtime.Kind, m.Runtime.Version, m.Runtime.Devices)
	for _, f := range m.Files {
		fmt.Fprintf(w, "  %s %12d  %s\n", f.Mode, f.Size, f.Path)
	}
	fmt.Fprintf(w, "%d files, %s\n", len(m.Files), space.Format(m.TotalSize()))
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check a bundle directory or packed volumes against their signatures, without unpacking",
		ArgsUsage: "DIR|VOLDIR",
		Description: `For a bundle directory: the manifest signature, expiry and version, then every
file's size, mode and signed chunk proofs. For packed volumes: the index signature,
every volume's SHA-256 (naming missing, corrupt, duplicated and out-of-order
ones, and whether parity can rebuild them), then every file inside the stream
against the signed manifest; nothing is written.

Example:
   qwen-appliance bundle verify /media/usb --trust release.pub`,
		Flags: append(trustFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		),
		Action: bundleVerify,
	}
}

func bundleVerify(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	if isBundleDir(dir) {
		// A bundle directory is checked exactly as 'manifest verify' does.
		return manifestVerify(c)
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return err
	}
	w := c.App.Writer
	rep := reporter(c, "verify")
	r, err := volume.Verify(c.Context, dir, v, rep)
	rep.Stop()
	if err != nil {
		return volumeErr(c, r, err)
	}
	if c.Bool("json") {
		return printJSON(w, map[string]any{"ok": true, "kind": "volumes", "report": r})
	}
	printProblems(c.App.ErrWriter, r)
	fmt.Fprintf(w, "OK %s version %d: index and manifest signed by %s; %d volume(s) and %d parity volume(s) match; %d files, %s match the manifest\n",
		r.Name, r.Version, strings.Join(r.KeyIDs, ", "), r.Volumes, r.Parity, r.Files, space.Format(r.Bytes))
	return nil
}
