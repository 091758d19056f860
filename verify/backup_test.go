package verify

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/harden"
)

var backupNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// backupRoot is an install root; schedule writes the units backup schedule
// writes (OnCalendar=calendar), and at, when not zero, the textfile a
// successful backup create rewrites.
func backupRoot(t *testing.T, calendar string, at time.Time) (*Target, string) {
	t.Helper()
	root := t.TempDir()
	outDir := filepath.Join(root, "backups")
	if calendar != "" {
		service, timer, err := backup.Units(backup.ScheduleOptions{Program: "/usr/local/bin/qwen-appliance",
			OutDir: outDir, Keep: 3, RecipientFile: "/etc/qwen-appliance/backup.recipients", OnCalendar: calendar})
		must(t, err)
		dir := filepath.Join(root, harden.UnitDir)
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.WriteFile(filepath.Join(dir, backup.ScheduleService), []byte(service), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, backup.ScheduleTimer), []byte(timer), 0o644))
	}
	if !at.IsZero() {
		writeBackupTextfile(t, root, at)
	}
	return &Target{Root: root, Now: func() time.Time { return backupNow }}, outDir
}

func writeBackupTextfile(t *testing.T, root string, at time.Time) {
	t.Helper()
	dir := filepath.Join(root, backup.DefaultTextfileDir)
	must(t, os.MkdirAll(dir, 0o755))
	body := fmt.Sprintf("# TYPE qwen_backup_last_success_timestamp_seconds gauge\nqwen_backup_last_success_timestamp_seconds %d\nqwen_backup_last_size_bytes 1234\n", at.Unix())
	must(t, os.WriteFile(filepath.Join(dir, backup.TextfileName), []byte(body), 0o644))
}

func TestBackupFreshnessPass(t *testing.T) {
	tg, _ := backupRoot(t, "daily", backupNow.Add(-20*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Pass, "2026-11-27T16:00:00Z")
}

func TestBackupFreshnessOld(t *testing.T) {
	tg, _ := backupRoot(t, "daily", backupNow.Add(-49*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Fail, "more than 48h0m0s")

	// The threshold follows the timer: hourly allows two hours.
	tg, _ = backupRoot(t, "hourly", backupNow.Add(-3*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Fail, "more than 2h0m0s")
	tg, _ = backupRoot(t, "weekly", backupNow.Add(-3*24*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Pass, "")

	// A record from the future hides staleness; it fails too.
	tg, _ = backupRoot(t, "daily", backupNow.Add(30*24*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Fail, "in the future")
}

func TestBackupFreshnessNever(t *testing.T) {
	tg, outDir := backupRoot(t, "daily", time.Time{})
	expect(t, runOne(t, "backup.freshness", tg), Fail, "none has succeeded")

	// Without a textfile, the newest backup in the scheduled --out-dir counts.
	must(t, os.MkdirAll(outDir, 0o700))
	must(t, os.WriteFile(filepath.Join(outDir, backup.Name(backupNow.Add(-5*time.Hour))), []byte("x"), 0o600))
	must(t, os.WriteFile(filepath.Join(outDir, "qwen-backup-garbage.age"), []byte("x"), 0o600))
	expect(t, runOne(t, "backup.freshness", tg), Pass, "2026-11-28T07:00:00Z")
}

func TestBackupFreshnessNotApplicable(t *testing.T) {
	tg, _ := backupRoot(t, "", time.Time{})
	expect(t, runOne(t, "backup.freshness", tg), NotApplicable, "backup schedule")

	// A backup taken by hand, never scheduled, is still held to the default.
	writeBackupTextfile(t, tg.Root, backupNow.Add(-72*time.Hour))
	expect(t, runOne(t, "backup.freshness", tg), Fail, "more than 48h0m0s")
}

func TestBackupFreshnessBadTextfile(t *testing.T) {
	tg, _ := backupRoot(t, "daily", time.Time{})
	dir := filepath.Join(tg.Root, backup.DefaultTextfileDir)
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, backup.TextfileName), []byte("qwen_backup_last_success_timestamp_seconds yesterday\n"), 0o644))
	expect(t, runOne(t, "backup.freshness", tg), Error, "line 1")
}

func FuzzParseBackupTextfile(f *testing.F) {
	f.Add([]byte("# TYPE qwen_backup_last_success_timestamp_seconds gauge\nqwen_backup_last_success_timestamp_seconds 1764000000\n"))
	f.Add([]byte("qwen_backup_last_success_timestamp_seconds 1.7e9\n"))
	f.Add([]byte("qwen_backup_last_success_timestamp_seconds\n"))
	f.Add([]byte("qwen_backup_last_success_timestamp_seconds -1\nqwen_backup_last_success_timestamp_seconds NaN"))
	f.Add([]byte("qwen_backup_last_success_timestamp_seconds NaN"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		at, ok, err := parseBackupTextfile(data)
		if err != nil && ok {
			t.Fatalf("error %v with a value", err)
		}
		if ok && (at.Before(time.Unix(0, 0)) || at.Unix() > 1<<40) {
			t.Fatalf("out-of-range time %v", at)
		}
	})
}

func FuzzUnitValue(f *testing.F) {
	_, timer, _ := backup.Units(backup.ScheduleOptions{Program: "/p", OutDir: "/o", Keep: 1, RecipientFile: "/r"})
	f.Add([]byte(timer), "OnCalendar")
	f.Add([]byte("ExecStart=/p backup create --out-dir\n"), "ExecStart")
	f.Fuzz(func(t *testing.T, unit []byte, key string) {
		v := unitValue(unit, key)
		_ = execFlag(v, "--out-dir")
		_ = backupMaxAge(v)
	})
}
