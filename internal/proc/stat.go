package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Stat is the part of /proc/PID/stat this project uses.
type Stat struct {
	PID   int
	Comm  string // the command name, as the kernel truncates it (may hold spaces and ")")
	State byte   // R, S, D, Z, X, T …
	PPID  int
	PGRP  int
	// Start is when the process started, in clock ticks after boot (field
	// 22). With the boot id it tells a process apart from a later one that
	// reuses its PID.
	Start uint64
}

// Zombie reports whether the process has exited and only waits to be reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// ErrMalformed is returned (wrapped) by ParseStat for a line that is not a
// /proc/PID/stat line.
var ErrMalformed = errors.New("malformed /proc stat line")

// ParseStat parses one /proc/PID/stat line. The command name (field 2) is
// taken between the first "(" and the last ")", since it may itself contain
// spaces and parentheses; the numeric fields are counted after it.
func ParseStat(data []byte) (Stat, error) {
	var s Stat
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 1 || end < open {
		return s, fmt.Errorf("%w: no (command name)", ErrMalformed)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil || pid <= 0 {
		return s, fmt.Errorf("%w: pid %q", ErrMalformed, bytes.TrimSpace(data[:open]))
	}
	s.PID, s.Comm = pid, string(data[open+1:end])
	// Fields 3 … after the name: state ppid pgrp session tty_nr tpgid
	// flags minflt cminflt majflt cmajflt utime stime cutime cstime
	// priority nice num_threads itrealvalue starttime …
	f := bytes.Fields(data[end+1:])
	if len(f) < 20 {
		return s, fmt.Errorf("%w: %d fields after the command name, want at least 20", ErrMalformed, len(f))
	}
	if len(f[0]) != 1 {
		return s, fmt.Errorf("%w: state %q", ErrMalformed, f[0])
	}
	s.State = f[0][0]
	if s.PPID, err = strconv.Atoi(string(f[1])); err != nil || s.PPID < 0 {
		return s, fmt.Errorf("%w: ppid %q", ErrMalformed, f[1])
	}
	if s.PGRP, err = strconv.Atoi(string(f[2])); err != nil || s.PGRP < 0 {
		return s, fmt.Errorf("%w: pgrp %q", ErrMalformed, f[2])
	}
	if s.Start, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return s, fmt.Errorf("%w: starttime %q", ErrMalformed, f[19])
	}
	return s, nil
}
