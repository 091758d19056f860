//go:build linux

package flock

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Holder returns the PID of the process holding a flock on the file at
// path, read from /proc/locks, so that a refused caller can name who holds
// it without the holder writing anything into the file. It returns 0 when
// none is found (released meanwhile, or held from another PID namespace).
func Holder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	return holderIn(data, uint64(st.Dev), st.Ino)
}

// holderIn finds the FLOCK line of /proc/locks for the file dev:ino, whose
// lines read "1: FLOCK  ADVISORY  WRITE 2917 08:01:131 0 EOF" (waiters are
// marked "->" and skipped).
func holderIn(data []byte, dev, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}
