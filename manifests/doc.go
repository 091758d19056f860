// Package manifests defines what a bundle claims: the signed, pinned manifest
// (schema v2) that lists every file of a bundle with its size, mode, SHA-256
// and per-chunk proofs (SHA-256 chaining values, see FileHasher), together
// with the model facts, host requirements, runtime and provenance that later
// steps rely on.
//
// It hashes (streaming, parallel across files and chunks), signs with ed25519
// keys, and verifies signatures, expiry, rollback and every byte on disk.
//
// It must never trust a manifest's contents before its signature has been
// checked over the exact bytes on disk, never follow a symlink inside a bundle,
// and never hold a whole file in memory.
package manifests
