// Package fetch downloads the files of a bundle: over HTTP(S) with range
// resume, retries with backoff and hashing while the bytes arrive; from the
// Hugging Face hub (revision resolution, advertised LFS SHA-256s, git blob
// IDs); from local files; and from every other scheme go-getter knows.
//
// It must never report success for bytes that differ from the pin it was
// given, never read a downloaded file a second time to hash it (only a
// partial file kept from an earlier, interrupted run is re-read, once, to
// restore the hash state), and never send a token to a host other than the
// one it was meant for.
package fetch
