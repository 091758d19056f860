//go:build linux

package runtime

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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
func GroupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state ppid pgrp …
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
