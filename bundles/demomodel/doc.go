// Package demomodel generates the project's tiny demonstration model: a valid
// GGUF v3 file of the qwen2 architecture with two blocks, a byte-level vocabulary
// and random weights from a fixed seed, so that bundling and serving run for
// real on any machine, without network and without downloading a model.
//
// The same program always writes the same bytes. The text the model produces is
// noise; tokenization, loading and generation in a real inference server are not.
// The package must never read anything from outside the process.
package demomodel
