package backup

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// DefaultTextfileDir is where Debian's prometheus-node-exporter reads
// textfile-collector files from (--collector.textfile.directory).
const DefaultTextfileDir = "/var/lib/prometheus/node-exporter"

// TextfileName is the file a successful backup rewrites in that directory.
const TextfileName = "qwen_backup.prom"

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
	return manifests.WriteFileAtomic(path, []byte(body), 0o644)
}
