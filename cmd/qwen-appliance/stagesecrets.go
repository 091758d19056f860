package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
)

// maxSecretBytes bounds one staged file: token files, PEM certificates and
// keys are small.
const maxSecretBytes = 4 << 20

func init() {
	register(&cli.Command{
		Name:      "stage-secrets",
		Hidden:    true, // run by the exported chart's init container
		Usage:     "copy secret files into a directory of this user's own, mode 0600",
		ArgsUsage: "SRC:NAME...",
		Description: `Kubernetes mounts Secrets owned by root, or group-readable when the pod has an
fsGroup, and serve refuses a token file or key that others can read. The
chart 'export helm' writes runs this in an init container: each SRC (a file
of a mounted Secret) is copied to --to/NAME, owned by the container's user,
mode 0600. Tokens and keys rotated in the Secret take effect when the pod
restarts.

Example:
   qwen-appliance stage-secrets --to /run/qwen-appliance \
       /etc/qwen-appliance/tokens/tokens.json:tokens.json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "directory to copy into (must exist)"},
		},
		Action: stageSecrets,
	})
}

func stageSecrets(c *cli.Context) error {
	to := c.String("to")
	if to == "" || c.NArg() == 0 {
		return usagef("pass --to DIR and one or more SRC:NAME", "stage-secrets needs --to and files")
	}
	for _, a := range c.Args().Slice() {
		src, name, ok := strings.Cut(a, ":")
		if !ok || src == "" || name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
			return usagef("write SRC:NAME with NAME a plain file name", "stage-secrets: %q is not SRC:NAME", a)
		}
		f, err := os.Open(src) // Secret volumes reach their files through ..data symlinks
		if err != nil {
			return withCode(exitError, err, "check that the Secret is mounted")
		}
		data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
		f.Close()
		if err != nil {
			return withCode(exitError, fmt.Errorf("stage-secrets: read %s: %w", src, err), "")
		}
		if len(data) > maxSecretBytes {
			return withCode(exitError, fmt.Errorf("stage-secrets: %s is larger than %d bytes", src, maxSecretBytes), "")
		}
		if err := atomicfile.WriteFile(filepath.Join(to, name), data, 0o600); err != nil {
			return withCode(exitError, fmt.Errorf("stage-secrets: %w", err), "check that --to is writable")
		}
		fmt.Fprintf(c.App.Writer, "staged %s as %s\n", src, filepath.Join(to, name))
	}
	return nil
}
