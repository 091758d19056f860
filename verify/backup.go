package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/backup/layout"
	"github.com/qwen-appliance/qwen-appliance/harden"
)

// DefaultBackupMaxAge is how old the last successful backup may be when the
// schedule does not say otherwise: two days, so that one missed daily run is
// tolerated and the second is not.
const DefaultBackupMaxAge = 48 * time.Hour

func init() {
	register(Check{
		ID: "backup.freshness", Title: "the last successful backup is recent",
		Severity: High, Controls: []string{"CP-9", "CP-10"},
		Rationale:   "Audit log, tokens, CA and keys live on one disk; a backup that silently stopped succeeding is found out only when the disk is lost and nothing recent can be restored.",
		Remediation: "Find out why the timer's runs fail ('journalctl -u " + layout.ScheduleService + "'), fix it and run 'systemctl start " + layout.ScheduleService + "' (or 'qwen-appliance backup create --out-dir D --recipient-file F') until one succeeds; then drill it with 'backup verify --drill'.",
		Run:         backupFreshness,
	})
}

// backupFreshness: the last success is read from the Prometheus textfile
// backup create rewrites (ROOT/var/lib/prometheus/node-exporter/
// qwen_backup.prom) and from the newest qwen-backup-TIMESTAMP.age in the
// scheduled --out-dir; the allowed age is twice the timer's period for a
// named period (daily: 48 h, hourly: 2 h, weekly: 14 days), else
// DefaultBackupMaxAge.
func backupFreshness(_ context.Context, t *Target) Outcome {
	timerPath := filepath.Join(t.Root, harden.UnitDir, layout.ScheduleTimer)
	servicePath := filepath.Join(t.Root, harden.UnitDir, layout.ScheduleService)
	textfile := filepath.Join(t.Root, layout.DefaultTextfileDir, layout.TextfileName)

	timer, scheduled, err := readOptional(timerPath)
	if err != nil {
		return errored(err)
	}
	service, _, err := readOptional(servicePath)
	if err != nil {
		return errored(err)
	}
	metrics, recorded, err := readOptional(textfile)
	if err != nil {
		return errored(err)
	}
	if !scheduled && !recorded {
		return notApplicable("no backup is scheduled (" + timerPath + " is missing) and none was recorded; schedule one with 'qwen-appliance backup schedule --out-dir D --keep N --recipient-file F'")
	}

	maxAge, calendar := DefaultBackupMaxAge, ""
	var evs []Evidence
	if scheduled {
		calendar = unitValue(timer, "OnCalendar")
		maxAge = backupMaxAge(calendar)
		evs = append(evs, ev("schedule", "%s (OnCalendar=%s)", timerPath, calendar))
	}
	evs = append(evs, ev("max age", "%s", maxAge))

	var last time.Time
	if recorded {
		at, ok, err := parseBackupTextfile(metrics)
		if err != nil {
			return errored(fmt.Errorf("%s: %w", textfile, err), evs...)
		}
		if ok {
			last = at
			evs = append(evs, ev("textfile", "%s", textfile))
		}
	}
	if dir := execFlag(unitValue(service, "ExecStart"), "--out-dir"); dir != "" {
		if at, name, err := newestBackup(dir); err != nil {
			evs = append(evs, ev("out dir", "%s: %v", dir, err))
		} else if name != "" {
			evs = append(evs, ev("newest backup", "%s", filepath.Join(dir, name)))
			if at.After(last) {
				last = at
			}
		}
	}
	if last.IsZero() {
		return fail("a backup is scheduled but none has succeeded", evs...)
	}
	age := t.now().Sub(last)
	if age < -time.Hour {
		return fail("the last backup's time "+last.UTC().Format(time.RFC3339)+" is in the future: a wrong clock, or a forged record", evs...)
	}
	evs = append(evs, ev("last backup", "%s (%s ago)", last.UTC().Format(time.RFC3339), age.Round(time.Minute)))
	if age > maxAge {
		return fail(fmt.Sprintf("the last successful backup is %s old, more than %s", age.Round(time.Minute), maxAge), evs...)
	}
	return pass("last successful backup "+last.UTC().Format(time.RFC3339), evs...)
}

// readOptional reads a file that may be missing; ok says it exists.
func readOptional(p string) (data []byte, ok bool, err error) {
	data, err = os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	return data, err == nil, err
}

// unitValue is the last value of key in a systemd unit file ("" if none).
func unitValue(unit []byte, key string) string {
	var v string
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		k, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.TrimSpace(k) == key {
			v = strings.TrimSpace(val)
		}
	}
	return v
}

// execFlag is the value after flag in a command line ("" if absent).
func execFlag(cmdline, flag string) string {
	f := strings.Fields(cmdline)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}

// backupMaxAge is twice the period of a systemd named calendar period,
// else DefaultBackupMaxAge.
func backupMaxAge(onCalendar string) time.Duration {
	period := map[string]time.Duration{
		"minutely": time.Minute, "hourly": time.Hour, "daily": 24 * time.Hour,
		"weekly": 7 * 24 * time.Hour, "monthly": 31 * 24 * time.Hour,
		"quarterly": 92 * 24 * time.Hour, "semiannually": 184 * 24 * time.Hour,
		"yearly": 366 * 24 * time.Hour, "annually": 366 * 24 * time.Hour,
	}[strings.ToLower(onCalendar)]
	if period == 0 {
		return DefaultBackupMaxAge
	}
	return 2 * period
}

// parseBackupTextfile returns the qwen_backup_last_success_timestamp_seconds
// sample of a Prometheus textfile; ok is false when it holds none.
func parseBackupTextfile(data []byte) (at time.Time, ok bool, err error) {
	const name = "qwen_backup_last_success_timestamp_seconds"
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || f[0] != name {
			continue
		}
		if len(f) < 2 {
			return time.Time{}, false, fmt.Errorf("line %d: %s without a value", i+1, name)
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil || !(v >= 0 && v <= 1<<40) { // NaN too
			return time.Time{}, false, fmt.Errorf("line %d: %s: bad value %q", i+1, name, f[1])
		}
		at, ok = time.Unix(int64(v), 0).UTC(), true
	}
	return at, ok, nil
}

// newestBackup is the time in the name of the newest backup in dir named
// as backup create --out-dir names them; name is "" when there is none.
func newestBackup(dir string) (at time.Time, name string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return time.Time{}, "", err
	}
	for _, e := range ents {
		stamp, ok := strings.CutPrefix(e.Name(), layout.ArchivePrefix)
		stamp, ok2 := strings.CutSuffix(stamp, layout.ArchiveSuffix)
		if !ok || !ok2 || !e.Type().IsRegular() {
			continue
		}
		t, err := time.Parse("20060102T150405Z", stamp)
		if err == nil && t.After(at) {
			at, name = t, e.Name()
		}
	}
	return at, name, nil
}
