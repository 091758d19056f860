package main

import (
	"fmt"
	"os"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "keys",
		Usage: "manage the ed25519 keys that sign manifests",
		Subcommands: []*cli.Command{{
			Name:      "generate",
			Usage:     "write a new signing key pair NAME.key and NAME.pub",
			ArgsUsage: " ",
			Description: `Writes NAME.key (the private key, mode 0600) and NAME.pub (the public key,
one line: "qwen-appliance-public-key ed25519 KEYID BASE64 [comment]"). It never
overwrites an existing file. Keep NAME.key offline on the connected side; copy
NAME.pub to the isolated host and pass it to --trust.

Example:
   qwen-appliance keys generate --out release-2026 --comment "release team"`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "path prefix NAME of the key pair (writes NAME.key and NAME.pub)"},
				&cli.StringFlag{Name: "comment", Usage: "free text stored in NAME.pub, e.g. who owns the key"},
				&cli.BoolFlag{Name: "json", Usage: "print the key ID and paths as JSON"},
			},
			Action: keysGenerate,
		}},
	})
}

func keysGenerate(c *cli.Context) error {
	name := c.String("out")
	if name == "" {
		return usagef("pass --out NAME, e.g. --out release-2026", "keys generate: --out is required")
	}
	k, err := manifests.GenerateKey(nil)
	if err != nil {
		return err
	}
	old := syscallUmask(0o077)
	defer syscallUmask(old)
	if err := manifests.WriteKeyPair(name, k, c.String("comment")); err != nil {
		if _, statErr := os.Lstat(name + ".key"); statErr == nil {
			return withCode(exitError, err, "choose another --out name, or move the old key pair away first")
		}
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]string{"keyId": k.ID, "privateKey": name + ".key", "publicKey": name + ".pub"})
	}
	fmt.Fprintf(c.App.Writer, "key %s\nprivate key: %s (keep it offline, mode 0600)\npublic key:  %s (copy to the isolated host, pass to --trust)\n", k.ID, name+".key", name+".pub")
	return nil
}

// privateKey loads a --key file, with the hint every command gives for it.
func privateKey(path string) (manifests.PrivateKey, error) {
	k, err := manifests.LoadPrivateKey(path)
	if err != nil {
		return k, withCode(exitError, err, "check --key: it must be a .key file written by 'qwen-appliance keys generate', mode 0600")
	}
	return k, nil
}
