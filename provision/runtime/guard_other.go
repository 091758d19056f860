//go:build !linux

package runtime

import (
	"fmt"
	"os"
)

// GuardArg is the hidden first argument that makes a program run Guard.
const GuardArg = "__runtime-guard"

// Guard is only implemented on Linux; elsewhere it refuses to run.
func Guard([]string) int {
	fmt.Fprintln(os.Stderr, "qwen-appliance: guard: only available on Linux")
	return 2
}
