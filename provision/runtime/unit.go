package runtime

import (
	"fmt"
	"slices"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

// Unit renders the systemd unit that runs the server as Command describes it,
// with package harden's sandboxing: the runtime's user, no privileges, a
// read-only system with only the server's state directory writable, the
// NVIDIA devices only when the runtime runs on CUDA, and IP traffic to and
// from localhost only. The unit's name is harden.RuntimeUnit.
//
// Units on hosts where systemd is PID 1 restart the server themselves
// (Restart=on-failure); Ollama's model import (Adapter.Prepare) still has to
// run once the unit is up.
func Unit(c Config) (string, error) {
	a, err := For(c.Runtime.Kind)
	if err != nil {
		return "", err
	}
	cmd, err := a.Command(c)
	if err != nil {
		return "", err
	}
	exec, err := harden.ExecLine(append([]string{cmd.Path}, cmd.Args...)...)
	if err != nil {
		return "", err
	}
	for _, kv := range cmd.Env {
		if strings.Contains(kv, "%") {
			return "", fmt.Errorf("unit: environment entry %q: %% cannot appear in a unit", kv)
		}
	}
	return harden.Unit(harden.Service{
		Description:    fmt.Sprintf("qwen-appliance inference server (%s)", a.Kind()),
		User:           harden.RuntimeUser,
		ExecStart:      exec,
		Environment:    cmd.Env,
		GPU:            slices.Contains(c.Runtime.Devices, "cuda"),
		SystemInfo:     true,
		ReadOnlyPaths:  []string{c.Bundle},
		ReadWritePaths: []string{c.StateDir(a.Kind())},
	})
}
