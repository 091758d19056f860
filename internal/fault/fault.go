// Package fault lets the crash-recovery and cleanup tests stop a multi-step
// operation (install, restore) at a named step: killed as a power cut
// would, or failing with an error. It does so only in binaries built with
// the faultinject build tag, which the tests use; a production build
// ignores the environment, so no variable can make it kill itself.
package fault

// KillEnv names a step after which the operation kills itself with
// SIGKILL (faultinject builds only).
const KillEnv = "QWA_FAULT_AFTER"

// FailEnv names a step after which the operation fails with an error, so
// that its undo runs (faultinject builds only).
const FailEnv = "QWA_FAIL_AFTER"

// Injected is the error After returns for FailEnv.
type Injected struct{ Step string }

func (e *Injected) Error() string {
	return "fault injected after step " + e.Step + " (" + FailEnv + "=" + e.Step + ")"
}
