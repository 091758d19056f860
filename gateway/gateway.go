package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Options configure the gateway. Zero limits take the defaults in
// withDefaults.
type Options struct {
	Upstream string // http://127.0.0.1:PORT, unix:///path.sock or https://HOST:PORT (mutual TLS)
	// UpstreamFile, when set, holds the upstream instead of Upstream and is
	// re-read on Reload: install switches an upgraded runtime in by
	// rewriting it and sending SIGHUP.
	UpstreamFile string
	// UpstreamCA, UpstreamCert and UpstreamKey are mutual TLS with an
	// https:// upstream: the CA the runtime's certificate must chain to, and
	// the gateway's client certificate and key (mode 0600). The runtime's
	// certificate must name UpstreamServerName, or the URL's host when empty.
	UpstreamCA, UpstreamCert, UpstreamKey string
	UpstreamServerName                    string

	Listen        string // API address, e.g. 0.0.0.0:8443
	MetricsListen string // metrics, health and readiness; "" disables (default 127.0.0.1:9464 in the CLI)
	TokensFile    string

	AuditLog       string
	AuditKey       *manifests.PrivateKey // signs checkpoints; nil: chained but unsigned
	AuditContent   bool                  // also log request and response bodies
	AuditMaxBytes  int64                 // rotate past this size (0: never)
	AuditEvery     time.Duration         // checkpoint interval
	AuditSyncEvery time.Duration         // group commit window: at most one fsync per this (default 5ms)

	TLSCert, TLSKey string
	ClientCA        string // require client certificates signed by this CA
	TLS13Only       bool

	MaxBodyBytes      int64 // request body limit (default 1 MiB)
	MaxTokens         int   // cap on max_tokens; also filled in when absent (default 4096)
	MaxN              int   // cap on n (default 4)
	MaxConcurrent     int   // requests forwarded at once (default 64)
	AuthFailures      int   // failed authentications per minute per client address before it is throttled (default 10)
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration // whole request, body included
	WriteTimeout      time.Duration // each write to a client; streams renew it per event
	IdleTimeout       time.Duration
	UpstreamTimeout   time.Duration // whole upstream exchange

	// KB is the knowledge base (kb.db) that POST /v1/kb/chat/completions
	// answers from, opened read-only; "" turns the route off (404).
	KB string
	// KBContextTokens is the model's context window as the runtime serves
	// it (install's --context, else the manifest's default): prompt and
	// answer of a knowledge-base request stay below it (default 4096).
	KBContextTokens int
	// KBNotFoundZH and KBNotFoundEN replace the not-found answers for
	// questions with and without Chinese characters.
	KBNotFoundZH, KBNotFoundEN string

	Log *slog.Logger // operational log (never request content); discarded when nil
}

func (o *Options) withDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 4096
	}
	if o.MaxN <= 0 {
		o.MaxN = 4
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 64
	}
	if o.AuthFailures <= 0 {
		o.AuthFailures = 10
	}
	if o.KBContextTokens <= 0 {
		o.KBContextTokens = kb.DefaultContextTokens
	}
	def(&o.ReadHeaderTimeout, 5*time.Second)
	def(&o.ReadTimeout, 30*time.Second)
	def(&o.WriteTimeout, 30*time.Second)
	def(&o.IdleTimeout, 120*time.Second)
	def(&o.UpstreamTimeout, 10*time.Minute)
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Gateway is a configured gateway; Serve runs it.
type Gateway struct {
	o        Options
	upstream atomic.Pointer[upstream] // swapped whole on Reload when UpstreamFile is set
	audit    *audit.Log
	metrics  *metrics
	tls      *tls.Config
	certs    *keyPair

	tokens     atomic.Pointer[tokens.Store]
	tokensStat os.FileInfo
	tokensMu   sync.Mutex

	rate     *limiter // per token: requests
	tpm      *limiter // per token: tokens
	failures *limiter // per client address: failed authentications
	slots    chan struct{}
	active   sync.WaitGroup // requests being handled, so Serve can wait for their audit lines
	kb       *kb.Shared     // nil: no knowledge base
}

// New checks the options, loads tokens and certificates and opens the audit
// log. Close releases what New opened.
func New(o Options) (*Gateway, error) {
	o.withDefaults()
	if o.TokensFile == "" || o.AuditLog == "" {
		return nil, errors.New("gateway: a token file and an audit log are required")
	}
	g := &Gateway{o: o, metrics: newMetrics(), rate: newLimiter(), tpm: newLimiter(),
		failures: newLimiter(), slots: make(chan struct{}, o.MaxConcurrent)}
	if err := g.reloadUpstream(); err != nil {
		return nil, err
	}
	if err := g.reloadTokens(true); err != nil {
		return nil, err
	}
	var err error
	if g.tls, g.certs, err = tlsConfig(&o); err != nil {
		return nil, err
	}
	g.audit, err = audit.Open(audit.Options{Path: o.AuditLog, Key: o.AuditKey, MaxBytes: o.AuditMaxBytes,
		CheckpointEvery: o.AuditEvery, SyncEvery: o.AuditSyncEvery})
	if err != nil {
		return nil, err
	}
	if o.KB != "" {
		// Opened at the first question, and again whenever the file
		// changes: a gateway may start before the knowledge base exists.
		g.kb = kb.OpenShared(o.KB)
		if _, done, err := g.kb.Acquire(); err != nil {
			o.Log.Warn("knowledge base not readable yet; /v1/kb answers 503 until it is", "kb", o.KB, "err", err)
		} else {
			done()
		}
	}
	return g, nil
}

// Close flushes and signs the audit log and closes the knowledge base.
func (g *Gateway) Close() error {
	err := g.audit.Close()
	if g.kb != nil {
		err = errors.Join(err, g.kb.Close())
	}
	return err
}

// Reload re-reads the token file, the TLS certificate, the client
// certificate for an https:// upstream and, with UpstreamFile, the upstream
// (on SIGHUP).
func (g *Gateway) Reload() error {
	err := errors.Join(g.reloadTokens(true), g.reloadUpstream())
	if g.certs != nil {
		err = errors.Join(err, g.certs.load())
	}
	if up := g.upstream.Load(); up != nil && up.cert != nil && g.o.UpstreamFile == "" {
		err = errors.Join(err, up.cert.load())
	}
	return err
}

// reloadUpstream sets the upstream from Options.Upstream or, when set, from
// the first line of UpstreamFile. The switch is atomic: requests already
// forwarded finish on the old upstream, new ones go to the new one. A file
// that does not name a valid upstream leaves the old one in force.
func (g *Gateway) reloadUpstream() error {
	raw := g.o.Upstream
	if g.o.UpstreamFile != "" {
		data, err := os.ReadFile(g.o.UpstreamFile)
		if err != nil {
			return fmt.Errorf("upstream file: %w", err)
		}
		raw, _, _ = strings.Cut(strings.TrimSpace(string(data)), "\n")
	} else if g.upstream.Load() != nil {
		return nil
	}
	up, err := newUpstream(raw, &g.o)
	if err != nil {
		return err
	}
	if old := g.upstream.Swap(up); old != nil && old.base != up.base && g.o.Log != nil {
		g.o.Log.Info("upstream switched", "from", old.base, "to", up.base)
	}
	return nil
}

// reloadTokens re-reads the token file when it changed (or always, when
// forced). A file that fails to parse leaves the old tokens in force.
func (g *Gateway) reloadTokens(force bool) error {
	g.tokensMu.Lock()
	defer g.tokensMu.Unlock()
	st, err := os.Stat(g.o.TokensFile)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("token file %s: mode %04o lets others read it; chmod 600 it", g.o.TokensFile, st.Mode().Perm())
	}
	if !force && g.tokensStat != nil && st.ModTime().Equal(g.tokensStat.ModTime()) && st.Size() == g.tokensStat.Size() && os.SameFile(st, g.tokensStat) {
		return nil
	}
	s, err := tokens.Load(g.o.TokensFile)
	if err != nil {
		return err
	}
	g.tokens.Store(s)
	g.tokensStat = st
	return nil
}

// Handler is the API handler, for tests and embedding.
func (g *Gateway) Handler() http.Handler { return http.HandlerFunc(g.serveAPI) }

// Serve answers the API on ln (TLS is added here when configured) and the
// metrics endpoints on mln (nil: none) until ctx ends, then shuts down
// gracefully.
func (g *Gateway) Serve(ctx context.Context, ln, mln net.Listener) error {
	srv := &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: g.o.ReadHeaderTimeout,
		ReadTimeout:       g.o.ReadTimeout,
		IdleTimeout:       g.o.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		// net/http answers "OPTIONS *" itself (200, no authentication, no
		// headers, no audit line) unless told not to.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(g.o.Log.Handler(), slog.LevelDebug),
	}
	if g.tls != nil {
		srv.TLSConfig = g.tls
		ln = tls.NewListener(ln, g.tls)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if mln != nil {
		msrv = &http.Server{Handler: g.metricsHandler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
	}
	go g.housekeeping(ctx)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		// Streams still running after the grace period are cut; their
		// handlers notice, cancel upstream and still write their audit lines.
		srv.Close()
	}
	if msrv != nil {
		err = errors.Join(err, msrv.Shutdown(sctx))
	}
	g.active.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// housekeeping picks up token file changes within a second (a revoked
// token stops working then; a new one works at once, see authenticate) and
// forgets idle rate buckets.
func (g *Gateway) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := g.reloadTokens(false); err != nil {
				g.o.Log.Warn("token file not reloaded; the previous tokens stay in force", "err", err)
			}
			if n%60 == 0 {
				g.failures.forget(float64(g.o.AuthFailures), now)
			}
		}
	}
}
