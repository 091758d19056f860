//go:build linux

package runtime

import (
	"errors"
	"os/exec"
	"syscall"

	procfs "github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// setProcessGroup puts cmd in a process group of its own, so that stopping
// it reaches every process it starts (Ollama's runner, vLLM's workers), and
// has the kernel kill it if this process dies first.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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
