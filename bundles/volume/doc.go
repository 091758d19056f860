// Package volume cuts a bundle directory into tar volumes that fit the media
// carrying them across an air gap, with a signed index (each volume's size
// and SHA-256, each archive entry's path and size) and optional Reed-Solomon
// parity volumes; and it checks, rebuilds and unpacks them on the far side.
//
// The volumes are one tar stream cut at fixed sizes, so "cat *.vol*.tar | tar
// x" also works in an emergency; this package is the careful way: it checks
// every volume against the signed index before using it, names missing,
// corrupt, duplicated and out-of-order volumes, rebuilds up to the parity
// count of them, and streams with memory that does not grow with the bundle.
//
// It must never extract an entry that is not a regular file listed in the
// signed index with at most the listed size (no absolute paths, "..",
// symlinks, hard links or devices), never leave a half-written bundle at the
// output path, and never delete or modify the source volumes.
package volume
