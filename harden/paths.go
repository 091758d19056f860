package harden

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
)

// Paths as the booted host sees them; Under prefixes them with --root.
const (
	RulesPath    = "/etc/qwen-appliance/nftables.conf"
	StatePath    = "/var/lib/qwen-appliance/harden.json"
	FirewallUnit = "qwen-appliance-firewall.service"
	UnitDir      = "/etc/systemd/system"
	RuntimeDir   = "/run/qwen-appliance"
	NftPath      = "/usr/sbin/nft"
)

// Root is the --root prefix every file write goes under; "" and "/" mean the
// real system.
type Root string

// Path returns p (an absolute path on the target) under the root.
func (r Root) Path(p string) string {
	if r == "" {
		return p
	}
	return filepath.Join(string(r), p)
}

func (r Root) unitPath() string { return r.Path(filepath.Join(UnitDir, FirewallUnit)) }

// BootUnit is the firewall's boot unit file under the root, and
// BootUnitLink the link that enables it (sysinit.target wants it).
func (r Root) BootUnit() string     { return r.unitPath() }
func (r Root) BootUnitLink() string { return r.wantsLink() }

func (r Root) wantsLink() string {
	return r.Path(filepath.Join(UnitDir, "sysinit.target.wants", FirewallUnit))
}

// writeFile writes data atomically under the root, creating parent
// directories with mode dirMode.
func (r Root) writeFile(p string, data []byte, mode, dirMode os.FileMode) error {
	full := r.Path(p)
	if err := os.MkdirAll(filepath.Dir(full), dirMode); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	if err := atomicfile.WriteFile(full, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	return nil
}

// FirewallUnitText is the oneshot unit that loads the rules file at boot,
// before any network interface is configured (network-pre.target), so the
// host is never up without the egress-deny table. It has no ExecStop:
// stopping the unit must not open the host.
func FirewallUnitText() string {
	return `[Unit]
Description=qwen-appliance egress-deny firewall (table inet ` + TableName + `)
Documentation=https://github.com/qwen-appliance/qwen-appliance#hardening
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + NftPath + ` -f ` + RulesPath + `

[Install]
WantedBy=sysinit.target
`
}
