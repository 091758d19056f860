package harden

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// SystemdBooted reports whether systemd is the init system of this host or
// container (sd_booted(3): /run/systemd/system is a directory).
func SystemdBooted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// Systemctl runs systemctl with args and returns an error carrying its
// output when it fails.
func Systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MainPID returns the main process systemd records for unit, 0 when the
// unit is not running.
func MainPID(ctx context.Context, unit string) (int, error) {
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=MainPID", "--value", unit).Output()
	if err != nil {
		return 0, fmt.Errorf("systemctl show %s: %w", unit, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("systemctl show %s: MainPID %q: %w", unit, strings.TrimSpace(string(out)), err)
	}
	return pid, nil
}

// UnitActive reports whether systemd says unit is active (running).
func UnitActive(ctx context.Context, unit string) bool {
	return exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", unit).Run() == nil
}

var unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.-]+\.service$`)

// RuntimeUnitFor names the unit that serves one release (the bundle's name
// and version), so that during an upgrade the new release's runtime runs
// beside the old one's.
func RuntimeUnitFor(release string) (string, error) {
	name := strings.TrimSuffix(RuntimeUnit, ".service") + "-" + release + ".service"
	if !unitNameRE.MatchString(name) {
		return "", fmt.Errorf("unit: release %q does not make a valid unit name (letters, digits, ':', '_', '.', '-')", release)
	}
	return name, nil
}

// ExecLine joins a program and its arguments into a unit's command line. It
// refuses words that systemd would split, unquote or expand (spaces, quotes,
// backslashes, %), and escapes '$' so no variable is substituted.
func ExecLine(words ...string) (string, error) {
	if len(words) == 0 || !strings.HasPrefix(words[0], "/") {
		return "", fmt.Errorf("unit: the command must start with an absolute path")
	}
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n\r\"'\\%") {
			return "", fmt.Errorf("unit: argument %q: spaces, quotes, backslashes and %% cannot appear in a unit's command line here", w)
		}
		out[i] = strings.ReplaceAll(w, "$", "$$")
	}
	return strings.Join(out, " "), nil
}
