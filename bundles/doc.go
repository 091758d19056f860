// Package bundles makes, packs and opens offline bundles: it reads bundle
// specs, fetches a model at a pinned revision and the runtime's artefacts
// (hashing while downloading), writes the signed manifest and the SBOM, cuts
// a bundle into signed, optionally Reed-Solomon-protected tar volumes and
// puts it back together on the far side of an air gap.
//
// It must never sign bytes whose hash differs from the pin the spec or the
// hub gave, never extract an archive entry that could escape the output
// directory or exceed what the signed index declares, never leave a
// half-written bundle where a complete one is expected, and never delete the
// operator's source volumes.
package bundles
