package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// withHarden gives h a harden record and the rules file rendered from it,
// as harden.Apply leaves them, and records the ruleset and the trusted
// bundle key in the install record.
func withHarden(t *testing.T, h *host) {
	t.Helper()
	p := harden.EgressPolicy{APIPort: 8443, ClientCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	rs := harden.Build(p)
	root := harden.Root(h.root)
	must(t, os.WriteFile(root.Path(harden.RulesPath), []byte(rs.Text()), 0o600))
	rec, err := json.Marshal(harden.Record{Version: 1, Policy: p, SHA256: rs.Hash(), RulesFile: harden.RulesPath, AppliedAt: time.Now().UTC()})
	must(t, err)
	must(t, os.WriteFile(root.Path(harden.StatePath), rec, 0o600))
	st, err := state.Load(h.root)
	must(t, err)
	st.Firewall.RulesetSHA256 = rs.Hash()
	st.TrustedKeys = []string{filepath.Join(h.root, provision.ConfigDir, "trusted", "key-0.pub")}
	must(t, state.Save(h.root, st))
}

// drillOf runs backup verify --drill on file, handing HostChecks what it
// is given, and returns the checks by name.
func (h *host) drillOf(t *testing.T, file, scratch string, host func(root string, st *state.State) []Check) (map[string]Check, error) {
	t.Helper()
	o := VerifyOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()}, Drill: true, Scratch: scratch}
	if host != nil {
		o.HostChecks = func(_ context.Context, root string, st *state.State, _ *Manifest) []Check { return host(root, st) }
	}
	rep, err := Verify(ctx, o)
	got := map[string]Check{}
	if rep != nil {
		for _, c := range rep.Drill {
			got[c.Name] = c
		}
	}
	return got, err
}

func TestDrill(t *testing.T) {
	h := newHost(t)
	withHarden(t, h)
	file, _ := h.create(t, Options{})
	scratch := t.TempDir()
	var seen *state.State
	var seenRoot string
	got, err := h.drillOf(t, file, scratch, func(root string, st *state.State) []Check {
		seenRoot, seen = root, st
		// What the CLI's verify checks read is there, under the scratch root.
		for _, p := range []string{st.Gateway.AuditLog, filepath.Join(st.Bundle.Dir, manifests.ManifestFile), st.TrustedKeys[0]} {
			if !strings.HasPrefix(p, root+"/") {
				t.Errorf("%s is not under the scratch root %s", p, root)
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("not restored: %v", err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(root, "usr")); len(ents) != 0 {
			t.Errorf("the program was restored: %v", ents)
		}
		return []Check{{Name: "gateway.tls", OK: true, Status: NotApplicable, Detail: "checks the running host"}}
	})
	must(t, err)
	for _, name := range []string{"restore", "tokens", "tls", "audit-key", "audit-chain", "harden"} {
		if c, ok := got[name]; !ok || !c.OK || c.Status != Pass {
			t.Errorf("drill %s: %+v", name, c)
		}
	}
	if c := got["gateway.tls"]; c.Status != NotApplicable || !c.OK {
		t.Errorf("a host check's outcome is not in the report: %+v", c)
	}
	if seen == nil || seen.Root != seenRoot || len(seen.Files) == 0 {
		t.Fatalf("host checks got %+v", seen)
	}
	for p := range seen.Files {
		if strings.Contains(p, "/usr/lib/qwen-appliance") {
			t.Errorf("the program, which no backup holds, is still a recorded file: %s", p)
		}
	}
	if !strings.Contains(got["audit-chain"].Detail, "restore record included, continue the chain") {
		t.Errorf("audit-chain: %s", got["audit-chain"].Detail)
	}
	// The host's own log is untouched: no restore record.
	live, err := os.ReadFile(filepath.Join(h.root, provision.LogDir, "audit.log"))
	must(t, err)
	if bytes.Contains(live, []byte(`"kind":"restore"`)) {
		t.Error("the drill wrote to the host's audit log")
	}
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("scratch root left behind: %v", ents)
	}
}

// A drill fails when the restored tree would not serve, names the check,
// and removes its scratch root all the same.
func TestDrillFailures(t *testing.T) {
	cfg := func(h *host, p string) string { return filepath.Join(h.root, provision.ConfigDir, p) }
	for _, tc := range []struct {
		name, check string
		spoil       func(t *testing.T, h *host)
		host        func(root string, st *state.State) []Check
	}{
		{"token file does not parse", "tokens", func(t *testing.T, h *host) {
			must(t, os.WriteFile(cfg(h, "tokens.json"), []byte(`{"tokens": [`), 0o600))
		}, nil},
		{"audit key does not match", "audit-key", func(t *testing.T, h *host) {
			// The log verifies against audit.pub, but the key that would
			// sign its next checkpoints is another.
			other, _ := manifests.GenerateKey(nil)
			tmp := filepath.Join(t.TempDir(), "other")
			must(t, manifests.WriteKeyPair(tmp, other, "audit"))
			must(t, os.Rename(tmp+".key", cfg(h, "audit.key")))
		}, nil},
		{"server certificate from another CA", "tls", func(t *testing.T, h *host) {
			must(t, os.Rename(cfg(h, "tls/ca.crt"), cfg(h, "tls/ca.crt.old")))
			must(t, os.Remove(cfg(h, "tls/ca.key")))
			must(t, os.Remove(cfg(h, "tls/server.crt")))
			must(t, os.Remove(cfg(h, "tls/server.key")))
			spareInit(t, cfg(h, "tls"))
			must(t, os.Rename(cfg(h, "tls/ca.crt.old"), cfg(h, "tls/ca.crt")))
		}, nil},
		{"rules file edited after harden", "harden", func(t *testing.T, h *host) {
			withHarden(t, h)
			p := harden.Root(h.root).Path(harden.RulesPath)
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.WriteFile(p, append(data, "# accept all\n"...), 0o600))
		}, nil},
		{"a host check fails", "integrity.config-files", nil, func(string, *state.State) []Check {
			return []Check{{Name: "integrity.config-files", Status: Fail, Detail: "1 of 1 recorded files changed"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			if tc.spoil != nil {
				tc.spoil(t, h)
			}
			file, _ := h.create(t, Options{})
			scratch := t.TempDir()
			got, err := h.drillOf(t, file, scratch, tc.host)
			if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "drill: "+tc.check) {
				t.Fatalf("got %v, want the drill's %s check to fail", err, tc.check)
			}
			if c := got[tc.check]; c.OK || c.Status != Fail {
				t.Errorf("%s: %+v", tc.check, c)
			}
			// The restore record signed with that other key does not
			// continue the chain audit.pub vouches for.
			if c := got["audit-chain"]; tc.check == "audit-key" && (c.OK || !strings.Contains(c.Detail, "not trusted")) {
				t.Errorf("audit-chain with another signing key: %+v", c)
			}
			if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
				t.Errorf("scratch root left behind: %v", ents)
			}
		})
	}
	// A damaged archive fails before anything is restored.
	h := newHost(t)
	file, _ := h.create(t, Options{})
	data, err := os.ReadFile(file)
	must(t, err)
	data[len(data)/2] ^= 1
	must(t, os.WriteFile(file, data, 0o600))
	scratch := t.TempDir()
	got, err := h.drillOf(t, file, scratch, nil)
	if !errors.Is(err, ErrVerification) || len(got) != 0 {
		t.Fatalf("damaged archive: %v, drill %v", err, got)
	}
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("scratch root left behind: %v", ents)
	}
}

// spareInit makes a fresh CA and server certificate in dir.
func spareInit(t *testing.T, dir string) {
	t.Helper()
	must(t, certs.Init(certs.Options{Dir: dir, Hosts: []string{"qwen.local"}}))
}
