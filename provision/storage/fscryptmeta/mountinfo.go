package fscryptmeta

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Path     string // where it is mounted
	Subtree  string // the directory of the filesystem mounted there
	Device   string // major:minor
	FSType   string
	ReadOnly bool
}

// parseMountInfo reads /proc/PID/mountinfo (proc(5)). Malformed lines are
// skipped, as fscrypt skips them; a later line for the same mount point
// replaces an earlier one.
func parseMountInfo(r io.Reader) ([]mountEntry, error) {
	var mounts []mountEntry
	at := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountInfoLine(sc.Text())
		if !ok {
			continue
		}
		if i, seen := at[m.Path]; seen {
			mounts[i] = m
			continue
		}
		at[m.Path] = len(mounts)
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// parseMountInfoLine reads "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
func parseMountInfoLine(line string) (mountEntry, bool) {
	f := strings.Split(line, " ")
	if len(f) < 10 {
		return mountEntry{}, false
	}
	sep := 6
	for sep < len(f) && f[sep] != "-" {
		sep++
	}
	if sep+3 >= len(f) {
		return mountEntry{}, false
	}
	var major, minor uint32
	if n, err := fmt.Sscanf(f[2], "%d:%d", &major, &minor); n != 2 || err != nil {
		return mountEntry{}, false
	}
	m := mountEntry{Device: fmt.Sprintf("%d:%d", major, minor), Subtree: unescape(f[3]), Path: unescape(f[4]), FSType: unescape(f[sep+1])}
	for _, o := range strings.Split(f[5], ",") {
		if o == "ro" {
			m.ReadOnly = true
		}
	}
	return m, true
}

// unescape undoes the kernel's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mainMount picks, among the mounts of one filesystem, the one whose root
// holds fscrypt's metadata directory, by fscrypt's rule
// (filesystem/mountpoint.go, findMainMount): the top of a tree of mount
// points whose mounted subtrees contain every other mounted subtree,
// preferring a read-write mount. It returns an error where fscrypt would
// find none, or where its choice would depend on map order (two such
// mounts, both read-write or both read-only).
func mainMount(mounts []mountEntry) (mountEntry, error) {
	if len(mounts) == 0 {
		return mountEntry{}, fmt.Errorf("no mounts")
	}
	byPath := map[string]int{}
	subtrees := map[string]bool{}
	for i, m := range mounts {
		byPath[m.Path] = i
		subtrees[m.Subtree] = true
	}
	// parent[i] is the nearest mount above mount i's mount point.
	parent := make([]int, len(mounts))
	children := make([][]int, len(mounts))
	for i, m := range mounts {
		parent[i] = -1
		for p := m.Path; p != "/" && p != "."; {
			p = filepath.Dir(p)
			if j, ok := byPath[p]; ok && j != i {
				parent[i] = j
				children[j] = append(children[j], i)
				break
			}
		}
	}
	uncontained := map[string]bool{}
	for s := range subtrees {
		contained := false
		for t := s; t != "/" && t != "." && !contained; {
			t = filepath.Dir(t)
			contained = subtrees[t]
		}
		if !contained {
			uncontained[s] = true
		}
	}
	var covered func(i int, dst map[string]bool)
	covered = func(i int, dst map[string]bool) {
		if uncontained[mounts[i].Subtree] {
			dst[mounts[i].Subtree] = true
		}
		for _, c := range children[i] {
			covered(c, dst)
		}
	}
	var found []mountEntry
	for i := range mounts {
		if parent[i] != -1 {
			continue
		}
		c := map[string]bool{}
		covered(i, c)
		if len(c) == len(uncontained) {
			found = append(found, mounts[i])
		}
	}
	if len(found) == 0 {
		return mountEntry{}, fmt.Errorf("device %s has several non-overlapping mounts, so fscrypt has no main mount for it", mounts[0].Device)
	}
	for _, m := range found[1:] {
		if m.Subtree != found[0].Subtree {
			return mountEntry{}, fmt.Errorf("device %s has several non-overlapping mounts, so fscrypt has no main mount for it", mounts[0].Device)
		}
	}
	var rw []mountEntry
	for _, m := range found {
		if !m.ReadOnly {
			rw = append(rw, m)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(rw) == 1:
		return rw[0], nil
	}
	return mountEntry{}, fmt.Errorf("device %s is mounted at both %s and %s; fscrypt's choice between them is not stable", mounts[0].Device, found[0].Path, found[1].Path)
}
