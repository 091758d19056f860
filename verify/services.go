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

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func init() {
	register(
		Check{
			ID: "services.identity", Title: "the runtime and the gateway run as two different unprivileged users",
			Severity: High, Controls: []string{"AC-5", "AC-6", "CM-7"},
			Rationale:   "A compromised inference server must not run as the user that holds the tokens, the audit key and the TLS key.",
			Remediation: "Re-run 'qwen-appliance install' so the gateway runs as the service user and the runtime as the runtime user it records.",
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
			ID: "storage.permissions", Title: "the model store is private to the runtime user, its kb/ directory to the gateway's",
			Severity: High, Controls: []string{"AC-3", "AC-6", "SC-28"},
			Rationale:   "No local user but the inference server may read weights, and none but the gateway the knowledge base; the store's root lets the gateway's group (its user alone) pass through to kb/, nobody list it.",
			Remediation: "Re-run 'qwen-appliance install --repair', or by hand: chown -R the store to the runtime user, chmod directories 0700 and files 0400; the store's root 0710 with the gateway's group; kb/ and its files to the gateway's user, 0700 and 0600.",
			Run:         checkStorePermissions,
		},
	)
}

// telemetryOff is what every inference server's environment must hold:
// the opt-outs of telemetry and hub downloads that the servers and their
// libraries read; telemetryByKind adds each kind's own.
var (
	telemetryOff    = map[string]string{"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1"}
	telemetryByKind = map[string]map[string]string{
		"vllm":   {"VLLM_NO_USAGE_STATS": "1"},
		"ollama": {"OLLAMA_NOPRUNE": "1"},
	}
)

// services lists the processes install recorded, with their PIDs; a
// systemd unit's PID is its main process now (systemd restarts units).
func (t *Target) services() []state.Service {
	if t.State == nil {
		return nil
	}
	var out []state.Service
	for _, s := range append([]state.Service{t.State.Runtime, t.State.Gateway.Service}, t.State.Services...) {
		if s.Name == "" {
			continue
		}
		if s.Unit != "" {
			s.PID, _ = harden.MainPID(context.Background(), filepath.Base(s.Unit))
		}
		out = append(out, s)
	}
	return out
}

// procStatus reads a running process's /proc/PID/status as key: value.
func procStatus(pid int) (map[string]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("process %d is not running: %w", pid, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, sc.Err()
}

// procUID returns the real and effective UID of a running process.
func procUID(pid int) (real, effective int, err error) {
	st, err := procStatus(pid)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(st["Uid"])
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("process %d: no Uid line", pid)
	}
	real, _ = strconv.Atoi(f[0])
	effective, _ = strconv.Atoi(f[1])
	return real, effective, nil
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

// runtimeUID resolves the recorded runtime user; the service user for
// records from before the two were separated.
func (t *Target) runtimeUID() (int, string, error) {
	if t.State == nil || t.State.RuntimeUser == "" {
		uid, err := t.serviceUID()
		if t.State == nil {
			return uid, "", err
		}
		return uid, t.State.ServiceUser, err
	}
	if t.State.RuntimeUID > 0 {
		return t.State.RuntimeUID, t.State.RuntimeUser, nil
	}
	u, err := user.Lookup(t.State.RuntimeUser)
	if err != nil {
		return 0, "", fmt.Errorf("runtime user %q: %w", t.State.RuntimeUser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	return uid, t.State.RuntimeUser, err
}

func checkIdentity(_ context.Context, t *Target) Outcome {
	svcs := t.services()
	if len(svcs) == 0 {
		return notApplicable("install recorded no services")
	}
	gw, err := t.serviceUID()
	if err != nil {
		return errored(err)
	}
	rt, rtUser, err := t.runtimeUID()
	if err != nil {
		return errored(err)
	}
	var evs []Evidence
	bad := 0
	if gw >= 0 && rt == gw {
		bad++
		evs = append(evs, ev("users", "the runtime runs as the gateway's user %s (uid %d): a compromised runtime reads the tokens and keys", t.State.ServiceUser, gw))
	}
	for _, s := range svcs {
		want, wantUser := gw, t.State.ServiceUser
		if s.Name == "runtime" {
			want, wantUser = rt, rtUser
		}
		if s.PID == 0 {
			bad++
			evs = append(evs, ev(s.Name, "not running (unit %s has no main process)", s.Unit))
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
			evs = append(evs, ev(s.Name, "pid %d runs as uid %d, its user %s is %d", s.PID, e, wantUser, want))
		default:
			evs = append(evs, ev(s.Name, "pid %d runs as uid %d (%s)", s.PID, e, wantUser))
		}
		if s.Unit != "" {
			continue
		}
		// Under the project's supervisor the server runs below it, and
		// must not have changed user on the way.
		for _, pid := range proc.Descendants(s.PID) {
			if _, e, err := procUID(pid); err == nil && want >= 0 && e != want {
				bad++
				evs = append(evs, ev(s.Name, "pid %d %s (below pid %d) runs as uid %d, its user %s is %d", pid, procName(pid), s.PID, e, wantUser, want))
			}
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d problem(s): the services must run unprivileged, each as its own user", bad), evs...)
	}
	return pass("the gateway and the runtime run unprivileged, as two different users", evs...)
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
	if rt.PID == 0 {
		return notApplicable("runtime runs under systemd; its Environment= is covered by integrity.config-files")
	}
	want := map[string]string{}
	for _, m := range []map[string]string{telemetryOff, telemetryByKind[rt.Kind], rt.Env} {
		for k, v := range m {
			want[k] = v
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// The supervisor (rt.PID) starts the server with an environment built
	// from scratch; the server and whatever it starts are what must comply.
	servers := proc.Descendants(rt.PID)
	if len(servers) == 0 {
		return fail(fmt.Sprintf("no inference server process runs under the runtime supervisor (pid %d)", rt.PID))
	}
	var evs []Evidence
	bad := 0
	for _, pid := range servers {
		got, err := procEnv(pid)
		if err != nil {
			continue // exited meanwhile
		}
		name := fmt.Sprintf("pid %d %s", pid, procName(pid))
		var missing []string
		for _, k := range keys {
			if got[k] != want[k] {
				missing = append(missing, fmt.Sprintf("%s=%q (want %q)", k, got[k], want[k]))
			}
		}
		if len(missing) > 0 {
			bad++
			evs = append(evs, ev(name, "%s", strings.Join(missing, ", ")))
		} else {
			evs = append(evs, ev(name, "all %d variables set", len(keys)))
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d server process(es) lack telemetry/offline settings", bad), evs...)
	}
	return pass(fmt.Sprintf("%s: %d server process(es) with all %d required variables (%s)", rt.Kind, len(servers), len(keys), strings.Join(keys, ", ")), evs...)
}

func procName(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}

func checkStorePermissions(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Store.Dir == "" {
		return notApplicable("install recorded no model store")
	}
	want, wantUser, err := t.runtimeUID()
	if err != nil {
		return errored(err)
	}
	gw := kbUID(t) // as kb.permissions has it
	var evs []Evidence
	bad, seen := 0, 0
	flag := func(p, format string, args ...any) {
		bad++
		evs = append(evs, ev(p, format, args...))
	}
	store := t.State.Store.Dir
	// The knowledge base's directory belongs to the gateway's user, not
	// the runtime's: it and everything in it must be the gateway's alone
	// (kb.permissions checks the database itself too). The store's root
	// may let the gateway's group alone pass through to it (0710).
	kbDir := filepath.Dir(kbPath(t))
	err = filepath.Walk(store, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		seen++
		uid, perm := fileUID(info), info.Mode().Perm()
		inKB := p == kbDir || strings.HasPrefix(p, kbDir+string(filepath.Separator))
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			flag(p, "is a symlink")
		case p == store && perm&0o077 != 0 && !(perm&0o077 == 0o010 && gw >= 0 && fileGID(info) == t.State.ServiceGID):
			flag(p, "mode %04o lets group or others in (at most 0710, group the gateway's %d)", perm, t.State.ServiceGID)
		case p != store && perm&0o077 != 0:
			flag(p, "mode %04o lets group or others in", perm)
		case inKB && gw >= 0 && uid != gw:
			flag(p, "owned by uid %d, the gateway's user %s is %d", uid, t.State.ServiceUser, gw)
		case !inKB && want >= 0 && uid != want:
			flag(p, "owned by uid %d, runtime user %s is %d", uid, wantUser, want)
		}
		return nil
	})
	if err != nil {
		return errored(err, evs...)
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d of %d paths in the store are not private", bad, seen), evs...)
	}
	return pass(fmt.Sprintf("%d paths private to the runtime user (kb/ to the gateway's)", seen), ev("store", "%s", t.State.Store.Dir))
}
