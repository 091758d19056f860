// Package gateway is the only door to the model: an OpenAI-compatible
// reverse proxy that authenticates every request with an API token, forwards
// only the API routes users need to the inference server on loopback or a
// Unix socket, enforces per-token limits, writes a tamper-evident audit
// record for every request, terminates TLS, and exposes metrics on a
// separate listener.
//
// It must never forward a route outside its allowlist, forward the client's
// request bytes (only its own encoding of the values it checked), send a
// request upstream twice when the first may have arrived, pass the client's
// token upstream, answer with the upstream's internals (stack traces, paths),
// or write prompt or completion text to the audit log unless told to.
package gateway
