// Package backup makes, checks and restores one encrypted archive holding
// everything needed to rebuild an appliance from its signed bundle:
// configuration and install state, tokens, the TLS CA and keys, the audit
// key, the audit log up to a recorded chain head, store metadata and the
// bundle's manifest (the weights only when asked).
//
// The archive is standard age (X25519 or hybrid post-quantum recipients)
// around a POSIX tar; its last two members are a manifest listing every
// member's SHA-256 and an ed25519 signature over it (package manifests).
// Nothing is trusted, and nothing is written outside a private scratch
// directory, until the signature and every hash check.
//
// It must never write the decryption identity into or next to an archive,
// and never stop or pause the serving gateway while taking a backup.
package backup
