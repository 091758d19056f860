package main

import (
	"errors"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "manifest",
		Usage: "create, co-sign and verify the signed manifest that pins a bundle",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "hash every file under DIR and write DIR/manifest.json and DIR/manifest.sig",
				ArgsUsage: "DIR",
				Description: `Hashes every regular file under DIR (SHA-256 of the whole file and of every
chunk, in parallel) and writes the canonical manifest and its detached ed25519
signature. Symlinks, devices, FIFOs, unsafe names and setuid bits are refused.
The same files and flags always give byte-identical manifest.json; the creation
time comes from --created, else $SOURCE_DATE_EPOCH, else the clock.

A DIR that already holds a signed manifest is refused (exit 2): writing would
replace its version and drop every signature on it, co-signatures included.
Pass --force to replace it on purpose.

Example:
   qwen-appliance manifest create ./bundle --key release.key --name qwen2.5-7b \
       --version 3 --expires 180d --meta model-facts.json`,
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "key", Usage: "private key file NAME.key to sign with (repeat for several signers)"},
					&cli.StringFlag{Name: "name", Usage: "bundle name (default: DIR's base name, lower-cased)"},
					&cli.Uint64Flag{Name: "version", Value: 1, Usage: "bundle version, a whole number that must grow with every release"},
					createdFlag, expiresFlag,
					&cli.StringFlag{Name: "meta", Usage: "JSON file with the model, requirements, runtime and provenance sections"},
					&cli.StringFlag{Name: "chunk-size", Value: "16M", Usage: "chunk size, a multiple of 4K (e.g. 16M)"},
					&cli.BoolFlag{Name: "json", Usage: "print a JSON summary"},
					&cli.BoolFlag{Name: "force", Usage: "replace a signed manifest already in DIR (its signatures are lost)"},
				},
				Action: manifestCreate,
			},
			{
				Name:      "verify",
				Usage:     "check DIR's signature, expiry and version, then every file's size, mode and hashes",
				ArgsUsage: "DIR",
				Description: `Checks, in order: the signatures over the exact bytes of manifest.json by the
keys given with --trust (at least --threshold of them), that the manifest is
valid, not expired and not older than --min-version; then every file on disk:
missing, extra, symlinked, resized or re-moded files and every chunk whose bytes
differ (named with its byte range). Chunks are hashed in parallel.

Example:
   qwen-appliance manifest verify ./bundle --trust release.pub`,
				Flags: append(trustFlags(),
					&cli.BoolFlag{Name: "json", Usage: "print the verification report as JSON"},
				),
				Action: manifestVerify,
			},
			{
				Name:      "sign",
				Usage:     "add a co-signature to DIR/manifest.sig (for k-of-n approval)",
				ArgsUsage: "DIR",
				Description: `Checks that every file under DIR matches manifest.json, then adds a signature
by --key to manifest.sig. Use it when installs require --threshold 2 or more.

Example:
   qwen-appliance manifest sign ./bundle --key security-officer.key`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "private key file NAME.key of the co-signer"},
					jsonOutput,
				},
				Action: manifestSign,
			},
		},
	})
}

// The validity flags of every command that signs a manifest.
var (
	createdFlag = &cli.StringFlag{Name: "created", Usage: "creation time (RFC 3339); default $SOURCE_DATE_EPOCH or now"}
	expiresFlag = &cli.StringFlag{Name: "expires", Value: "365d", Usage: "manifest expiry: an RFC 3339 time or a span after creation (90d, 2y, 36h)"}
)

// trustFlags are the flags of every command that accepts a signed manifest.
func trustFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "trust", Usage: "trusted public key file NAME.pub (repeat for several keys)"},
		&cli.IntFlag{Name: "threshold", Value: 1, Usage: "signatures by distinct trusted keys required (k of n)"},
		&cli.Uint64Flag{Name: "min-version", Usage: "refuse versions lower than this (the last version accepted)"},
		&cli.BoolFlag{Name: "allow-expired", Usage: "accept an expired manifest (logged on stderr; for offline sites that cannot re-sign in time)"},
	}
}

// verifierFromFlags builds a Verifier from trustFlags.
func verifierFromFlags(c *cli.Context) (manifests.Verifier, error) {
	paths := c.StringSlice("trust")
	if len(paths) == 0 {
		return manifests.Verifier{}, usagef("pass --trust NAME.pub, the public key of whoever signed the bundle", "no trusted key given")
	}
	keys, err := manifests.LoadPublicKeys(paths...)
	if err != nil {
		return manifests.Verifier{}, withCode(exitError, err, "check the --trust file: it must be a .pub file written by 'qwen-appliance keys generate'")
	}
	if t := c.Int("threshold"); t < 1 || t > len(keys) {
		return manifests.Verifier{}, usagef("--threshold must be between 1 and the number of trusted keys", "--threshold %d with %d trusted key(s)", t, len(keys))
	}
	if c.Bool("allow-expired") {
		fmt.Fprintln(c.App.ErrWriter, "qwen-appliance: warning: --allow-expired: an expired manifest will be accepted")
	}
	return manifests.Verifier{Trusted: keys, Threshold: c.Int("threshold"), MinVersion: c.Uint64("min-version"), AllowExpired: c.Bool("allow-expired")}, nil
}

// verificationHint maps a verification error to the step that fixes it.
func verificationHint(err error) string {
	var fte *manifests.FileTypeError
	switch {
	case errors.As(err, &fte):
		return "replace " + fte.Path + " with the regular file from the original media (bundles hold no symlinks, FIFOs or devices)"
	case errors.Is(err, manifests.ErrUntrustedKey):
		return "pass the signer's public key with --trust, or get the bundle re-signed by a key you trust"
	case errors.Is(err, manifests.ErrBadSignature), errors.Is(err, manifests.ErrNotCanonical):
		return "manifest.json was changed after signing: get a fresh copy of the bundle from the signer"
	case errors.Is(err, manifests.ErrThreshold):
		return "more trusted signers must co-sign with 'qwen-appliance manifest sign', or lower --threshold"
	case errors.Is(err, manifests.ErrExpired):
		return "ask the signer for a re-signed manifest; --allow-expired accepts it anyway (logged)"
	case errors.Is(err, manifests.ErrRollback):
		return "this is an older release than the one accepted before; use the newer bundle"
	case errors.Is(err, manifests.ErrUnsigned):
		return "the bundle has no valid manifest.sig: sign it with 'qwen-appliance manifest create --key'"
	case errors.Is(err, manifests.ErrVerification):
		return "the files differ from what was signed: copy the bundle again from the original media"
	case errors.Is(err, fs.ErrNotExist):
		return "check the bundle directory: it must hold manifest.json and manifest.sig, as 'bundle create' and 'bundle unpack' write them"
	case errors.Is(err, fs.ErrPermission):
		return "run as a user who can read every file of the bundle, or as root"
	}
	return ""
}

// openError gives an error from opening a signed bundle its exit code: 3
// when a check refused it, 1 when it could not be read (a wrong path, a
// permission), each with its own hint.
func openError(err error) error {
	if errors.Is(err, manifests.ErrVerification) {
		return withCode(exitVerification, err, verificationHint(err))
	}
	return withCode(exitError, err, verificationHint(err))
}

func oneDir(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usagef(fmt.Sprintf("run '%s --help'", c.Command.HelpName), "want exactly one DIR argument, got %d", c.NArg())
	}
	return c.Args().First(), nil
}

var nameClean = regexp.MustCompile(`[^a-z0-9._-]+`)

// refuseSigned refuses to overwrite a signed manifest in dir: a re-run of
// manifest create would replace it with version and only this run's
// signatures, silently. A manifest.sig that is absent or empty is no
// signature.
func refuseSigned(dir string, version uint64) error {
	data, err := os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return withCode(exitError, err, "check DIR's permissions")
	}
	sigs, err := manifests.ParseSignatures(data)
	if errors.Is(err, manifests.ErrUnsigned) {
		return nil
	}
	// A signature file that does not parse is still someone's signature.
	signed := "a signature file"
	if err == nil {
		signed = fmt.Sprintf("%d signature(s)", len(sigs.Signatures))
	}
	what := "a manifest with " + signed
	if raw, rerr := os.ReadFile(filepath.Join(dir, manifests.ManifestFile)); rerr == nil {
		if m, perr := manifests.Parse(raw); perr == nil {
			what = fmt.Sprintf("%s version %d with %s", m.Name, m.Version, signed)
		}
	}
	return usagef("pass --force to replace it (every signer must sign the new one), or create the manifest in a copy of DIR",
		"manifest create: %s already holds %s; writing version %d would replace it and drop its signatures",
		dir, what, version)
}

func manifestCreate(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	keyPaths := c.StringSlice("key")
	if len(keyPaths) == 0 {
		return usagef("pass --key NAME.key (make one with 'qwen-appliance keys generate --out NAME')", "manifest create: --key is required")
	}
	var keys []manifests.PrivateKey
	for _, p := range keyPaths {
		k, err := privateKey(p)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	created, expires, err := validity(c)
	if err != nil {
		return err
	}
	chunk, err := space.Parse(c.String("chunk-size"))
	if err != nil || chunk%4096 != 0 || chunk == 0 {
		return usagef("--chunk-size takes a multiple of 4K, e.g. 16M", "--chunk-size %q is not a positive multiple of 4096 bytes", c.String("chunk-size"))
	}
	if !c.Bool("force") {
		if err := refuseSigned(dir, c.Uint64("version")); err != nil {
			return err
		}
	}
	name := c.String("name")
	if name == "" {
		abs, _ := filepath.Abs(dir)
		name = strings.Trim(nameClean.ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-"), "-._")
	}
	var meta manifests.Meta
	if p := c.String("meta"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			return withCode(exitError, err, "check the --meta path")
		}
		if meta, err = manifests.ParseMeta(data); err != nil {
			return withCode(exitError, fmt.Errorf("--meta %s: %w", p, err), "--meta holds {\"model\":…, \"requirements\":…, \"runtime\":…, \"provenance\":…}; see docs/bundles.md")
		}
	}
	if meta.Provenance.Tool == "" {
		meta.Provenance.Tool = "qwen-appliance " + toolVersion()
	}
	start := time.Now()
	rep := reporter(c, "hash")
	m, err := manifests.Create(c.Context, dir, manifests.CreateOptions{
		Name: name, Version: c.Uint64("version"), Created: created, Expires: expires,
		Meta: meta, ChunkSize: chunk,
		Progress: byteProgress(rep, dir, -1),
	})
	rep.Done(dir, err)
	rep.Stop()
	if err != nil {
		return withCode(exitError, err, "fix or remove the named files, then run manifest create again")
	}
	if err := manifests.Write(dir, m, keys...); err != nil {
		return err
	}
	el := time.Since(start)
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{
			"name": m.Name, "version": m.Version, "files": len(m.Files), "bytes": m.TotalSize(),
			"manifest": filepath.Join(dir, manifests.ManifestFile), "seconds": el.Seconds(),
		})
	}
	fmt.Fprintf(c.App.Writer, "wrote %s and %s: %s version %d, %d files, %s, hashed in %s\n",
		filepath.Join(dir, manifests.ManifestFile), manifests.SignatureFile, m.Name, m.Version, len(m.Files), space.Format(m.TotalSize()), el.Round(time.Millisecond))
	return nil
}

// validity reads --created and --expires (a time, or a span after
// creation), with usage errors naming the flag.
func validity(c *cli.Context) (created, expires time.Time, err error) {
	created, err = creationTime(c.String("created"))
	if err != nil {
		return created, expires, usagef("--created takes an RFC 3339 time such as 2026-11-26T00:00:00Z", "--created: %v", err)
	}
	expires, err = parseTimeOrAfter(c.String("expires"), created)
	if err != nil {
		return created, expires, usagef("--expires takes 90d, 2y, 36h or an RFC 3339 time", "--expires: %v", err)
	}
	return created, expires, nil
}

// creationTime reads --created, else SOURCE_DATE_EPOCH, else the clock.
func creationTime(s string) (time.Time, error) {
	if s != "" {
		return time.Parse(time.RFC3339, s)
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		sec, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a whole number of seconds", e)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Now().UTC(), nil
}

// verifyReport is the --json output of manifest verify.
type verifyReport struct {
	OK       bool                    `json:"ok"`
	Dir      string                  `json:"dir"`
	Name     string                  `json:"name,omitempty"`
	Version  uint64                  `json:"version,omitempty"`
	Expires  *time.Time              `json:"expires,omitempty"`
	KeyIDs   []string                `json:"keyIds,omitempty"`
	Files    int                     `json:"files"`
	Bytes    int64                   `json:"bytes"`
	Seconds  float64                 `json:"seconds"`
	Error    string                  `json:"error,omitempty"`
	Problems []manifests.FileProblem `json:"problems,omitempty"`
}

func manifestVerify(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return err
	}
	start := time.Now()
	rep := verifyReport{Dir: dir}
	signed, err := v.Open(dir)
	if err == nil {
		m := signed.Manifest
		rep.Name, rep.Version, rep.Expires, rep.KeyIDs = m.Name, m.Version, &m.Expires, signed.KeyIDs
		rep.Files, rep.Bytes = len(m.Files), m.TotalSize()
		rep := reporter(c, "verify")
		err = manifests.CheckFiles(c.Context, dir, m, manifests.CheckOptions{Progress: byteProgress(rep, dir, m.TotalSize())})
		rep.Done(dir, err)
		rep.Stop()
	}
	rep.Seconds = time.Since(start).Seconds()
	var fe *manifests.FilesError
	if errors.As(err, &fe) {
		rep.Problems = fe.Problems
	}
	code := exitError
	if errors.Is(err, manifests.ErrVerification) {
		code = exitVerification
	}
	if err != nil {
		rep.Error = err.Error()
	}
	rep.OK = err == nil
	if c.Bool("json") {
		if perr := printJSON(c.App.Writer, rep); perr != nil {
			return perr
		}
		return reportedError(code, err, verificationHint(err))
	}
	if err != nil {
		for _, p := range rep.Problems {
			fmt.Fprintf(c.App.Writer, "FAIL %s\n", p)
		}
		return withCode(code, err, verificationHint(err))
	}
	fmt.Fprintf(c.App.Writer, "OK %s version %d: signature by %s, expires %s, %d files (%s) match, checked in %s\n",
		rep.Name, rep.Version, strings.Join(rep.KeyIDs, ", "), rep.Expires.Format(time.RFC3339), rep.Files, space.Format(rep.Bytes),
		time.Duration(rep.Seconds*float64(time.Second)).Round(time.Millisecond))
	return nil
}

func manifestSign(c *cli.Context) error {
	dir, err := oneDir(c)
	if err != nil {
		return err
	}
	k, err := loadKey(c)
	if err != nil {
		return err
	}
	m, err := manifests.Cosign(c.Context, dir, k, manifests.CheckOptions{})
	if errors.Is(err, manifests.ErrVerification) {
		return withCode(exitVerification, err, "the files differ from manifest.json: do not co-sign; get a fresh copy")
	}
	if err != nil {
		return err
	}
	sig := filepath.Join(dir, manifests.SignatureFile)
	return report(c, map[string]any{"keyId": k.ID, "signature": sig, "name": m.Name, "version": m.Version},
		"added signature by key %s to %s (%s version %d)\n", k.ID, sig, m.Name, m.Version)
}
