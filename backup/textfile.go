package backup

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"

	"github.com/qwen-appliance/qwen-appliance/backup/layout"
)

// DefaultTextfileDir is where Debian's prometheus-node-exporter reads
// textfile-collector files from (--collector.textfile.directory).
const DefaultTextfileDir = layout.DefaultTextfileDir

// TextfileName is the file a successful backup rewrites in that directory.
const TextfileName = layout.TextfileName

// DrillTextfileName is the file backup verify --drill rewrites there.
const DrillTextfileName = layout.DrillTextfileName

// writeTextfile records a successful backup for Prometheus: the node
// exporter's textfile collector serves qwen_backup_last_success_timestamp_seconds
// from it, and the BackupStale alert fires when it grows old.
func writeTextfile(path string, at time.Time, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	body := fmt.Sprintf(`# HELP qwen_backup_last_success_timestamp_seconds When the last backup create succeeded (Unix time).
# TYPE qwen_backup_last_success_timestamp_seconds gauge
qwen_backup_last_success_timestamp_seconds %d
# HELP qwen_backup_last_size_bytes Size of the last successful backup before encryption.
# TYPE qwen_backup_last_size_bytes gauge
qwen_backup_last_size_bytes %d
`, at.Unix(), size)
	return atomicfile.WriteFile(path, []byte(body), 0o644)
}

// WriteDrillTextfile records the last drill's outcome for Prometheus
// (qwen_backup_last_drill_timestamp_seconds, qwen_backup_last_drill_success);
// the BackupDrillFailed alert reads it.
func WriteDrillTextfile(path string, at time.Time, ok bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	success := 0
	if ok {
		success = 1
	}
	body := fmt.Sprintf(`# HELP qwen_backup_last_drill_timestamp_seconds When backup verify --drill last ran (Unix time).
# TYPE qwen_backup_last_drill_timestamp_seconds gauge
qwen_backup_last_drill_timestamp_seconds %d
# HELP qwen_backup_last_drill_success 1 when the last backup verify --drill passed.
# TYPE qwen_backup_last_drill_success gauge
qwen_backup_last_drill_success %d
`, at.Unix(), success)
	return atomicfile.WriteFile(path, []byte(body), 0o644)
}
