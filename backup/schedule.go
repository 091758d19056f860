package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/backup/layout"
	"github.com/qwen-appliance/qwen-appliance/internal/sdtimer"
)

// Names of the scheduled backup's systemd units (see package layout).
const (
	ScheduleService = layout.ScheduleService
	ScheduleTimer   = layout.ScheduleTimer
)

const namePrefix, nameSuffix = layout.ArchivePrefix, layout.ArchiveSuffix

// Name is the file name of a backup taken at t in an --out-dir: sortable,
// so that the newest is last.
func Name(t time.Time) string {
	return namePrefix + t.UTC().Format("20060102T150405Z") + nameSuffix
}

// Prune removes the oldest backups named by Name in dir beyond the newest
// keep, and returns the paths it removed. Other files are never touched.
func Prune(dir string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, errors.New("prune: keep at least one backup")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, namePrefix) && strings.HasSuffix(n, nameSuffix) {
			if _, err := time.Parse("20060102T150405Z", strings.TrimSuffix(strings.TrimPrefix(n, namePrefix), nameSuffix)); err == nil {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	var removed []string
	for len(names) > keep {
		p := filepath.Join(dir, names[0])
		if err := os.Remove(p); err != nil {
			return removed, fmt.Errorf("prune: %w", err)
		}
		removed, names = append(removed, p), names[1:]
	}
	return removed, nil
}

// ScheduleOptions describe a timer that runs backup create.
type ScheduleOptions struct {
	Program       string   // the program the unit runs (the installed copy)
	OutDir        string   // where backups go
	Keep          int      // how many to keep
	RecipientFile string   // age recipients
	Key           string   // signing key; the audit key when empty
	OnCalendar    string   // systemd calendar expression; "daily" when empty
	Extra         []string // further backup create flags (--include-model, --root)
}

// Units renders the service and timer unit files.
func Units(o ScheduleOptions) (service, timer string, err error) {
	for name, v := range map[string]string{"program": o.Program, "out-dir": o.OutDir, "recipient-file": o.RecipientFile} {
		if v == "" {
			return "", "", fmt.Errorf("schedule: no %s", name)
		}
		if !filepath.IsAbs(v) {
			return "", "", fmt.Errorf("schedule: %s %q is not an absolute path", name, v)
		}
	}
	if o.Keep < 1 {
		return "", "", errors.New("schedule: keep at least one backup")
	}
	if o.OnCalendar == "" {
		o.OnCalendar = "daily"
	}
	args := []string{o.Program, "backup", "create", "--out-dir", o.OutDir, "--keep", fmt.Sprint(o.Keep), "--recipient-file", o.RecipientFile}
	if o.Key != "" {
		args = append(args, "--key", o.Key)
	}
	args = append(args, o.Extra...)
	return sdtimer.Render(sdtimer.Options{
		Writer:      "qwen-appliance backup schedule",
		Description: "qwen-appliance backup (age-encrypted, signed)",
		Args:        args, OnCalendar: o.OnCalendar, Delay: "15min",
		After: "qwen-appliance-gateway.service", Background: true,
	})
}
