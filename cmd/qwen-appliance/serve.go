package main

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(&cli.Command{
		Name:  "serve",
		Usage: "run the authenticated, audited, TLS gateway in front of the model server",
		UsageText: "qwen-appliance serve --upstream URL --listen ADDR --tokens FILE --audit-log FILE [--audit-key K]\n" +
			"   [--upstream-ca F --upstream-cert F --upstream-key F [--upstream-server-name NAME]]\n" +
			"   [--tls-cert F --tls-key F [--client-ca F] [--tls13-only]] [--metrics-listen ADDR]\n" +
			"   [--kb STORE/kb/kb.db [--kb-context-tokens N]]\n" +
			"   qwen-appliance serve --config /etc/qwen/serve.yaml [flags that override it]",
		Description: "Forwards only /v1/chat/completions, /v1/completions, /v1/embeddings and\n" +
			"/v1/models to the model server on loopback or a Unix socket, or, for a runtime\n" +
			"on another host or pod, over https:// with mutual TLS: the runtime's certificate\n" +
			"must chain to --upstream-ca and name the URL's host (or --upstream-server-name),\n" +
			"and the gateway presents --upstream-cert/--upstream-key ('tls pair' makes all\n" +
			"three). Plain http:// to any other address is refused (exit 2). Every request is\n" +
			"authenticated with a token from --tokens and recorded in --audit-log. A body is\n" +
			"parsed once and forwarded as the gateway re-encodes it; duplicate keys, and keys\n" +
			"that match a field like max_tokens or model only when case is ignored, get 400\n" +
			"ambiguous_json. SIGHUP\n" +
			"reloads the token file and the TLS certificate; the token file is also\n" +
			"re-read within seconds of a change. Metrics, /healthz and /readyz are served\n" +
			"on --metrics-listen only. With --kb, POST /v1/kb/chat/completions answers from\n" +
			"the knowledge base: only chunks the token's roles may read reach the model, the\n" +
			"answer carries citations, and nothing relevant means a not-found answer without\n" +
			"calling the model (see docs/kb-answers.md). --config names a YAML file of the\n" +
			"same settings (flag name: value); flags given on the command line win.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "YAML file of settings named like these flags"},
			&cli.StringFlag{Name: "upstream", Usage: "model server: http://127.0.0.1:PORT, unix:///path.sock, or https://HOST:PORT with the --upstream-ca/-cert/-key flags (this or --upstream-file is required)"},
			&cli.StringFlag{Name: "upstream-ca", Usage: "https:// upstream: the CA the runtime's certificate must chain to (trusted alone)"},
			&cli.StringFlag{Name: "upstream-cert", Usage: "https:// upstream: the gateway's client certificate (PEM)"},
			&cli.StringFlag{Name: "upstream-key", Usage: "https:// upstream: the gateway's client key (PEM, mode 0600)"},
			&cli.StringFlag{Name: "upstream-server-name", Usage: "https:// upstream: the name the runtime's certificate must carry (default: the URL's host)"},
			&cli.StringFlag{Name: "upstream-file", Usage: "file whose first line is the upstream; re-read on SIGHUP, switching atomically (install uses it for upgrades)"},
			&cli.StringFlag{Name: "listen", Usage: "API address", Value: "127.0.0.1:8443"},
			&cli.StringFlag{Name: "tokens", Usage: "token file made by 'tokens create' (required)"},
			&cli.StringFlag{Name: "audit-log", Usage: "audit log file, appended and hash-chained (required)"},
			&cli.StringFlag{Name: "audit-key", Usage: "private key that signs audit checkpoints ('keys generate')"},
			&cli.BoolFlag{Name: "audit-content", Usage: "also log prompts and non-streamed answers (off: never)"},
			&cli.Int64Flag{Name: "audit-max-bytes", Usage: "rotate the audit log past this size", Value: 256 << 20},
			&cli.DurationFlag{Name: "audit-checkpoint", Usage: "longest time between signed checkpoints", Value: 30 * time.Second},
			&cli.DurationFlag{Name: "audit-sync-every", Usage: "group commit window: under load at most one fsync of the audit log per this long (a quiet log is fsynced at once); a crash can lose the lines of at most one window", Value: 5 * time.Millisecond},
			&cli.StringFlag{Name: "tls-cert", Usage: "server certificate (PEM); with --tls-key turns TLS on"},
			&cli.StringFlag{Name: "tls-key", Usage: "server key (PEM)"},
			&cli.StringFlag{Name: "client-ca", Usage: "require client certificates signed by this CA (mTLS)"},
			&cli.BoolFlag{Name: "tls13-only", Usage: "refuse TLS 1.2"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "address for /metrics, /healthz, /readyz (empty: off)", Value: "127.0.0.1:9464"},
			&cli.Int64Flag{Name: "max-body", Usage: "request body limit in bytes", Value: 1 << 20},
			&cli.IntFlag{Name: "max-tokens", Usage: "cap on max_tokens (filled in when absent or null)", Value: 4096},
			&cli.IntFlag{Name: "max-n", Usage: "cap on n", Value: 4},
			&cli.IntFlag{Name: "max-concurrent", Usage: "requests forwarded at once; more get 503", Value: 64},
			&cli.IntFlag{Name: "auth-failures", Usage: "failed authentications per minute per address before it is throttled", Value: 10},
			&cli.DurationFlag{Name: "read-header-timeout", Usage: "time allowed for a request's headers", Value: 5 * time.Second},
			&cli.DurationFlag{Name: "upstream-timeout", Usage: "time allowed for one upstream exchange", Value: 10 * time.Minute},
			&cli.StringFlag{Name: "kb", Usage: "knowledge base (kb.db) that POST /v1/kb/chat/completions answers from, read-only (empty: the route is off)"},
			&cli.IntFlag{Name: "kb-context-tokens", Usage: "the model's context window as served; a knowledge-base prompt and its answer stay below it", Value: kb.DefaultContextTokens},
			&cli.StringFlag{Name: "kb-not-found-zh", Usage: "answer to a Chinese question when nothing readable is relevant", Value: kb.DefaultNotFoundZH},
			&cli.StringFlag{Name: "kb-not-found-en", Usage: "answer to other questions when nothing readable is relevant", Value: kb.DefaultNotFoundEN},
		},
		Action: serve,
	})
}

func serve(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("serve takes no arguments; see --help", "unexpected argument %q", c.Args().First())
	}
	if err := applyConfig(c); err != nil {
		return err
	}
	if c.String("upstream") == "" && c.String("upstream-file") == "" {
		return usagef("pass --upstream URL or --upstream-file FILE (or set one in --config)", "no upstream given")
	}
	for _, name := range []string{"tokens", "audit-log"} {
		if c.String(name) == "" {
			return usagef("pass --"+name+" or set it in --config", "required setting %q not set", name)
		}
	}
	o := gateway.Options{
		Upstream: c.String("upstream"), UpstreamFile: c.String("upstream-file"),
		UpstreamCA: c.String("upstream-ca"), UpstreamCert: c.String("upstream-cert"), UpstreamKey: c.String("upstream-key"),
		UpstreamServerName: c.String("upstream-server-name"), Listen: c.String("listen"), MetricsListen: c.String("metrics-listen"),
		TokensFile: c.String("tokens"), AuditLog: c.String("audit-log"), AuditContent: c.Bool("audit-content"),
		AuditMaxBytes: c.Int64("audit-max-bytes"), AuditEvery: c.Duration("audit-checkpoint"), AuditSyncEvery: c.Duration("audit-sync-every"),
		TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"), ClientCA: c.String("client-ca"), TLS13Only: c.Bool("tls13-only"),
		MaxBodyBytes: c.Int64("max-body"), MaxTokens: c.Int("max-tokens"), MaxN: c.Int("max-n"),
		MaxConcurrent: c.Int("max-concurrent"), AuthFailures: c.Int("auth-failures"),
		ReadHeaderTimeout: c.Duration("read-header-timeout"), UpstreamTimeout: c.Duration("upstream-timeout"),
		KB: c.String("kb"), KBContextTokens: c.Int("kb-context-tokens"),
		KBNotFoundZH: c.String("kb-not-found-zh"), KBNotFoundEN: c.String("kb-not-found-en"),
		Log: slog.New(slog.NewTextHandler(c.App.ErrWriter, nil)),
	}
	if o.KBContextTokens < 512 {
		return usagef("pass --kb-context-tokens of at least 512 (the runtime's context length)", "--kb-context-tokens %d is too small", o.KBContextTokens)
	}
	if p := c.String("audit-key"); p != "" {
		k, err := manifests.LoadPrivateKey(p)
		if err != nil {
			return withCode(exitError, err, "check --audit-key (a key from 'qwen-appliance keys generate', mode 0600)")
		}
		o.AuditKey = &k
	} else {
		o.Log.Warn("no --audit-key: the audit log is hash-chained but unsigned, so lines removed from its end cannot be detected")
	}
	err := gateway.Run(c.Context, o, func(api, metrics net.Addr) {
		upstream := o.Upstream
		if o.UpstreamFile != "" {
			upstream = "from " + o.UpstreamFile
		}
		args := []any{"api", api.String(), "tls", o.TLSCert != "", "upstream", upstream}
		if metrics != nil {
			args = append(args, "metrics", metrics.String())
		}
		o.Log.Info("serving", args...)
	})
	var ue *gateway.UpstreamError
	if errors.As(err, &ue) {
		flag := "--" + ue.Flag
		if ue.Flag == "upstream" && o.UpstreamFile != "" {
			flag = "the upstream in --upstream-file " + o.UpstreamFile
		}
		return usagef("fix "+flag+"; see 'qwen-appliance serve --help'", "%v", err)
	}
	if err != nil && c.Context.Err() == nil {
		return withCode(exitError, err, "check --upstream, --tokens, --audit-log and the TLS flags")
	}
	return err
}

// applyConfig sets every flag named in --config that the command line left
// unset; the command line wins.
func applyConfig(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	settings, err := gateway.LoadConfig(path)
	if err != nil {
		return usagef("fix --config "+path, "%v", err)
	}
	known := map[string]bool{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			known[n] = n != "config" && n != "help" && n != "h"
		}
	}
	for _, s := range settings {
		if !known[s.Name] {
			return usagef("settings are serve's flag names, see --help", "%s line %d: unknown setting %q", path, s.Line, s.Name)
		}
		if c.IsSet(s.Name) {
			continue
		}
		if err := c.Set(s.Name, s.Value); err != nil {
			return usagef("fix --config "+path, "%s line %d: %s: %v", path, s.Line, s.Name, err)
		}
	}
	return nil
}
