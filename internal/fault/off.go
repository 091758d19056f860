//go:build !faultinject

package fault

import "io"

// Enabled reports whether this binary was built with fault injection.
const Enabled = false

// After does nothing: this binary was built without the faultinject tag,
// so KillEnv and FailEnv are ignored.
func After(log io.Writer, op, step string) error { return nil }
