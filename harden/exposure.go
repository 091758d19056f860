package harden

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
)

// The highest exposure scores (systemd-analyze security: 0 best … 10 worst)
// the generated units may have; the tests and verify hold them to it.
const (
	MaxGatewayExposure = 2.0
	MaxRuntimeExposure = 4.0
)

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// Exposure scores a unit file with systemd's own offline analysis
// (systemd-analyze security --offline=yes) and returns the score with the
// tool's output as evidence.
func Exposure(ctx context.Context, unitFile string) (float64, string, error) {
	cmd := exec.CommandContext(ctx, "systemd-analyze", "security", "--offline=yes", "--no-pager", unitFile)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, runErr := cmd.CombinedOutput() // exits non-zero above its own threshold; the score is what counts
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		return 0, string(out), fmt.Errorf("systemd-analyze security %s: no exposure level in its output (%v)", unitFile, runErr)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, string(out), err
}
