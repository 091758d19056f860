//go:build faultinject

package fault

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Enabled reports whether this binary was built with fault injection.
const Enabled = true

// After marks the end of step of op ("install", "restore"). When KillEnv
// names the step, the process kills itself with SIGKILL and never returns;
// when FailEnv names it, After returns an *Injected error. Either is
// logged to log first.
func After(log io.Writer, op, step string) error {
	if os.Getenv(KillEnv) == step {
		fmt.Fprintf(log, "qwen-appliance: %s: %s=%s: killing this %s (SIGKILL) to test crash recovery\n", op, KillEnv, step, op)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if os.Getenv(FailEnv) == step {
		fmt.Fprintf(log, "qwen-appliance: %s: %s=%s: failing this %s to test its cleanup\n", op, FailEnv, step, op)
		return &Injected{Step: step}
	}
	return nil
}
