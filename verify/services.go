package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func init() {
	register(
		Check{
			ID: "services.identity", Title: "the runtime and gateway run as the service user, not root",
			Severity: High, Controls: []string{"AC-6", "CM-7"},
			Rationale:   "A confined, unprivileged identity limits what a compromised inference server can read or change.",
			Remediation: "Restart the services through 'qwen-appliance install' so they run as the recorded service user.",
			Run:         checkIdentity,
		},
		Check{
			ID: "services.telemetry-off", Title: "the runtime runs with telemetry and hub downloads switched off",
			Severity: High, Controls: []string{"CM-6", "CM-7", "AC-4"},
			Rationale:   "vLLM sends usage statistics by default and Hugging Face libraries fetch from the hub unless told not to.",
			Remediation: "Restore the runtime's environment (re-run install); the evidence names each missing variable.",
			Run:         checkTelemetry,
		},
		Check{
			ID: "storage.permissions", Title: "the model store is private to the service user",
			Severity: High, Controls: []string{"AC-3", "AC-6", "SC-28"},
			Rationale:   "No local user but the service may read weights, documents or logs.",
			Remediation: "chown -R the store to the service user, chmod directories 0700 and files 0400 (or re-run install).",
			Run:         checkStorePermissions,
		},
	)
}

// telemetryEnv is what each runtime kind must have in its environment.
var telemetryEnv = map[string]map[string]string{
	"vllm":      {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
	"llama.cpp": {"HF_HUB_OFFLINE": "1"},
	"ollama":    {},
}

// services lists the processes install recorded, with their PIDs.
func (t *Target) services() []state.Service {
	if t.State == nil {
		return nil
	}
	var out []state.Service
	for _, s := range append([]state.Service{t.State.Runtime, t.State.Gateway.Service}, t.State.Services...) {
		if s.Name != "" {
			out = append(out, s)
		}
	}
	return out
}

// procUID returns the real and effective UID of a running process.
func procUID(pid int) (real, effective int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("process %d is not running: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				real, _ = strconv.Atoi(f[0])
				effective, _ = strconv.Atoi(f[1])
				return real, effective, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("process %d: no Uid line", pid)
}

// serviceUID resolves the recorded service user; -1 when none was recorded.
func (t *Target) serviceUID() (int, error) {
	if t.State == nil || t.State.ServiceUser == "" {
		return -1, nil
	}
	if t.State.ServiceUID > 0 {
		return t.State.ServiceUID, nil
	}
	u, err := user.Lookup(t.State.ServiceUser)
	if err != nil {
		return 0, fmt.Errorf("service user %q: %w", t.State.ServiceUser, err)
	}
	return strconv.Atoi(u.Uid)
}

func checkIdentity(_ context.Context, t *Target) Outcome {
	svcs := t.services()
	if len(svcs) == 0 {
		return notApplicable("install recorded no services")
	}
	want, err := t.serviceUID()
	if err != nil {
		return errored(err)
	}
	var evs []Evidence
	bad := 0
	for _, s := range svcs {
		if s.PID == 0 {
			evs = append(evs, ev(s.Name, "run by systemd unit %s; identity checked from the unit", s.Unit))
			continue
		}
		r, e, err := procUID(s.PID)
		switch {
		case err != nil:
			bad++
			evs = append(evs, ev(s.Name, "%v", err))
		case e == 0 || r == 0:
			bad++
			evs = append(evs, ev(s.Name, "pid %d runs as root (uid %d/%d)", s.PID, r, e))
		case want >= 0 && e != want:
			bad++
			evs = append(evs, ev(s.Name, "pid %d runs as uid %d, service user %s is %d", s.PID, e, t.State.ServiceUser, want))
		default:
			evs = append(evs, ev(s.Name, "pid %d runs as uid %d", s.PID, e))
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d service(s) not running as an unprivileged service user", bad), evs...)
	}
	return pass("every service runs unprivileged", evs...)
}

// procEnv reads a process's environment.
func procEnv(pid int) (map[string]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

func checkTelemetry(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Runtime.Name == "" {
		return notApplicable("install recorded no runtime")
	}
	rt := t.State.Runtime
	want := map[string]string{}
	for k, v := range telemetryEnv[rt.Kind] {
		want[k] = v
	}
	for k, v := range rt.Env {
		want[k] = v
	}
	if rt.PID == 0 {
		return notApplicable("runtime runs under systemd; its Environment= is covered by integrity.config-files")
	}
	got, err := procEnv(rt.PID)
	if err != nil {
		return errored(fmt.Errorf("runtime pid %d: %w", rt.PID, err))
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var evs []Evidence
	bad := 0
	for _, k := range keys {
		v, ok := got[k]
		switch {
		case !ok:
			bad++
			evs = append(evs, ev(k, "missing (want %q)", want[k]))
		case v != want[k]:
			bad++
			evs = append(evs, ev(k, "%q (want %q)", v, want[k]))
		default:
			evs = append(evs, ev(k, "%q", v))
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d telemetry/offline variable(s) not as required", bad), evs...)
	}
	return pass(fmt.Sprintf("%s runtime (pid %d) has %d required variables", rt.Kind, rt.PID, len(keys)), evs...)
}

func checkStorePermissions(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Store.Dir == "" {
		return notApplicable("install recorded no model store")
	}
	want, err := t.serviceUID()
	if err != nil {
		return errored(err)
	}
	var evs []Evidence
	bad, seen := 0, 0
	err = filepath.Walk(t.State.Store.Dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		seen++
		uid := fileUID(info)
		switch {
		case info.Mode().Perm()&0o077 != 0:
			bad++
			evs = append(evs, ev(p, "mode %04o lets group or others in", info.Mode().Perm()))
		case info.Mode()&os.ModeSymlink != 0:
			bad++
			evs = append(evs, ev(p, "is a symlink"))
		case want >= 0 && uid != want:
			bad++
			evs = append(evs, ev(p, "owned by uid %d, service user %s is %d", uid, t.State.ServiceUser, want))
		}
		return nil
	})
	if err != nil {
		return errored(err, evs...)
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d of %d paths in the store are not private", bad, seen), evs...)
	}
	return pass(fmt.Sprintf("%d paths private to the service user", seen), ev("store", "%s", t.State.Store.Dir))
}
