package fscryptmeta

import (
	"strings"
	"testing"
)

// The cases are fscrypt's own (filesystem/mountpoint_test.go), so the mount
// chosen here is the one the tool looks in.
func TestMainMount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, path string // path "" means no main mount
	}{
		{"basic", `15 0 259:3 / / rw,relatime shared:1 - ext4 /dev/root rw,data=ordered`, "/"},
		{"read-only alone", `222 15 259:3 / /mnt ro,relatime shared:1 - ext4 /dev/root rw,data=ordered`, "/mnt"},
		{"read-write preferred", `222 15 259:3 / /home ro shared:1 - ext4 /dev/root rw
222 15 259:3 / /mnt rw shared:1 - ext4 /dev/root rw
222 15 259:3 / /tmp ro shared:1 - ext4 /dev/root rw`, "/mnt"},
		{"root subtree preferred", `222 15 259:3 /subtree1 /home rw shared:1 - ext4 /dev/root rw
222 15 259:3 / /mnt rw shared:1 - ext4 /dev/root rw
222 15 259:3 /subtree2 /tmp rw shared:1 - ext4 /dev/root rw`, "/mnt"},
		{"highest subtree preferred", `222 15 259:3 /foo/bar /mnt rw shared:1 - ext4 /dev/root rw
222 15 259:3 /foo /tmp rw shared:1 - ext4 /dev/root rw
222 15 259:3 /foo/baz /home rw shared:1 - ext4 /dev/root rw`, "/tmp"},
		{"root mount point preferred", `222 15 259:3 /var/cache/pacman/pkg /mnt rw shared:1 - ext4 /dev/root rw
222 15 259:3 /var/lib/lxc/base/rootfs / rw shared:1 - ext4 /dev/root rw
222 15 259:3 /srv/repo/x86_64 /home rw shared:1 - ext4 /dev/root rw`, "/"},
		{"highest mount point preferred", `222 15 259:3 /0 /t/a/b rw shared:1 - ext4 /dev/root rw
222 15 259:3 /1 /t/a rw shared:1 - ext4 /dev/root rw
222 15 259:3 /2 /t/a/c rw shared:1 - ext4 /dev/root rw`, "/t/a"},
		{"contained subtrees and mount points", `222 15 259:3 /0 /t/a/b rw shared:1 - ext4 /dev/root rw
222 15 259:3 /1 /t/a rw shared:1 - ext4 /dev/root rw
222 15 259:3 /2 /t/a/c rw shared:1 - ext4 /dev/root rw
222 15 259:3 /1/3 /t/d rw shared:1 - ext4 /dev/root rw
222 15 259:3 /2/4 /t/e rw shared:1 - ext4 /dev/root rw`, "/t/a"},
		{"ambiguous subtrees", `222 15 259:3 /foo /mnt rw shared:1 - ext4 /dev/root rw
222 15 259:3 /bar /tmp rw shared:1 - ext4 /dev/root rw`, ""},
		// fscrypt would pick either by map order: refused here.
		{"two read-write mounts", `222 15 259:3 / /a rw shared:1 - ext4 /dev/root rw
222 15 259:3 / /b rw shared:1 - ext4 /dev/root rw`, ""},
	} {
		mounts, err := parseMountInfo(strings.NewReader(tc.mountinfo))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mainMount(mounts)
		switch {
		case tc.path == "" && err == nil:
			t.Errorf("%s: chose %s, want none", tc.name, m.Path)
		case tc.path != "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.path != "" && m.Path != tc.path:
			t.Errorf("%s: chose %s, want %s", tc.name, m.Path, tc.path)
		}
	}
}

func TestParseMountInfo(t *testing.T) {
	in := `15 0 259:3 / / rw shared:1 - ext4 /dev/root rw
15 0 259:3 / / rw shared:1 - f2fs /dev/root rw
36 25 7:2 / /tmp/My\040Dir\011\012\134 rw,nosuid shared:9 master:1 - ext4 /dev/loop2 rw
a
15 0 259:3 / / rw shared:1 ext4 /dev/root rw
15 0 259:3 / / rw shared:1 - ext4
15 0 x:y / /z rw shared:1 - ext4 /dev/root rw
`
	mounts, err := parseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 2 {
		t.Fatalf("mounts = %+v, want 2", mounts)
	}
	if mounts[0].FSType != "f2fs" {
		t.Errorf("a later line for / did not replace the earlier one: %+v", mounts[0])
	}
	want := mountEntry{Path: "/tmp/My Dir\t\n\\", Subtree: "/", Device: "7:2", FSType: "ext4"}
	if mounts[1] != want {
		t.Errorf("mount = %+v, want %+v", mounts[1], want)
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add("15 0 259:3 / / rw,relatime shared:1 - ext4 /dev/root rw\n222 15 259:3 /a /mnt ro - ext4 x rw\n")
	f.Add(`36 25 7:2 / /tmp/My\040Dir rw shared:9 master:1 - ext4 /dev/loop2 rw`)
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := parseMountInfo(strings.NewReader(s))
		if err != nil {
			return
		}
		byDev := map[string][]mountEntry{}
		for _, m := range mounts {
			byDev[m.Device] = append(byDev[m.Device], m)
		}
		for _, ms := range byDev {
			if m, err := mainMount(ms); err == nil && m.Device == "" {
				t.Fatalf("main mount without a device: %+v", m)
			}
		}
	})
}
