package backup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)
	var all []string
	for i := 0; i < 5; i++ {
		n := Name(t0.AddDate(0, 0, i))
		all = append(all, n)
		must(t, os.WriteFile(filepath.Join(dir, n), nil, 0o600))
	}
	// Not ours: never removed.
	for _, n := range []string{"notes.txt", "qwen-backup-latest.age", "qwen-backup-20260101T000000Z.age.partial-1"} {
		must(t, os.WriteFile(filepath.Join(dir, n), nil, 0o600))
	}
	removed, err := Prune(dir, 2)
	must(t, err)
	if len(removed) != 3 || filepath.Base(removed[0]) != all[0] || filepath.Base(removed[2]) != all[2] {
		t.Errorf("removed %v", removed)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "notes.txt qwen-backup-20260101T000000Z.age.partial-1 qwen-backup-20261104T030000Z.age qwen-backup-20261105T030000Z.age qwen-backup-latest.age" {
		t.Errorf("left %v", left)
	}
	if _, err := Prune(dir, 0); err == nil {
		t.Error("keep 0 accepted")
	}
}

func TestUnits(t *testing.T) {
	o := ScheduleOptions{Program: "/usr/bin/true", OutDir: "/srv/backup", Keep: 7, RecipientFile: "/etc/qwen-appliance/backup.recipients"}
	svc, timer, err := Units(o)
	must(t, err)
	if !strings.Contains(svc, "ExecStart=/usr/bin/true backup create --out-dir /srv/backup --keep 7 --recipient-file /etc/qwen-appliance/backup.recipients\n") {
		t.Errorf("service:\n%s", svc)
	}
	if !strings.Contains(timer, "OnCalendar=daily\n") || !strings.Contains(timer, "Persistent=yes") {
		t.Errorf("timer:\n%s", timer)
	}
	for _, bad := range []ScheduleOptions{
		{Program: "/usr/bin/true", OutDir: "relative", Keep: 1, RecipientFile: "/r"},
		{Program: "/usr/bin/true", OutDir: "/srv/b", Keep: 0, RecipientFile: "/r"},
		{Program: "/usr/bin/true", OutDir: "/srv/my backups", Keep: 1, RecipientFile: "/r"},
		{Program: "/usr/bin/true", OutDir: "/srv/b", Keep: 1},
	} {
		if _, _, err := Units(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, ScheduleService), []byte(svc), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ScheduleTimer), []byte(timer), 0o644))
	cmd := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, ScheduleService), filepath.Join(dir, ScheduleTimer))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
