// Package archtest holds the project's import rules (which package may import
// which, see docs/ARCHITECTURE.md) and the checker that enforces them on the
// graph `go list -json` reports; its test fails the build on a forbidden
// import. It is imported by tests only and must never end up in the binary.
package archtest
