// Package layout names where backups show themselves on a host: the systemd
// units 'backup schedule' writes, the node-exporter textfiles 'backup create'
// and 'backup verify --drill' write, and the archives' file names. It is a
// leaf, so that verify can read a host's backup state without linking the
// backup and restore code (which links the installer); it must never import
// anything of this module.
package layout

// The systemd units 'backup schedule' writes.
const (
	ScheduleService = "qwen-appliance-backup.service"
	ScheduleTimer   = "qwen-appliance-backup.timer"
)

// DefaultTextfileDir is node-exporter's textfile collector directory on
// Debian, where 'backup create' writes TextfileName.
const DefaultTextfileDir = "/var/lib/prometheus/node-exporter"

// TextfileName holds qwen_backup_last_success_timestamp_seconds.
const TextfileName = "qwen_backup.prom"

// DrillTextfileName holds the last drill's result.
const DrillTextfileName = "qwen_backup_drill.prom"

// ArchivePrefix and ArchiveSuffix frame the timestamp in the names of the
// archives 'backup create --out-dir' writes: qwen-backup-TIMESTAMP.age.
const ArchivePrefix, ArchiveSuffix = "qwen-backup-", ".age"
