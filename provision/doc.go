// Package provision turns a signed bundle into a running appliance and back:
// install (verify → preflight → harden → encrypted store → copy-in → runtime
// → gateway → smoke test → state record), status and uninstall. Its
// sub-packages do each part: preflight (GPU and host), storage (the encrypted
// model store), runtime (the inference server) and state (the record).
//
// Install must never change the host before the bundle's signature and every
// byte are verified, and must undo what a failed attempt did.
package provision
