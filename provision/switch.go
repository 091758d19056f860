package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// switchTo brings the release st.Bundle into service: a runtime for it
// beside whatever serves now, the gateway pointed at it atomically (or
// started, when none runs), a chat completion through the gateway, and only
// then the previous runtime stopped. Until that last step every change is
// undone on failure, so the previous release keeps serving.
func (in *installer) switchTo(ctx context.Context, st *state.State, m *manifests.Manifest, ids harden.Identities) error {
	id := ids.Gateway
	if err := in.runtime(ctx, st, m, ids.Runtime); err != nil {
		return err
	}
	if err := in.stepDone("runtime"); err != nil {
		return err
	}
	upstream := "http://" + st.Runtime.Listen[0]
	live := in.prev != nil && in.running(in.prev.Gateway.Service) && !in.gatewayStopped
	if live && (in.gatewaySettingsChanged() || in.gatewayKBChanged()) {
		// The gateway's own flags (or, under systemd, its unit's IP
		// allowlist) changed: it is started again with them below.
		in.logf("restarting the gateway (%s) with the changed settings", describe(in.prev.Gateway.Service))
		if err := in.stopService(in.prev.Gateway.Service, 30*time.Second); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		live = false
	}
	if live {
		// The gateway keeps running: its secrets get their owner and mode
		// back here, as its step would give them (repair).
		if err := in.protectSecrets(id); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		if err := in.repoint(ctx, in.prev, upstream); err != nil {
			return err
		}
		st.Gateway = in.prev.Gateway
		if u := st.Gateway.Unit; u != "" {
			st.Files[u] = in.prev.Files[u]
		}
	} else {
		if err := in.writeUpstream(upstream, id); err != nil {
			return err
		}
		if err := in.gateway(ctx, st, id); err != nil {
			return err
		}
	}
	if err := in.stepDone("gateway"); err != nil {
		return err
	}
	if err := in.ingestKB(ctx, id); err != nil {
		return err
	}
	if err := in.smoke(ctx, st, m, id); err != nil {
		return err
	}
	if err := in.stepDone("smoke"); err != nil {
		return err
	}
	if old := in.prevRuntime(st); old != nil {
		in.logf("stopping the previous runtime (%s)", describe(*old))
		if err := in.stopService(*old, 30*time.Second); err != nil {
			in.logf("warning: %v", err)
		}
		if old.Unit != "" {
			delete(st.Files, old.Unit) // removed with the unit
		}
	}
	in.prune(st)
	return nil
}

// prevRuntime is the runtime that served before st's, when it still runs
// (or, under systemd, still has its unit) and is not st's own.
func (in *installer) prevRuntime(st *state.State) *state.Service {
	if in.prev == nil {
		return nil
	}
	old := in.prev.Runtime
	switch {
	case old.Unit != "":
		if old.Unit == st.Runtime.Unit {
			return nil
		}
		if _, err := os.Stat(old.Unit); err != nil {
			return nil
		}
	case old.PID <= 0 || old.PID == st.Runtime.PID || in.sys.host.Check(identityOf(old)) != nil:
		return nil
	}
	return &old
}

// describe names a recorded service for the operator.
func describe(svc state.Service) string {
	if svc.Unit != "" {
		return "unit " + filepath.Base(svc.Unit)
	}
	return fmt.Sprintf("pid %d", svc.PID)
}

// prune removes the releases in the store other than the one now serving
// and the previous one (kept for rollback). Failing to remove one is only
// logged: it costs disk, not safety.
func (in *installer) prune(st *state.State) {
	keep := map[string]bool{st.Bundle.Dir: true}
	if st.Previous != nil {
		keep[st.Previous.Dir] = true
	}
	dir := filepath.Join(in.o.Store, ReleasesDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if keep[p] || !e.IsDir() {
			continue
		}
		in.logf("removing the old release %s", p)
		if err := os.RemoveAll(p); err != nil {
			in.logf("warning: %v", err)
		}
	}
}

// writeUpstream writes the gateway's upstream file atomically.
func (in *installer) writeUpstream(upstream string, id harden.Identity) error {
	p := in.l.upstream()
	in.removeIfNew(p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(p, []byte(upstream+"\n"), 0o640); err != nil {
		return fmt.Errorf("upstream file: %w", err)
	}
	return in.sys.host.Chown(p, 0, id.GID)
}

// repoint switches the running gateway to upstream: the upstream file is
// rewritten and the gateway told with SIGHUP; install waits until the
// gateway logs the switch. Undo points it back.
func (in *installer) repoint(ctx context.Context, prev *state.State, upstream string) error {
	old, err := os.ReadFile(in.l.upstream())
	if err != nil {
		return fmt.Errorf("the running gateway has no upstream file (installed by an older version?): %w", err)
	}
	id := harden.Identity{UID: prev.ServiceUID, GID: prev.ServiceGID}
	gw := prev.Gateway
	in.onUndo(func() error {
		err := in.writeUpstream(strings.TrimSpace(string(old)), id)
		return errors.Join(err, in.signal(gw.Service, syscall.SIGHUP))
	})
	from := logSize(gw.Log)
	if err := in.writeUpstream(upstream, id); err != nil {
		return err
	}
	if err := in.signal(gw.Service, syscall.SIGHUP); err != nil {
		return err
	}
	in.logf("gateway (%s) switching to %s", describe(gw.Service), upstream)
	s := service{Name: "gateway", Log: gw.Log}
	return waitFor(ctx, in.sys.host, s, in.sups.of(gw.Service).mainPID(gw.Service), 30*time.Second, logSays(gw.Log, from, "", "upstream switched", "to="+upstream))
}

// smokeToken makes a short-lived token for the smoke test, so that every
// install and rollback proves a real answer through the gateway without
// holding an operator's secret; the caller revokes it.
func (in *installer) smokeToken(st *state.State, id harden.Identity) (secret string, revoke func(), err error) {
	path := in.l.tokens()
	store, err := tokens.Load(path)
	if err != nil {
		return "", nil, fmt.Errorf("tokens: %w", err)
	}
	secret, tok, err := store.Create(tokens.CreateOptions{Name: "install-smoke-test", Role: tokens.RoleUser, Expires: 10 * time.Minute, Now: in.o.Now()})
	if err != nil {
		return "", nil, err
	}
	if err := store.Save(path); err != nil {
		return "", nil, err
	}
	if err := in.private(path, id); err != nil {
		return "", nil, err
	}
	revoke = func() {
		if s, err := tokens.Load(path); err == nil {
			if _, err := s.Revoke(tok.ID, in.o.Now()); err == nil {
				s.Save(path)
				in.private(path, id)
			}
		}
		in.signal(st.Gateway.Service, syscall.SIGHUP)
	}
	// The gateway re-reads its token file on SIGHUP; give it a moment, so
	// the first try is not a failed authentication.
	in.signal(st.Gateway.Service, syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	return secret, revoke, nil
}
