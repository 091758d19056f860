package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series. Token IDs (never names or
// secrets) label per-token series; their number is bounded by the token file.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	ttft        *prometheus.HistogramVec
	tokens      *prometheus.CounterVec
	tokenRate   *prometheus.HistogramVec
	upstreamErr *prometheus.CounterVec
	authFail    *prometheus.CounterVec
	limited     *prometheus.CounterVec
	inflight    prometheus.Gauge

	// Knowledge-base answers (see kb.go).
	kbQueries   *prometheus.CounterVec // by role and outcome: answered, not_found, error
	kbRetrieval prometheus.Histogram   // retrieval and prompt building, before the upstream
	kbContext   prometheus.Histogram   // estimated tokens of context given to the model
	kbDecisions *prometheus.CounterVec // how the context budget went

	// The series of each label set, looked up once: WithLabelValues
	// hashes its labels and takes a lock on every call. Series are never
	// deleted, so neither are these.
	requestSeries sync.Map // requestKey → prometheus.Counter
	routeSeries   sync.Map // route → *routeObservers
}

type requestKey struct {
	route, token string
	status       int
}

type routeObservers struct{ latency, ttft, tokenRate prometheus.Observer }

func (m *metrics) requestCounter(k requestKey) prometheus.Counter {
	if c, ok := m.requestSeries.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.requests.WithLabelValues(k.route, strconv.Itoa(k.status), k.token)
	m.requestSeries.Store(k, c)
	return c
}

func (m *metrics) route(route string) *routeObservers {
	if o, ok := m.routeSeries.Load(route); ok {
		return o.(*routeObservers)
	}
	o := &routeObservers{m.latency.WithLabelValues(route), m.ttft.WithLabelValues(route), m.tokenRate.WithLabelValues(route)}
	m.routeSeries.Store(route, o)
	return o
}

func newMetrics() *metrics {
	const ns = "qwen_gateway"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "Requests answered, by route, HTTP status and token ID."}, []string{"route", "status", "token"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help: "Time from request to the end of the answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}, []string{"route"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "time_to_first_token_seconds",
			Help: "Time from request to the first byte of the upstream's answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}, []string{"route"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "tokens_total",
			Help: "Prompt and completion tokens, from the upstream's usage figures.", ConstLabels: nil}, []string{"token", "kind"}),
		tokenRate: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "completion_tokens_per_second",
			Help: "Completion tokens per second of each answer after its first token.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}, []string{"route"}),
		upstreamErr: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "upstream_errors_total",
			Help: "Upstream failures: connect, timeout, status (5xx)."}, []string{"reason"}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total",
			Help: "Rejected tokens by reason: missing, malformed, unknown, revoked, expired, throttled."}, []string{"reason"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total",
			Help: "Requests answered 429/503 by a limit: rpm, tpm, concurrency."}, []string{"token", "limit"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "inflight_requests",
			Help: "Requests being forwarded now."}),
	}
	m.kbQueries = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kb_queries_total",
		Help: "Knowledge-base questions by token role and outcome: answered (the model was called), not_found (answered without it), error."}, []string{"role", "outcome"})
	m.kbRetrieval = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "kb_retrieval_seconds",
		Help: "Time to retrieve the readable chunks and build the prompt, before the upstream is asked.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	m.kbContext = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "kb_context_tokens",
		Help: "Estimated tokens of knowledge-base context given to the model per question (0: not found).", Buckets: prometheus.ExponentialBuckets(64, 2, 10)})
	m.kbDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kb_context_decisions_total",
		Help: "How each question's context budget went: fit, trimmed (chunks left out), no_room, none (nothing relevant)."}, []string{"decision"})
	m.reg.MustRegister(m.kbQueries, m.kbRetrieval, m.kbContext, m.kbDecisions)
	m.reg.MustRegister(m.requests, m.latency, m.ttft, m.tokens, m.tokenRate, m.upstreamErr, m.authFail, m.limited, m.inflight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one finished request.
func (m *metrics) observe(ex *exchange) {
	tok := ex.tokenID
	if tok == "" {
		tok = "none"
	}
	m.requestCounter(requestKey{ex.route, tok, ex.status}).Inc()
	rt := m.route(ex.route)
	rt.latency.Observe(ex.latency.Seconds())
	if ex.ttft > 0 {
		rt.ttft.Observe(ex.ttft.Seconds())
	}
	if ex.promptTokens > 0 {
		m.tokens.WithLabelValues(tok, "prompt").Add(float64(ex.promptTokens))
	}
	if ex.completionTokens > 0 {
		m.tokens.WithLabelValues(tok, "completion").Add(float64(ex.completionTokens))
		if gen := ex.latency - ex.ttft; ex.ttft > 0 && gen > time.Millisecond {
			rt.tokenRate.Observe(float64(ex.completionTokens) / gen.Seconds())
		}
	}
}

// metricsHandler serves /metrics, /healthz and /readyz.
func (g *Gateway) metricsHandler() http.Handler {
	g.registerHealth()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := g.audit.Err(); err != nil {
			http.Error(w, "audit log failing", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if n, err := g.upstreamModels(ctx); err != nil || n == 0 {
			http.Error(w, "upstream has no model loaded", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// upstreamModels asks the upstream how many models it serves.
func (g *Gateway) upstreamModels(ctx context.Context) (int, error) {
	up := g.upstream.Load()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, up.url("/v1/models"), nil)
	if err != nil {
		return 0, err
	}
	resp, err := up.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&list); err != nil {
		return 0, err
	}
	return len(list.Data), nil
}
