package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

func init() {
	register(Check{
		ID: "storage.encryption", Title: "the model store is encrypted with AES-256 and its key file is private",
		Severity: Critical, Controls: []string{"SC-28", "SC-28(1)", "SC-12", "SC-13"},
		Rationale:   "A stolen disk, a decommissioned server or a copied backup must reveal nothing of the weights, documents or logs.",
		Remediation: "Reinstall onto an fscrypt-capable filesystem or a LUKS volume (install --storage fscrypt|luks); chmod 600 the key file and keep it outside the store.",
		Run:         checkEncryption,
	}, Check{
		ID: "storage.unlocked", Title: "the model store is unlocked, so the runtime can read the weights and the gateway the knowledge base",
		Severity: High, Controls: []string{"CP-10", "SI-4"},
		Rationale:   "After a reboot the store stays locked until its key is loaded; until then nothing is served, and only an alert tells a person.",
		Remediation: "Unlock it with 'qwen-appliance storage unlock' (or re-run install, which unlocks it), then check that the runtime serves ('qwen-appliance status').",
		Run:         checkUnlocked,
	})
}

func checkUnlocked(ctx context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Store.Dir == "" {
		return notApplicable("install recorded no model store")
	}
	if t.State.Store.Backend == "none" {
		return notApplicable("the store is not encrypted, so it has no lock (storage.encryption fails instead)")
	}
	dir := t.State.Store.Dir
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return fail(fmt.Sprintf("no encrypted store at %s: %v", dir, err))
	}
	st, err := s.Status(ctx)
	if err != nil {
		return errored(err)
	}
	evs := []Evidence{ev("store", "%s", dir), ev("key", "%s", st.KeyStatus)}
	if st.Locked {
		return fail(fmt.Sprintf("the %s store %s is locked: its key is not loaded", st.Backend, dir), evs...)
	}
	return pass(fmt.Sprintf("%s store unlocked", st.Backend), evs...)
}

func checkEncryption(ctx context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Store.Dir == "" {
		return notApplicable("install recorded no model store")
	}
	dir := t.State.Store.Dir
	if t.State.Store.Backend == "none" {
		return fail("the model store is not encrypted (installed with --storage none)", ev("store", "%s", dir))
	}
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return fail(fmt.Sprintf("no encrypted store at %s: %v", dir, err))
	}
	st, err := s.Status(ctx)
	if err != nil {
		return errored(err)
	}
	evs := []Evidence{
		ev("backend", "%s", st.Backend), ev("cipher", "%s (%d-bit key)", st.Cipher, st.KeyBits), ev("policy", "%s", st.Policy),
		ev("locked", "%v (key %s)", st.Locked, st.KeyStatus), ev("metadata", "%s", st.Metadata),
	}
	for _, p := range st.Protectors {
		evs = append(evs, ev("protector", "%s %s", p.Kind, p.ID))
	}
	var bad []string
	if !strings.Contains(strings.ToUpper(st.Cipher), "AES-256") && !strings.Contains(st.Cipher, "aes-xts-plain64") {
		bad = append(bad, "cipher "+st.Cipher+" is not AES-256")
	}
	if keyFile := t.State.Store.KeyFile; keyFile != "" {
		if fi, err := os.Stat(keyFile); err == nil {
			evs = append(evs, ev("key file", "%s mode %04o owner uid %d", keyFile, fi.Mode().Perm(), fileUID(fi)))
			if fi.Mode().Perm()&0o077 != 0 || fileUID(fi) != 0 {
				bad = append(bad, fmt.Sprintf("key file %s is mode %04o, uid %d: only root may read it", keyFile, fi.Mode().Perm(), fileUID(fi)))
			}
		}
	}
	// A key file inside the store would travel with every copy of it.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && (strings.HasSuffix(p, ".key") || strings.Contains(filepath.Base(p), "store.key")) {
			bad = append(bad, "key-like file inside the store: "+p)
		}
		return nil
	})
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), evs...)
	}
	return pass(fmt.Sprintf("%s store, %s", st.Backend, st.Cipher), evs...)
}
