package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(
		Check{
			ID: "integrity.manifest", Title: "installed manifest is signed by a trusted key and is the one install recorded",
			Severity: Critical, Controls: []string{"SI-7", "SI-7(6)", "CM-5"},
			Rationale:   "Proves the bytes approved for this host are the ones the release key signed, and that nobody swapped the manifest after install.",
			Remediation: "Reinstall the approved bundle with 'qwen-appliance install BUNDLE --trust KEY.pub'; investigate who changed the installed manifest.",
			Run:         checkManifest,
		},
		Check{
			ID: "integrity.model-files", Title: "installed model and runtime files match the signed manifest",
			Severity: Critical, Controls: []string{"SI-7", "SI-7(6)"},
			Rationale:   "Detects modified, added, removed or re-permissioned weights, tokenizer and server binaries.",
			Remediation: "Reinstall the bundle from the original media; the evidence names each file and byte range that differs.",
			Run:         checkModelFiles,
		},
		Check{
			ID: "integrity.config-files", Title: "unit and configuration files are unchanged since install",
			Severity: High, Controls: []string{"CM-5", "CM-6", "SI-7"},
			Rationale:   "Unit files and configuration decide sandboxing, listeners and telemetry; a silent edit can undo every other control.",
			Remediation: "Re-run 'qwen-appliance install' to restore the recorded files, and find out who edited them.",
			Run:         checkConfigFiles,
		},
	)
}

// trusted returns the keys to verify the installed manifest with: those given
// to verify, else the ones install recorded.
func (t *Target) trusted() ([]manifests.PublicKey, error) {
	if len(t.Trusted) > 0 {
		return t.Trusted, nil
	}
	if t.State == nil || len(t.State.TrustedKeys) == 0 {
		return nil, errors.New("no trusted key: pass --trust KEY.pub")
	}
	return manifests.LoadPublicKeys(t.State.TrustedKeys...)
}

func (t *Target) signedManifest() (*manifests.Signed, error) {
	if t.State == nil || t.State.Bundle.Dir == "" {
		return nil, errors.New("no installed bundle recorded")
	}
	keys, err := t.trusted()
	if err != nil {
		return nil, err
	}
	// Expiry matters when installing; an installed bundle stays approved.
	v := manifests.Verifier{Trusted: keys, AllowExpired: true}
	return v.Open(t.State.Bundle.Dir)
}

func checkManifest(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Bundle.Dir == "" {
		return notApplicable("no installed bundle recorded")
	}
	s, err := t.signedManifest()
	if errors.Is(err, manifests.ErrVerification) {
		return fail(err.Error(), ev("bundle dir", "%s", t.State.Bundle.Dir))
	}
	if err != nil {
		return errored(err)
	}
	sum := sha256.Sum256(s.Raw)
	got := hex.EncodeToString(sum[:])
	evs := []Evidence{
		ev("manifest sha256", "%s", got), ev("recorded sha256", "%s", t.State.Bundle.ManifestSHA256),
		ev("signed by", "%s", strings.Join(s.KeyIDs, ", ")), ev("bundle", "%s version %d", s.Manifest.Name, s.Manifest.Version),
	}
	if got != t.State.Bundle.ManifestSHA256 {
		return fail("the installed manifest is not the one install recorded", evs...)
	}
	if s.Manifest.Version < t.State.LastAcceptedVersion {
		if t.State.RolledBack == nil {
			return fail(fmt.Sprintf("installed version %d is lower than version %d accepted before", s.Manifest.Version, t.State.LastAcceptedVersion), evs...)
		}
		evs = append(evs, ev("rollback", "the operator rolled back to version %d at %s (version %d was accepted before)",
			s.Manifest.Version, t.State.RolledBack.Format(time.RFC3339), t.State.LastAcceptedVersion))
	}
	return pass("signature valid, manifest as recorded at install", evs...)
}

// quickChunks is how many chunks per file quick mode hashes besides the first
// and the last.
const quickChunks = 4

// sampleChunks picks the first and last chunk and a few unpredictable ones,
// so a tamperer cannot know which chunks a quick check will read.
func sampleChunks(f manifests.File) []int {
	n := len(f.Chunks)
	if n <= quickChunks+2 {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	set := map[int]bool{0: true, n - 1: true}
	for len(set) < quickChunks+2 {
		r, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
		if err != nil {
			panic(err)
		}
		set[int(r.Int64())] = true
	}
	out := make([]int, 0, len(set))
	for i := range set {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

func checkModelFiles(ctx context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Bundle.Dir == "" {
		return notApplicable("no installed bundle recorded")
	}
	s, err := t.signedManifest()
	if err != nil {
		return errored(fmt.Errorf("cannot trust the manifest to compare against: %w", err))
	}
	// The installed copy has the store's strict modes, and the runtime keeps
	// its own state beside the bundle's files.
	opts := manifests.CheckOptions{StoreModes: true, IgnoreExtra: []string{"state"}}
	mode := "full: every chunk"
	if !t.Full {
		opts.Select = sampleChunks
		mode = fmt.Sprintf("quick: sizes, modes, first, last and %d random chunks per file (--full hashes all)", quickChunks)
	}
	evs := []Evidence{ev("mode", "%s", mode), ev("files", "%d (%d bytes)", len(s.Manifest.Files), s.Manifest.TotalSize())}
	err = manifests.CheckFiles(ctx, t.State.Bundle.Dir, s.Manifest, opts)
	var fe *manifests.FilesError
	if errors.As(err, &fe) {
		for _, p := range fe.Problems {
			evs = append(evs, ev("problem", "%s", p))
		}
		return fail(fmt.Sprintf("%d file problem(s)", len(fe.Problems)), evs...)
	}
	if err != nil {
		return errored(err, evs...)
	}
	return pass(fmt.Sprintf("%d files match the signed manifest", len(s.Manifest.Files)), evs...)
}

func checkConfigFiles(_ context.Context, t *Target) Outcome {
	if t.State == nil || len(t.State.Files) == 0 {
		return notApplicable("install recorded no unit or configuration files")
	}
	paths := make([]string, 0, len(t.State.Files))
	for p := range t.State.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var evs []Evidence
	bad := 0
	for _, p := range paths {
		got, err := fileSHA256(p)
		switch {
		case err != nil:
			bad++
			evs = append(evs, ev(p, "unreadable: %v", err))
		case got != t.State.Files[p]:
			bad++
			evs = append(evs, ev(p, "sha256 %s, recorded %s", got, t.State.Files[p]))
		default:
			evs = append(evs, ev(p, "sha256 %s (as recorded)", got))
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d of %d recorded files changed or missing", bad, len(paths)), evs...)
	}
	return pass(fmt.Sprintf("%d recorded files unchanged", len(paths)), evs...)
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
