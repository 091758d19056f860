package main

import (
	"path/filepath"
	"strings"
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
				jsonOutput,
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
	files := map[string]string{"caCert": certs.CAFile, "caKey": certs.CAKeyFile, "cert": certs.CertFile, "key": certs.KeyFile}
	var text strings.Builder
	for _, k := range []string{"caCert", "caKey", "cert", "key"} {
		files[k] = filepath.Join(dir, files[k])
		text.WriteString(files[k] + "\n")
	}
	return report(c, files, "%s", text.String())
}
