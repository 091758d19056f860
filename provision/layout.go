package provision

import (
	"fmt"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// Paths on the target, as the booted host sees them; Root prefixes them.
const (
	ConfigDir   = "/etc/qwen-appliance"
	StateDir    = "/" + state.Dir
	LogDir      = "/var/log/qwen-appliance"
	StoreDir    = "/var/lib/qwen-appliance/store"
	ReleasesDir = "releases"                               // inside the store: one verified copy per bundle version
	StagingDir  = ".staging"                               // inside the store: packed volumes unpacked during install
	ProgramPath = "/usr/lib/qwen-appliance/qwen-appliance" // the copy the services run
)

// layout resolves every path install uses under a root.
type layout struct {
	root harden.Root
}

func (l layout) path(p string) string { return l.root.Path(p) }

func (l layout) tlsDir() string      { return l.path(filepath.Join(ConfigDir, "tls")) }
func (l layout) tokens() string      { return l.path(filepath.Join(ConfigDir, "tokens.json")) }
func (l layout) upstream() string    { return l.path(filepath.Join(ConfigDir, "upstream")) }
func (l layout) auditKey() string    { return l.path(filepath.Join(ConfigDir, "audit")) } // .key and .pub
func (l layout) storeKey() string    { return l.path(filepath.Join(ConfigDir, "store.key")) }
func (l layout) auditLog() string    { return l.path(filepath.Join(LogDir, "audit.log")) }
func (l layout) log(n string) string { return l.path(filepath.Join(LogDir, n+".log")) }
func (l layout) journal() string     { return l.path(filepath.Join(StateDir, "install-journal.json")) }

// release is the store directory holding one bundle version's verified copy.
func release(store, name string, version uint64) string {
	return filepath.Join(store, ReleasesDir, fmt.Sprintf("%s-v%d", name, version))
}
