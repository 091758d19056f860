// Package runtime starts the bundled inference server (vLLM, a llama.cpp
// server or Ollama) offline, listening on the loopback interface only, and
// proves it answers before anyone is told it works.
//
// An Adapter knows one server: where its artefacts sit in a bundle, the argv
// and environment that keep it on localhost with telemetry off, its health,
// models and metrics endpoints, and what it needs after it starts (Ollama
// imports the model from the bundle's GGUF). Start supervises a server in the
// foreground with bounded restarts; Unit renders the systemd unit for hosts
// where systemd is PID 1.
//
// This package must never start a server that listens beyond loopback, pass
// the caller's environment through to a server, or leave a server process
// running after a failed start or a Stop.
package runtime
