//go:build linux

package runtime

import (
	"errors"
	"os/exec"
	"syscall"

	procfs "github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// setProcessGroup puts cmd in a process group of its own, so that stopping
// it reaches every process it starts (Ollama's runner, vLLM's workers).
// Unguarded, the kernel kills it if the thread that started it dies first
// (its own children are not reached: see Guard). A guard gets no
// parent-death signal: it must outlive this process to stop its group, and
// learns of the death from its lifeline.
func setProcessGroup(cmd *exec.Cmd, guarded bool) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !guarded {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
}

// signalGroup sends sig to every process in the group pgid.
func signalGroup(pgid int, sig syscall.Signal) error {
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// GroupMembers lists the live (not zombie) processes in process group pgid,
// read from /proc.
func GroupMembers(pgid int) []int { return procfs.GroupMembers(pgid) }
