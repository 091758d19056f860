// Package state is the installation record: what install put on the host
// (bundle, store, firewall, units, services), written atomically under
// ROOT/var/lib/qwen-appliance so that status, upgrade, rollback, uninstall and
// verify all read the same facts. It records hashes and locations, never
// secrets.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// SchemaVersion of the state file.
const SchemaVersion = 1

// Dir is where the state lives, below the install root.
const Dir = "var/lib/qwen-appliance"

// File is the state file's name inside Dir.
const File = "state.json"

// State is the installation record.
type State struct {
	SchemaVersion int       `json:"schemaVersion"`
	Updated       time.Time `json:"updated"`
	Root          string    `json:"root"` // "/" on a real host, a prefix in sandboxes

	Bundle Bundle `json:"bundle"`
	// Previous is the release that was serving before the last install or
	// rollback; it stays in the store for 'qwen-appliance rollback'.
	Previous *Bundle `json:"previous,omitempty"`
	// RolledBack is when an operator last rolled back to Bundle, which may
	// then be older than LastAcceptedVersion; install clears it.
	RolledBack *time.Time `json:"rolledBack,omitempty"`
	// LastAcceptedVersion is the highest bundle version ever installed;
	// lower versions are refused (rollback protection).
	LastAcceptedVersion uint64 `json:"lastAcceptedVersion"`
	// TrustedKeys are the public-key files install verified the bundle with.
	TrustedKeys []string `json:"trustedKeys,omitempty"`

	// ServiceUser is the gateway's account, the only one that may read the
	// token file and the audit and TLS keys.
	ServiceUser string `json:"serviceUser,omitempty"`
	ServiceUID  int    `json:"serviceUid,omitempty"` // as created under Root (a sandbox's passwd is not the host's)
	ServiceGID  int    `json:"serviceGid,omitempty"`
	// RuntimeUser is the inference server's account; empty in records of
	// installations from before the two were separated (both ran as
	// ServiceUser), which the next install migrates.
	RuntimeUser string `json:"runtimeUser,omitempty"`
	RuntimeUID  int    `json:"runtimeUid,omitempty"`
	RuntimeGID  int    `json:"runtimeGid,omitempty"`
	// CreatedUsers are the accounts qwen-appliance made, which uninstall
	// removes with their groups.
	CreatedUsers []string `json:"createdUsers,omitempty"`
	Store        Store    `json:"store"`
	Firewall     Firewall `json:"firewall"`
	// Files maps configuration and unit files (absolute, inside Root) to the
	// SHA-256 they had when install wrote them.
	Files   map[string]string `json:"files,omitempty"`
	Runtime Service           `json:"runtime"`
	Gateway Gateway           `json:"gateway"`
	// Settings are the operator's install flags, which an upgrade or a
	// re-run keeps unless it is given new ones. Nil in installations made
	// before they were recorded.
	Settings *Settings `json:"settings,omitempty"`
	Services []Service `json:"services,omitempty"` // supervised processes when systemd is not PID 1
}

// Settings are what the operator chose at install time. The egress-probe
// addresses are in Firewall.ProbeTargets.
type Settings struct {
	Listen        string   `json:"listen"`        // gateway API address
	MetricsListen string   `json:"metricsListen"` // metrics, /healthz and /readyz address
	Host          string   `json:"host"`          // name in the gateway's certificate
	ClientCIDRs   []string `json:"clientCidrs,omitempty"`
	AdminCIDRs    []string `json:"adminCidrs,omitempty"`
	Egress        []string `json:"egress,omitempty"` // PROTO:CIDR:PORT
}

// Bundle names the installed bundle.
type Bundle struct {
	Name           string `json:"name"`
	Version        uint64 `json:"version"`
	ManifestSHA256 string `json:"manifestSha256"`
	// Dir holds the installed copy of the bundle with its manifest.json and
	// manifest.sig (in the encrypted store).
	Dir string `json:"dir"`
}

// Store is the encrypted model store.
type Store struct {
	Dir     string `json:"dir"`
	Backend string `json:"backend"` // fscrypt | luks | none
	Cipher  string `json:"cipher,omitempty"`
	KeyFile string `json:"keyFile,omitempty"` // the key-file protector install unlocks it with
	// Unit is the boot-time unlock unit (systemd hosts with an encrypted
	// store), which the runtime's units require.
	Unit string `json:"unit,omitempty"`
}

// Firewall is the nftables table install applied.
type Firewall struct {
	Table         string   `json:"table"` // e.g. "inet qwen_appliance"
	RulesetSHA256 string   `json:"rulesetSha256"`
	RulesFile     string   `json:"rulesFile,omitempty"`
	BootUnit      string   `json:"bootUnit,omitempty"`
	NetNS         string   `json:"netns,omitempty"` // named network namespace, in sandboxes
	ProbeTargets  []string `json:"probeTargets,omitempty"`
}

// Service is a process install started.
type Service struct {
	Name   string            `json:"name"`
	Unit   string            `json:"unit,omitempty"` // systemd unit file, when systemd runs it
	PID    int               `json:"pid,omitempty"`  // when the project's supervisor runs it
	Listen []string          `json:"listen,omitempty"`
	Log    string            `json:"log,omitempty"`
	Env    map[string]string `json:"env,omitempty"` // environment install set (never secrets)
	Kind   string            `json:"kind,omitempty"`
	// GPUs are the UUIDs of the only GPUs the runtime may use (the
	// preflight plan's tensor-parallel group); none on a CPU host.
	GPUs []string `json:"gpus,omitempty"`

	// Start and Boot identify the process PID names (its start time in
	// clock ticks after boot, and the boot id): a PID is only ever
	// signalled while both still match, never after it was reused.
	Start uint64 `json:"start,omitempty"`
	Boot  string `json:"boot,omitempty"`
}

// Gateway is the API gateway's configuration.
type Gateway struct {
	Service
	URL        string `json:"url,omitempty"` // e.g. https://127.0.0.1:8443
	MetricsURL string `json:"metricsUrl,omitempty"`
	CACert     string `json:"caCert,omitempty"`
	TokensFile string `json:"tokensFile,omitempty"`
	AuditLog   string `json:"auditLog,omitempty"`
	AuditKey   string `json:"auditKey,omitempty"` // public key that signs audit checkpoints
	// The gateway's secret files, for verify to check their owner and mode.
	AuditSigningKey string   `json:"auditSigningKey,omitempty"`
	TLSKey          string   `json:"tlsKey,omitempty"`
	UpstreamAdmin   []string `json:"upstreamAdmin,omitempty"`
}

// Path returns the state file's path under root.
func Path(root string) string { return filepath.Join(root, Dir, File) }

// ErrNotInstalled is returned by Load when there is no state file.
var ErrNotInstalled = errors.New("nothing installed (no state file)")

// Load reads the state under root. It returns ErrNotInstalled when there is
// none.
func Load(root string) (*State, error) {
	data, err := os.ReadFile(Path(root))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNotInstalled, Path(root))
	}
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	return Parse(data)
}

// Parse decodes a state file strictly.
func Parse(data []byte) (*State, error) {
	var s State
	if err := jsonstrict.Decode(data, &s); err != nil {
		return nil, fmt.Errorf("parse state: %w", err)
	}
	if s.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("parse state: schemaVersion %d is not supported (want %d)", s.SchemaVersion, SchemaVersion)
	}
	return &s, nil
}

// Save writes s under root atomically, readable by root only.
func Save(root string, s *State) error {
	s.SchemaVersion = SchemaVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(Path(root))), 0o755); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Mkdir(filepath.Dir(Path(root)), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("save state: %w", err)
	}
	if err := atomicfile.WriteFile(Path(root), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
