package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
)

func init() {
	register(&cli.Command{
		Name:  "tls",
		Usage: "make certificates for the gateway's TLS",
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "create an internal CA and a server certificate",
			UsageText: "qwen-appliance tls init --dir DIR --host NAME [--host NAME|IP ...] [--days N]",
			Description: "Writes DIR/ca.crt (give it to clients), DIR/ca.key (0600; keep it offline\n" +
				"after issuing), DIR/server.crt and DIR/server.key (0600), ECDSA P-256. The\n" +
				"first --host is the certificate's subject; all are in its alternative names.\n" +
				"Refuses to overwrite existing files.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "output directory (created 0700)", Required: true},
				&cli.StringSliceFlag{Name: "host", Usage: "DNS name or IP address clients use", Required: true},
				&cli.IntFlag{Name: "days", Usage: "server certificate validity in days (CA: ten times)", Value: 397},
			},
			Action: tlsInit,
		}},
	})
}

func tlsInit(c *cli.Context) error {
	if c.Int("days") < 1 {
		return usagef("pass --days 1 or more", "--days %d is not a positive number of days", c.Int("days"))
	}
	dir := c.String("dir")
	err := certs.Init(certs.Options{Dir: dir, Hosts: c.StringSlice("host"), Validity: time.Duration(c.Int("days")) * 24 * time.Hour})
	if err != nil {
		return withCode(exitError, err, "choose an empty --dir")
	}
	for _, f := range []string{certs.CAFile, certs.CAKeyFile, certs.CertFile, certs.KeyFile} {
		fmt.Fprintln(c.App.Writer, filepath.Join(dir, f))
	}
	return nil
}
