//go:build linux

package verify

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BPF_PROG_QUERY and the cgroup attach types systemd's IPAddressDeny= uses.
const (
	bpfProgQuery       = 16
	bpfCgroupIngress   = 0
	bpfCgroupEgress    = 1
	bpfQueryEffective  = 1 << 0
	bpfQueryAttrLength = 40
)

// ipFilterPrograms counts the BPF programs that filter IP traffic into and
// out of pid's cgroup (cgroup v2), ancestors' included. systemd implements
// IPAddressAllow=/IPAddressDeny= with such programs, and runs a unit without
// them, saying so only at debug level, where the kernel or a container
// refuses bpf(2): zero means the unit's IP filter is not in force.
func ipFilterPrograms(pid int) (ingress, egress int, err error) {
	dir, err := cgroupDir(pid)
	if err != nil {
		return 0, 0, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	defer unix.Close(fd)
	count := func(attachType uint32) (int, error) {
		var attr [bpfQueryAttrLength]byte
		*(*uint32)(unsafe.Pointer(&attr[0])) = uint32(fd)
		*(*uint32)(unsafe.Pointer(&attr[4])) = attachType
		*(*uint32)(unsafe.Pointer(&attr[8])) = bpfQueryEffective
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgQuery, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
		if errno != 0 {
			return 0, fmt.Errorf("bpf(BPF_PROG_QUERY) on %s: %w", dir, errno)
		}
		return int(*(*uint32)(unsafe.Pointer(&attr[24]))), nil // prog_cnt
	}
	if ingress, err = count(bpfCgroupIngress); err != nil {
		return 0, 0, err
	}
	egress, err = count(bpfCgroupEgress)
	return ingress, egress, err
}

// cgroupDir is pid's cgroup v2 directory: its "0::" line in
// /proc/PID/cgroup under where cgroup2 is mounted (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on a hybrid host).
func cgroupDir(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	var rel string
	for _, l := range strings.Split(string(data), "\n") {
		if r, ok := strings.CutPrefix(l, "0::"); ok {
			rel = r
		}
	}
	if rel == "" {
		return "", fmt.Errorf("process %d is in no cgroup v2 group", pid)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(fields) >= 5 {
			return filepath.Join(fields[4], rel), nil
		}
	}
	return "", fmt.Errorf("no cgroup2 file system is mounted")
}
