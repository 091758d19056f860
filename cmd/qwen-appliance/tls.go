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
		}, {
			Name:      "pair",
			Usage:     "create certificates for mutual TLS between the gateway and a remote runtime",
			UsageText: "qwen-appliance tls pair --dir DIR --host NAME [--host NAME|IP ...] [--days N]",
			Description: "For a runtime on another host or pod (the Helm chart's vLLM Deployment), which\n" +
				"the gateway reaches only over mutual TLS. Writes DIR/ca.crt and DIR/ca.key\n" +
				"(0600; keep it offline after issuing), DIR/runtime.crt and DIR/runtime.key\n" +
				"(0600) for the runtime, naming every --host (the names the gateway dials),\n" +
				"and DIR/gateway-client.crt and DIR/gateway-client.key (0600) for the gateway.\n" +
				"The CA is this pair's own: the runtime admits any client it signed, so never\n" +
				"use it (or the CA of 'tls init') for API clients. Refuses to overwrite files.\n\n" +
				"Then: vllm ... --ssl-certfile runtime.crt --ssl-keyfile runtime.key\n" +
				"  --ssl-ca-certs ca.crt --ssl-cert-reqs 2\n" +
				"and: qwen-appliance serve --upstream https://NAME:PORT --upstream-ca ca.crt\n" +
				"  --upstream-cert gateway-client.crt --upstream-key gateway-client.key ...",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "output directory (created 0700)", Required: true},
				&cli.StringSliceFlag{Name: "host", Usage: "DNS name or IP address the gateway reaches the runtime by", Required: true},
				&cli.IntFlag{Name: "days", Usage: "certificate validity in days (CA: ten times)", Value: 397},
				jsonOutput,
			},
			Action: tlsPair,
		}},
	})
}

func tlsInit(c *cli.Context) error {
	return writeCerts(c, certs.Init, []string{"caCert", certs.CAFile, "caKey", certs.CAKeyFile, "cert", certs.CertFile, "key", certs.KeyFile})
}

func tlsPair(c *cli.Context) error {
	return writeCerts(c, certs.Pair, []string{"caCert", certs.CAFile, "caKey", certs.CAKeyFile,
		"runtimeCert", certs.RuntimeCertFile, "runtimeKey", certs.RuntimeKeyFile,
		"clientCert", certs.ClientCertFile, "clientKey", certs.ClientKeyFile})
}

// writeCerts runs write (certs.Init or certs.Pair) with the command's flags
// and reports the files it wrote, given as JSON key and file name pairs in
// the order they are listed.
func writeCerts(c *cli.Context, write func(certs.Options) error, files []string) error {
	if c.Int("days") < 1 {
		return usagef("pass --days 1 or more", "--days %d is not a positive number of days", c.Int("days"))
	}
	dir := c.String("dir")
	err := write(certs.Options{Dir: dir, Hosts: c.StringSlice("host"), Validity: time.Duration(c.Int("days")) * 24 * time.Hour})
	if err != nil {
		return withCode(exitError, err, "choose an empty --dir")
	}
	paths := map[string]string{}
	var text strings.Builder
	for i := 0; i < len(files); i += 2 {
		paths[files[i]] = filepath.Join(dir, files[i+1])
		text.WriteString(paths[files[i]] + "\n")
	}
	return report(c, paths, "%s", text.String())
}
