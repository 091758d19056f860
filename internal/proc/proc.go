//go:build linux

package proc

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procRoot is where this package reads process facts from.
const procRoot = "/proc"

// Read returns the stat line of pid, parsed. A process that does not exist
// gives an error matching os.ErrNotExist.
func Read(pid int) (Stat, error) {
	if pid <= 0 {
		return Stat{}, fmt.Errorf("pid %d: %w", pid, os.ErrNotExist)
	}
	data, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	s, err := ParseStat(data)
	if err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return s, nil
}

// Alive reports whether pid is a running (not zombie) process.
func Alive(pid int) bool {
	s, err := Read(pid)
	return err == nil && !s.Zombie()
}

// All lists the stat of every process in /proc, skipping those that exit
// while it reads.
func All() []Stat {
	entries, _ := os.ReadDir(procRoot)
	var out []Stat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, err := Read(pid); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// Descendants lists the processes below pid (children, grandchildren …),
// sorted.
func Descendants(pid int) []int {
	children := map[int][]int{}
	for _, s := range All() {
		children[s.PPID] = append(children[s.PPID], s.PID)
	}
	var out []int
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = append(queue[1:], children[p]...)
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// GroupMembers lists the live (not zombie) processes in process group pgid.
func GroupMembers(pgid int) []int {
	var out []int
	for _, s := range All() {
		if s.PGRP == pgid && !s.Zombie() {
			out = append(out, s.PID)
		}
	}
	return out
}

// BootID is this boot's random id (/proc/sys/kernel/random/boot_id); it
// changes at every boot, so a start time recorded before a power loss never
// matches a process after it.
func BootID() (string, error) {
	data, err := os.ReadFile(procRoot + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// Identify reads the identity of the live process pid.
func Identify(pid int) (Identity, error) {
	s, err := Read(pid)
	if err != nil {
		return Identity{}, err
	}
	boot, err := BootID()
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: s.Start, Boot: boot}, nil
}

// Check proves that the process now holding id.PID is the one recorded: same
// boot, same start time, not a zombie. It returns nil when it is, an error
// matching ErrGone when nothing (or a zombie) holds the PID, and a
// *Mismatch when another process does, or when id lacks the start time
// or boot id needed to tell (a record from an older version).
func (id Identity) Check() error {
	s, err := Read(id.PID)
	if err != nil || s.Zombie() {
		return fmt.Errorf("pid %d: %w", id.PID, ErrGone)
	}
	if id.Start == 0 || id.Boot == "" {
		return &Mismatch{ID: id, Reason: "no start time or boot id was recorded, so it cannot be told apart from a later process"}
	}
	boot, err := BootID()
	if err != nil {
		return &Mismatch{ID: id, Reason: "boot id unreadable: " + err.Error()}
	}
	if boot != id.Boot {
		return &Mismatch{ID: id, Reason: "recorded in an earlier boot"}
	}
	if s.Start != id.Start {
		return &Mismatch{ID: id, Reason: fmt.Sprintf("it started at tick %d, the recorded one at %d", s.Start, id.Start)}
	}
	return nil
}

// Ours reports whether id is still the live process it names.
func (id Identity) Ours() bool { return id.Check() == nil }

// Signal sends sig to id's process after checking its identity. A process
// that is gone is not an error; one that is not ours is a *Mismatch. The
// process is pinned with a pidfd before the check, so it cannot exit and
// hand its PID to another between the check and the signal.
func (id Identity) Signal(sig syscall.Signal) error {
	fd, perr := unix.PidfdOpen(id.PID, 0)
	if perr == nil {
		defer unix.Close(fd)
	}
	if err := id.Check(); err != nil {
		if errors.Is(err, ErrGone) {
			return nil
		}
		return err
	}
	var err error
	if perr == nil {
		err = unix.PidfdSendSignal(fd, sig, nil, 0)
	} else {
		err = syscall.Kill(id.PID, sig) // kernels before 5.3
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", id.PID, err)
	}
	return nil
}

// Stop ends the process id names and every process below it, after checking
// its identity: SIGTERM to its process group (a service started in a session
// of its own leads one, and its workers are in it), then SIGKILL to every
// process of the tree still alive after grace, and to the groups they lead. It returns nil when the
// process was already gone, a *Mismatch (signalling nothing) when another
// process holds the PID, and an error when something survives SIGKILL.
func Stop(id Identity, grace time.Duration) error {
	if err := id.Check(); err != nil {
		if errors.Is(err, ErrGone) {
			return nil
		}
		return err
	}
	// Taken before signalling: once a parent dies its children are
	// re-parented and can no longer be found from it. Each is identified
	// now, so a PID reused during the grace period is left alone.
	tree := []Identity{id}
	for _, p := range Descendants(id.PID) {
		if d, err := Identify(p); err == nil {
			tree = append(tree, d)
		}
	}
	// SIGTERM to the group only: a supervisor in it stops its own
	// children gracefully, and must not see them die under it first.
	if isGroupLeader(id.PID) {
		if err := syscall.Kill(-id.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop pid %d: %w", id.PID, err)
		}
	} else if err := id.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyOurs(tree) {
		time.Sleep(50 * time.Millisecond)
	}
	// Whatever is left, and the groups its members lead (the runtime's
	// server runs in a group of its own).
	for _, p := range tree {
		if p.Ours() && isGroupLeader(p.PID) {
			syscall.Kill(-p.PID, syscall.SIGKILL)
		}
		p.Signal(syscall.SIGKILL)
	}
	for range 100 {
		if !anyOurs(tree) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("stop pid %d: still running after SIGKILL", id.PID)
}

func isGroupLeader(pid int) bool {
	s, err := Read(pid)
	return err == nil && s.PGRP == pid
}

func anyOurs(ids []Identity) bool {
	for _, id := range ids {
		if id.Ours() {
			return true
		}
	}
	return false
}
