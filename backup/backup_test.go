package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

var ctx = context.Background()

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// host is a fake installation: real configuration files, a real audit log
// kept open by a "gateway", a signed bundle, a state record.
type host struct {
	root, store, bundle, bundleV1 string
	signer                        manifests.PrivateKey // signs backups
	release                       manifests.PrivateKey // signs bundles
	auditKey                      manifests.PrivateKey
	log                           *audit.Log
	id                            *age.X25519Identity
	secret                        string // an admin token
}

func signedBundle(t testing.TB, dir string, version uint64, k manifests.PrivateKey) {
	must(t, os.MkdirAll(filepath.Join(dir, "model"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "model", "weights.bin"), bytes.Repeat([]byte("w"), 50000), 0o644))
	t0 := time.Now().UTC().Truncate(time.Second)
	m, err := manifests.Create(ctx, dir, manifests.CreateOptions{Name: "demo", Version: version, Created: t0, Expires: t0.AddDate(1, 0, 0), ChunkSize: 16 << 10})
	must(t, err)
	must(t, manifests.Write(dir, m, k))
}

func newHost(t *testing.T) *host {
	t.Helper()
	base := t.TempDir()
	h := &host{root: filepath.Join(base, "root"), store: filepath.Join(base, "store")}
	var err error
	for _, k := range []*manifests.PrivateKey{&h.signer, &h.release, &h.auditKey} {
		*k, err = manifests.GenerateKey(nil)
		must(t, err)
	}
	h.id, err = age.GenerateX25519Identity()
	must(t, err)
	h.bundle = filepath.Join(h.store, "releases", "demo-v2")
	signedBundle(t, h.bundle, 2, h.release)
	// As the store keeps a release: read-only, with the runtime's own state
	// beside the signed files.
	must(t, os.Chmod(filepath.Join(h.bundle, "model", "weights.bin"), 0o400))
	must(t, os.MkdirAll(filepath.Join(h.bundle, "state", "ollama"), 0o700))
	must(t, os.WriteFile(filepath.Join(h.bundle, "state", "ollama", "id_ed25519"), []byte("runtime key"), 0o600))
	h.bundleV1 = filepath.Join(base, "bundle-v1")
	signedBundle(t, h.bundleV1, 1, h.release)

	cfg := filepath.Join(h.root, provision.ConfigDir)
	must(t, os.MkdirAll(filepath.Join(cfg, "trusted"), 0o755))
	must(t, os.WriteFile(filepath.Join(cfg, "trusted", "key-0.pub"), h.release.Public().MarshalText(), 0o644))
	must(t, manifests.WriteKeyPair(filepath.Join(cfg, "audit"), h.auditKey, "audit"))
	must(t, os.WriteFile(filepath.Join(cfg, "store.key"), bytes.Repeat([]byte{7}, 32), 0o600))
	must(t, certs.Init(certs.Options{Dir: filepath.Join(cfg, "tls"), Hosts: []string{"qwen.local", "127.0.0.1"}}))
	ts, err := tokens.Load(filepath.Join(cfg, "tokens.json"))
	must(t, err)
	h.secret, _, err = ts.Create(tokens.CreateOptions{Name: "admin", Role: tokens.RoleAdmin})
	must(t, err)
	must(t, ts.Save(filepath.Join(cfg, "tokens.json")))

	logDir := filepath.Join(h.root, provision.LogDir)
	must(t, os.MkdirAll(logDir, 0o700))
	auditLog := filepath.Join(logDir, "audit.log")
	h.log, err = audit.Open(audit.Options{Path: auditLog, Key: &h.auditKey, CheckpointLines: 50, MaxBytes: 64 << 10})
	must(t, err)
	t.Cleanup(func() { h.log.Close() })
	for i := 0; i < 500; i++ {
		h.log.Append(audit.Record{TokenID: "abc", Route: "/v1/chat/completions", Status: 200})
	}
	must(t, h.log.Flush())
	h.log.Append(audit.Record{TokenID: "abc", Route: "/v1/models", Status: 200})
	must(t, h.log.Flush())
	must(t, os.MkdirAll(filepath.Join(h.root, "etc/systemd/system"), 0o755))
	unit := filepath.Join(h.root, "etc/systemd/system/qwen-appliance-gateway.service")
	must(t, os.WriteFile(unit, []byte("[Service]\n"), 0o644))
	program := filepath.Join(h.root, provision.ProgramPath)
	must(t, os.MkdirAll(filepath.Dir(program), 0o755))
	must(t, os.WriteFile(program, []byte("ELF"), 0o755))
	must(t, state.Save(h.root, &state.State{Root: h.root,
		Bundle:   state.Bundle{Name: "demo", Version: 2, Dir: h.bundle, ManifestSHA256: strings.Repeat("a", 64)},
		Store:    state.Store{Dir: h.store, Backend: "none"},
		Files:    map[string]string{unit: "x", program: "y"},
		Settings: &state.Settings{Listen: "127.0.0.1:18443", MetricsListen: "127.0.0.1:19464", Host: "qwen.local", ClientCIDRs: []string{"10.0.0.0/8"}},
		Gateway:  state.Gateway{AuditLog: auditLog}}))
	return h
}

func (h *host) create(t *testing.T, o Options) (string, *Manifest) {
	t.Helper()
	if o.Out == "" {
		o.Out = filepath.Join(t.TempDir(), "host.age")
	}
	o.Root, o.Key = h.root, h.signer
	if o.Recipients == nil {
		o.Recipients = []age.Recipient{h.id.Recipient()}
	}
	m, err := Create(ctx, o)
	must(t, err)
	return o.Out, m
}

func (h *host) verify(file string) (*Report, error) {
	return Verify(ctx, VerifyOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()}, Drill: true})
}

func TestRoundTrip(t *testing.T) {
	h := newHost(t)
	prom := filepath.Join(t.TempDir(), "qwen_backup.prom")
	file, m := h.create(t, Options{Textfile: prom})
	checkTextfile(t, prom)
	kinds := map[string]int{}
	for _, mb := range m.Members {
		kinds[mb.Kind]++
		if strings.Contains(mb.Name, "weights.bin") || strings.HasPrefix(mb.Name, "root/usr/") {
			t.Errorf("weights or the program in a backup: %s", mb.Name)
		}
	}
	for _, k := range []string{KindConfig, KindAudit, KindState, KindBundle} {
		if kinds[k] == 0 {
			t.Errorf("no %s members in %v", k, kinds)
		}
	}
	if kinds[KindAudit] < 2 {
		t.Errorf("rotated audit files missing: %d audit members", kinds[KindAudit])
	}
	rep, err := h.verify(file)
	must(t, err)
	if rep.Audit.LastSeq != m.AuditHead.Seq || m.AuditHead.Seq < 500 {
		t.Errorf("audit head %d, verified up to %d", m.AuditHead.Seq, rep.Audit.LastSeq)
	}
	for _, c := range rep.Drill {
		if !c.OK {
			t.Errorf("drill %s: %s", c.Name, c.Detail)
		}
	}
	// Nothing but the archive next to it: no identity, no partial file.
	ents, _ := os.ReadDir(filepath.Dir(file))
	if len(ents) != 1 {
		t.Errorf("output directory holds %d entries, want only the archive", len(ents))
	}
	raw, _ := os.ReadFile(file)
	if bytes.Contains(raw, []byte(h.id.String())) || bytes.Contains(raw, []byte("AGE-SECRET-KEY")) {
		t.Error("the archive contains the identity")
	}
	if _, err := Create(ctx, Options{Root: h.root, Out: file, Key: h.signer, Recipients: []age.Recipient{h.id.Recipient()}}); err == nil {
		t.Error("an existing archive was overwritten")
	}

	withModel, mm := h.create(t, Options{IncludeModel: true})
	found := false
	for _, mb := range mm.Members {
		found = found || (mb.Kind == KindModel && mb.Name == "bundle/model/weights.bin")
		if strings.HasPrefix(mb.Name, "bundle/state/") {
			t.Errorf("the runtime's state in the backup: %s", mb.Name)
		}
	}
	if !found {
		t.Error("--include-model left out the weights")
	}
	_, err = h.verify(withModel)
	must(t, err)
}

func TestHybridRecipient(t *testing.T) {
	h := newHost(t)
	pq, err := age.GenerateHybridIdentity()
	must(t, err)
	file, _ := h.create(t, Options{Recipients: []age.Recipient{pq.Recipient()}})
	_, err = Verify(ctx, VerifyOptions{File: file, Identities: []age.Identity{pq}, Trusted: []manifests.PublicKey{h.signer.Public()}})
	must(t, err)
	if _, err := Verify(ctx, VerifyOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()}}); !errors.Is(err, ErrIdentity) {
		t.Errorf("X25519 identity on a post-quantum archive: %v", err)
	}
}

// A backup taken while the gateway keeps writing verifies, and the live log
// goes on verifying past the head the backup recorded.
func TestCreateWhileServing(t *testing.T) {
	h := newHost(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				h.log.Append(audit.Record{TokenID: "abc", Route: "/v1/chat/completions", Status: 200})
			}
		}
	}()
	var files []string
	for i := 0; i < 3; i++ {
		f, _ := h.create(t, Options{})
		files = append(files, f)
	}
	close(stop)
	wg.Wait()
	for _, f := range files {
		if _, err := h.verify(f); err != nil {
			t.Fatal(err)
		}
	}
	must(t, h.log.Close())
	paths, _ := audit.Files(filepath.Join(h.root, provision.LogDir, "audit.log"))
	_, err := audit.Verify(paths, audit.VerifyOptions{Trusted: []manifests.PublicKey{h.auditKey.Public()}})
	must(t, err)
}

// A rotation caught halfway leaves PATH.next beside the log, holding the
// new file's first line, which continues from the log's head. It is not
// part of the chain yet and stays out of the archive.
func TestRotationHalfway(t *testing.T) {
	h := newHost(t)
	next := filepath.Join(h.root, provision.LogDir, "audit.log.next")
	must(t, os.WriteFile(next, []byte(`{"seq":99999,"kind":"rotate"}`+"\n"), 0o600))
	file, m := h.create(t, Options{})
	for _, mb := range m.Members {
		if strings.HasSuffix(mb.Name, ".next") {
			t.Errorf("archived %s", mb.Name)
		}
	}
	_, err := h.verify(file)
	must(t, err)
}

func TestVerifyRefusals(t *testing.T) {
	h := newHost(t)
	file, _ := h.create(t, Options{})
	good, err := os.ReadFile(file)
	must(t, err)
	other, _ := age.GenerateX25519Identity()
	mallory, _ := manifests.GenerateKey(nil)
	dir := t.TempDir()
	try := func(data []byte, ids []age.Identity, trusted []manifests.PublicKey) error {
		p := filepath.Join(dir, "x.age")
		must(t, os.WriteFile(p, data, 0o600))
		_, err := Verify(ctx, VerifyOptions{File: p, Identities: ids, Trusted: trusted, Scratch: dir})
		return err
	}
	ids, trust := []age.Identity{h.id}, []manifests.PublicKey{h.signer.Public()}
	// A file is decrypted with age's DecryptReaderAt, anything else (a
	// pipe) with its streaming reader: both must refuse the same damage.
	fileTry := try
	try = func(data []byte, ids []age.Identity, trusted []manifests.PublicKey) error {
		err := fileTry(data, ids, trusted)
		_, serr := Extract(ctx, bytes.NewReader(data), ids, trusted, t.TempDir())
		if errors.Is(err, ErrVerification) != errors.Is(serr, ErrVerification) || (err == nil) != (serr == nil) {
			t.Errorf("from a file: %v; streamed: %v", err, serr)
		}
		return err
	}
	if err := try(good, ids, trust); err != nil {
		t.Fatalf("the intact archive: %v", err)
	}
	if err := try(good, []age.Identity{other}, trust); !errors.Is(err, ErrIdentity) {
		t.Errorf("wrong identity: %v", err)
	}
	if err := try(good, ids, []manifests.PublicKey{mallory.Public()}); !errors.Is(err, manifests.ErrUntrustedKey) {
		t.Errorf("untrusted signer: %v", err)
	}
	for _, off := range []int{0, 20, 100, len(good) / 3, len(good) / 2, len(good) - 40, len(good) - 1} {
		bad := append([]byte(nil), good...)
		bad[off] ^= 0x01
		if err := try(bad, ids, trust); !errors.Is(err, ErrVerification) {
			t.Errorf("byte %d flipped: %v", off, err)
		}
	}
	for _, n := range []int{0, 50, len(good) / 2, len(good) - 17, len(good) - 1} {
		if err := try(good[:n], ids, trust); !errors.Is(err, ErrVerification) {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("scratch directory left behind: %d entries", len(ents))
	}
}

// A backup signed correctly but whose audit log was cut short of the
// recorded head (a bug, or a signer that lies) fails.
func TestVerifyAuditHead(t *testing.T) {
	h := newHost(t)
	file, _ := h.create(t, Options{})
	for _, streamed := range []bool{false, true} {
		dir := t.TempDir()
		f, _ := os.Open(file)
		defer f.Close()
		var s *auditStream
		if streamed {
			s = &auditStream{dir: dir}
		}
		m2, err := extract(ctx, f, []age.Identity{h.id}, []manifests.PublicKey{h.signer.Public()}, dir, keepAll, s)
		must(t, err)
		m2.AuditHead.Seq++
		if _, err := checkAudit(dir, m2, s); !errors.Is(err, ErrVerification) {
			t.Errorf("streamed %v: head beyond the log: %v", streamed, err)
		}
		if streamed && (len(s.names) < 2 || s.v == nil) {
			t.Errorf("the audit log was not checked while extracting: %v", s.names)
		}
	}
}

// Debian's age decrypts the archive with the same identity, and the tar
// inside holds exactly what the manifest lists.
func TestAgeInterop(t *testing.T) {
	agePath, err := exec.LookPath("age")
	if err != nil {
		t.Skip("needs Debian's age (apt-get install age)")
	}
	h := newHost(t)
	file, m := h.create(t, Options{})
	dir := t.TempDir()
	idFile := filepath.Join(dir, "id.txt")
	must(t, os.WriteFile(idFile, []byte(h.id.String()+"\n"), 0o600))
	out := filepath.Join(dir, "x")
	must(t, os.Mkdir(out, 0o700))
	cmd := exec.Command("sh", "-c", `"$0" -d -i "$1" "$2" | tar -x -C "$3"`, agePath, idFile, file, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("age -d | tar -x: %v: %s", err, b)
	}
	raw, err := os.ReadFile(filepath.Join(out, ManifestName))
	must(t, err)
	inner, err := Parse(raw)
	must(t, err)
	if len(inner.Members) != len(m.Members) {
		t.Fatalf("%d members decrypted, %d created", len(inner.Members), len(m.Members))
	}
	for _, mb := range inner.Members {
		data, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(mb.Name)))
		must(t, err)
		if got := sha256hex(data); got != mb.SHA256 {
			t.Errorf("%s: age decrypted SHA-256 %s, manifest %s", mb.Name, got, mb.SHA256)
		}
	}
}

func sha256hex(b []byte) string {
	h := newSHA()
	h.Write(b)
	return hexOf(h.Sum(nil))
}

// checkTextfile: the series the BackupStale rule reads is there, fresh, in a
// format promtool accepts.
func checkTextfile(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	rules, err := os.ReadFile("../gateway/deploy/appliance-alerts.yml")
	must(t, err)
	const series = "qwen_backup_last_success_timestamp_seconds"
	if !bytes.Contains(rules, []byte(series)) {
		t.Errorf("the alert rules no longer read %s", series)
	}
	var ts int64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, series+" ") {
			ts, _ = strconv.ParseInt(strings.TrimPrefix(line, series+" "), 10, 64)
		}
	}
	if d := time.Since(time.Unix(ts, 0)); d < 0 || d > time.Minute {
		t.Errorf("%s is %d (%v ago) in\n%s", series, ts, d, data)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
}

// A disk that fills up during create leaves no archive and no partial file.
func TestCreateDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	h := newHost(t)
	dir := t.TempDir()
	mountTmpfs(t, dir, "32k")
	out := filepath.Join(dir, "host.age")
	_, err := Create(ctx, Options{Root: h.root, Out: out, Key: h.signer, Recipients: []age.Recipient{h.id.Recipient()}, IncludeModel: true})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("create on a full disk: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind on the full disk: %v", ents)
	}
}

// An audit log edited on the host before the backup (so every member
// matches its signed hash) fails verify, whether the chain is checked while
// extracting (the log's usual name) or read again afterwards (another
// name), and names the edited line.
func TestVerifyEditedAuditLog(t *testing.T) {
	for _, name := range []string{"audit.log", "gateway-events.log"} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			must(t, h.log.Close())
			dir := filepath.Join(h.root, provision.LogDir)
			files, err := audit.Files(filepath.Join(dir, "audit.log"))
			must(t, err)
			if len(files) < 2 {
				t.Fatalf("want rotated files, got %v", files)
			}
			var renamed []string
			for _, p := range files {
				np := filepath.Join(dir, name+strings.TrimPrefix(filepath.Base(p), "audit.log"))
				if np != p {
					must(t, os.Rename(p, np))
				}
				renamed = append(renamed, np)
			}
			st, err := state.Load(h.root)
			must(t, err)
			st.Gateway.AuditLog = renamed[len(renamed)-1]
			must(t, state.Save(h.root, st))
			file, _ := h.create(t, Options{})
			_, err = h.verify(file)
			must(t, err)

			data, err := os.ReadFile(renamed[0])
			must(t, err)
			edited := bytes.Replace(data, []byte(`"status":200`), []byte(`"status":503`), 1)
			if bytes.Equal(edited, data) {
				t.Fatal("nothing to edit")
			}
			must(t, os.WriteFile(renamed[0], edited, 0o600))
			file, _ = h.create(t, Options{})
			_, err = h.verify(file)
			if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), filepath.Base(renamed[0])) || !strings.Contains(err.Error(), "prev does not match") {
				t.Fatalf("edited audit line: %v", err)
			}
		})
	}
}

// A plain verify writes only what it reads after the signature check: the
// audit log is checked as it streams past and the model's files are only
// hashed, so verifying needs no scratch space for them. Its head check then
// rests on the stream; a manifest naming other audit members than the ones
// that streamed past is refused, not looked up in files that were never
// written.
func TestVerifyWritesOnlyWhatItReads(t *testing.T) {
	h := newHost(t)
	file, m := h.create(t, Options{IncludeModel: true})
	dir := t.TempDir()
	rep, err := open(ctx, file, []age.Identity{h.id}, []manifests.PublicKey{h.signer.Public()}, dir, keepChecked)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Audit == nil || rep.Audit.LastSeq != m.AuditHead.Seq || rep.Audit.LastLineSHA256 != m.AuditHead.LineSHA256 {
		t.Fatalf("audit report %+v, head %+v", rep.Audit, m.AuditHead)
	}
	var audits, models, kept int
	for _, mb := range m.Members {
		_, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(mb.Name)))
		written := err == nil
		switch {
		case mb.Kind == KindAudit:
			audits++
			if written {
				t.Errorf("audit member %s written", mb.Name)
			}
		case mb.Kind == KindModel:
			models++
			if written {
				t.Errorf("model member %s written", mb.Name)
			}
		case !written:
			t.Errorf("%s member %s not written", mb.Kind, mb.Name)
		default:
			kept++
		}
	}
	if audits == 0 || models == 0 || kept == 0 {
		t.Fatalf("%d audit, %d model and %d other members: the test proves nothing", audits, models, kept)
	}

	// The manifest (as if signed so) calls one audit member something else.
	dir = t.TempDir()
	s := &auditStream{dir: dir}
	f, err := os.Open(file)
	must(t, err)
	defer f.Close()
	m2, err := extract(ctx, f, []age.Identity{h.id}, []manifests.PublicKey{h.signer.Public()}, dir, keepChecked, s)
	must(t, err)
	for i := range m2.Members {
		if m2.Members[i].Kind == KindAudit {
			m2.Members[i].Kind = KindState
			break
		}
	}
	if _, err := checkAudit(dir, m2, s); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "named like an audit log") {
		t.Fatalf("audit members other than the streamed ones: %v", err)
	}
}
