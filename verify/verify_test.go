package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func key(t testing.TB, seed byte) manifests.PrivateKey {
	k, err := manifests.GenerateKey(rand.NewChaCha8([32]byte{seed}))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// installed makes a signed bundle directory, as install leaves it in the
// store, and the state that records it.
func installed(t *testing.T) (*Target, manifests.PrivateKey) {
	t.Helper()
	k := key(t, 1)
	dir := filepath.Join(t.TempDir(), "bundle")
	must(t, os.MkdirAll(filepath.Join(dir, "model"), 0o700))
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(dir, "model/weights.bin"), data, 0o400))
	must(t, os.WriteFile(filepath.Join(dir, "model/config.json"), []byte("{}\n"), 0o400))
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{
		Name: "demo", Version: 2, Created: t0, Expires: t0.AddDate(1, 0, 0), ChunkSize: 16 << 10})
	must(t, err)
	must(t, manifests.Write(dir, m, k))
	for _, f := range []string{manifests.ManifestFile, manifests.SignatureFile} {
		must(t, os.Chmod(filepath.Join(dir, f), 0o400))
	}
	raw, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	must(t, err)
	sum := sha256.Sum256(raw)
	unit := filepath.Join(t.TempDir(), "qwen-gateway.service")
	must(t, os.WriteFile(unit, []byte("[Service]\nUser=qwen\n"), 0o644))
	usum := sha256.Sum256([]byte("[Service]\nUser=qwen\n"))
	st := &state.State{
		SchemaVersion: state.SchemaVersion, Root: "/",
		Bundle:              state.Bundle{Name: "demo", Version: 2, ManifestSHA256: hex.EncodeToString(sum[:]), Dir: dir},
		LastAcceptedVersion: 2,
		Store:               state.Store{Dir: dir, Backend: "none"},
		Files:               map[string]string{unit: hex.EncodeToString(usum[:])},
	}
	return &Target{Root: "/", State: st, Trusted: []manifests.PublicKey{k.Public()}, Full: true}, k
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// runOne runs the check with id against t.
func runOne(t *testing.T, id string, tg *Target) Result {
	t.Helper()
	for _, c := range Checks() {
		if c.ID == id {
			return run(context.Background(), c, tg)
		}
	}
	t.Fatalf("no check %s", id)
	return Result{}
}

func expect(t *testing.T, r Result, want Status, msg string) {
	t.Helper()
	if r.Status != want || !strings.Contains(r.Message+evidenceText(r), msg) {
		t.Fatalf("%s: got %s %q %v; want %s containing %q", r.ID, r.Status, r.Message, r.Evidence, want, msg)
	}
	if want != Pass && want != NotApplicable && r.Remediation == "" {
		t.Fatalf("%s: a %s result without remediation", r.ID, want)
	}
}

func evidenceText(r Result) string {
	var b strings.Builder
	for _, e := range r.Evidence {
		b.WriteString(" " + e.Name + ": " + e.Value)
	}
	return b.String()
}

func TestEveryCheckIsDescribed(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Checks() {
		if seen[c.ID] || c.Title == "" || c.Rationale == "" || c.Remediation == "" || len(c.Controls) == 0 || c.Severity == "" {
			t.Errorf("check %q is incomplete or duplicated", c.ID)
		}
		seen[c.ID] = true
		for _, ctl := range c.Controls {
			if !controlRE.MatchString(ctl) {
				t.Errorf("%s: control %q is not an 800-53 identifier", c.ID, ctl)
			}
		}
	}
}

func TestIntegrityChecks(t *testing.T) {
	tg, _ := installed(t)
	for _, id := range []string{"integrity.manifest", "integrity.model-files", "integrity.config-files"} {
		expect(t, runOne(t, id, tg), Pass, "")
	}

	// A flipped byte, in full and in quick mode (the first chunk is always sampled).
	p := filepath.Join(tg.State.Bundle.Dir, "model/weights.bin")
	must(t, os.Chmod(p, 0o600))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	f.WriteAt([]byte{0xff}, 10)
	f.Close()
	must(t, os.Chmod(p, 0o400))
	expect(t, runOne(t, "integrity.model-files", tg), Fail, "bytes 0-16383 (chunk 0) differ")
	tg.Full = false
	expect(t, runOne(t, "integrity.model-files", tg), Fail, "chunk 0")

	// A re-moded weight file.
	tg, _ = installed(t)
	must(t, os.Chmod(filepath.Join(tg.State.Bundle.Dir, "model/weights.bin"), 0o644))
	expect(t, runOne(t, "integrity.model-files", tg), Fail, "mode is 0644")

	// A manifest that is not the one recorded, or not signed by a trusted key.
	tg, _ = installed(t)
	tg.State.Bundle.ManifestSHA256 = strings.Repeat("0", 64)
	expect(t, runOne(t, "integrity.manifest", tg), Fail, "not the one install recorded")
	tg, _ = installed(t)
	tg.Trusted = []manifests.PublicKey{key(t, 9).Public()}
	expect(t, runOne(t, "integrity.manifest", tg), Fail, "not signed by a trusted key")

	// An older version than one accepted before: a rollback only when the
	// operator recorded one.
	tg, _ = installed(t)
	tg.State.LastAcceptedVersion = 3
	expect(t, runOne(t, "integrity.manifest", tg), Fail, "lower than version 3 accepted before")
	when := t0.Add(time.Hour)
	tg.State.RolledBack = &when
	expect(t, runOne(t, "integrity.manifest", tg), Pass, "rolled back to version 2")

	// An edited unit file.
	tg, _ = installed(t)
	for p := range tg.State.Files {
		must(t, os.WriteFile(p, []byte("[Service]\nUser=root\n"), 0o644))
	}
	expect(t, runOne(t, "integrity.config-files", tg), Fail, "1 of 1 recorded files changed")

	expect(t, runOne(t, "integrity.manifest", &Target{}), NotApplicable, "")
}

func TestStorePermissions(t *testing.T) {
	tg, _ := installed(t)
	expect(t, runOne(t, "storage.permissions", tg), Pass, "private")
	must(t, os.Chmod(filepath.Join(tg.State.Bundle.Dir, "model/config.json"), 0o644))
	expect(t, runOne(t, "storage.permissions", tg), Fail, "model/config.json: mode 0644")

	expect(t, runOne(t, "storage.encryption", tg), Fail, "not encrypted")
	tg.State.Store.Backend = "fscrypt"
	expect(t, runOne(t, "storage.encryption", tg), Fail, "no encrypted store")
}

// startProcess starts "sleep" with env, as uid when uid >= 0.
func startProcess(t *testing.T, env []string, uid int) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.Env = env
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Until exec, /proc/PID shows the forked test process, not sleep.
	for range 500 {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); bytes.HasPrefix(b, []byte("sleep")) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd.Process.Pid
}

// startSupervised starts "sh", which starts "sleep" with env, the way the
// runtime supervisor starts the server; it returns the supervisor's PID.
func startSupervised(t *testing.T, env []string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	cmd.Env = env
	must(t, cmd.Start())
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Process.Kill(); cmd.Wait() })
	for range 500 {
		if len(proc.Descendants(cmd.Process.Pid)) > 0 {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", proc.Descendants(cmd.Process.Pid)[0])); bytes.HasPrefix(b, []byte("sleep")) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd.Process.Pid
}

func TestServiceChecks(t *testing.T) {
	tg, _ := installed(t)
	env := []string{"HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1", "HF_HUB_DISABLE_TELEMETRY=1"}
	tg.State.Runtime = state.Service{Name: "runtime", Kind: "vllm", PID: startSupervised(t, env)}
	expect(t, runOne(t, "services.telemetry-off", tg), Pass, "5 required")
	tg.State.Runtime.PID = startSupervised(t, env[:3])
	expect(t, runOne(t, "services.telemetry-off", tg), Fail, `DO_NOT_TRACK="" (want "1")`)
	tg.State.Runtime.PID = startProcess(t, env, -1) // a supervisor whose server is gone
	expect(t, runOne(t, "services.telemetry-off", tg), Fail, "no inference server process")

	if os.Getuid() != 0 {
		t.Skip("identity checks need root to start a process as another user")
	}
	tg.State.Runtime.PID = startProcess(t, env, 0)
	expect(t, runOne(t, "services.identity", tg), Fail, "runs as root")
	tg.State.ServiceUser, tg.State.ServiceUID = "qwen-appliance", 4242
	tg.State.RuntimeUser = "nobody"
	tg.State.Runtime.PID = startProcess(t, env, 65534)
	expect(t, runOne(t, "services.identity", tg), Pass, "uid 65534")
	tg.State.Runtime.PID = 999999999
	expect(t, runOne(t, "services.identity", tg), Fail, "not running")
}

func TestParseHexAddrPort(t *testing.T) {
	cases := map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0016":                         "0.0.0.0:22",
		"00000000000000000000000001000000:01BB": "[::1]:443",
		"0000000000000000FFFF00000100007F:0035": "127.0.0.1:53",
	}
	for in, want := range cases {
		got, err := parseHexAddrPort(in)
		if err != nil || got.String() != want {
			t.Errorf("%s: %v %v, want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "zz:1", "0100007F", "0100007F:XYZ", "01007F:0016"} {
		if _, err := parseHexAddrPort(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// gatewayFixture serves like the gateway: 401 without a valid token, 404 for
// any route it does not forward.
func gatewayFixture(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/models" {
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
		return
	}
	http.Error(w, `{"error":{"message":"unauthorized"}}`, http.StatusUnauthorized)
}

// naiveServer is a runtime facing clients directly: everything answers 200.
func naiveServer(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }

func tlsFixture(t *testing.T, h http.HandlerFunc, minVersion uint16) *Target {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{MinVersion: minVersion}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	must(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	st := &state.State{Gateway: state.Gateway{URL: srv.URL, CACert: ca}}
	return &Target{State: st}
}

func TestGatewayChecks(t *testing.T) {
	good := tlsFixture(t, gatewayFixture, tls.VersionTLS12)
	expect(t, runOne(t, "gateway.authentication", good), Pass, "-> 401")
	expect(t, runOne(t, "gateway.runtime-routes", good), Pass, "routes refused")
	expect(t, runOne(t, "gateway.tls", good), Pass, "1.1 refused")

	weak := tlsFixture(t, naiveServer, tls.VersionTLS10)
	expect(t, runOne(t, "gateway.authentication", weak), Fail, "not refused")
	expect(t, runOne(t, "gateway.runtime-routes", weak), Fail, "/slots")
	expect(t, runOne(t, "gateway.tls", weak), Fail, "TLS 1.0 is accepted")

	plain := httptest.NewServer(http.HandlerFunc(gatewayFixture))
	defer plain.Close()
	expect(t, runOne(t, "gateway.tls", &Target{State: &state.State{Gateway: state.Gateway{URL: plain.URL}}}), Fail, "plain HTTP")
	expect(t, runOne(t, "gateway.authentication", &Target{State: &state.State{}}), NotApplicable, "")
}

func TestListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	tg := &Target{State: &state.State{}}
	r := runOne(t, "network.listeners", tg)
	if r.Status == Fail {
		t.Skipf("this host already listens beyond loopback (%s); the namespace test covers the check", r.Message)
	}
	expect(t, r, Pass, "")
	if !strings.Contains(evidenceText(r), ln.Addr().String()) {
		t.Fatalf("listener %s not in evidence %v", ln.Addr(), r.Evidence)
	}
}

func goldenReport() *Report {
	return &Report{
		SchemaVersion: 1, Tool: "qwen-appliance test", Host: "gpu-01", Root: "/", Bundle: "demo version 2",
		Started: t0, Finished: t0.Add(3 * time.Second),
		Summary: Summary{Pass: 1, Fail: 1, NotApplicable: 1},
		Results: []Result{
			{ID: "integrity.model-files", Title: "installed model and runtime files match the signed manifest", Severity: Critical,
				Controls: []string{"SI-7", "SI-7(6)"}, Status: Fail, Message: "1 file problem(s)",
				Evidence:    []Evidence{{"mode", "full: every chunk"}, {"problem", "model/weights.bin: bytes 0-16383 (chunk 0) differ from the manifest"}},
				Remediation: "Reinstall the bundle from the original media.", Started: t0, Finished: t0.Add(2 * time.Second)},
			{ID: "network.egress-probe", Title: "TCP, UDP and ICMP to the probe addresses cannot leave the host", Severity: Critical,
				Controls: []string{"SC-7", "SC-7(5)", "AC-4"}, Status: Pass, Message: "every probe was stopped at the host",
				Evidence: []Evidence{{"tcp 192.0.2.1", "tcp/443 blocked: operation not permitted"}}, Started: t0.Add(2 * time.Second), Finished: t0.Add(3 * time.Second)},
			{ID: "gateway.tls", Title: "the gateway refuses TLS below 1.2", Severity: High, Controls: []string{"SC-8"},
				Status: NotApplicable, Message: "install recorded no gateway", Started: t0.Add(3 * time.Second), Finished: t0.Add(3 * time.Second)},
		},
	}
}

func TestGoldenFormats(t *testing.T) {
	for _, format := range Formats {
		var b bytes.Buffer
		must(t, goldenReport().WriteTo(&b, format))
		path := filepath.Join("testdata", "golden", "report."+format)
		if *update {
			must(t, os.MkdirAll(filepath.Dir(path), 0o755))
			must(t, os.WriteFile(path, b.Bytes(), 0o644))
		}
		want, err := os.ReadFile(path)
		must(t, err)
		if !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s output differs from %s (run go test ./verify -update):\n%s", format, path, b.String())
		}
	}
	if err := goldenReport().WriteTo(&bytes.Buffer{}, "pdf"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

func TestOSCALControlIDs(t *testing.T) {
	for in, want := range map[string]string{"SI-7(6)": "si-7.6", "SC-7": "sc-7", "AU-10": "au-10"} {
		if got := oscalControlID(in); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}

func TestSignedReportDir(t *testing.T) {
	k := key(t, 5)
	dir := filepath.Join(t.TempDir(), "report")
	rep := goldenReport()
	must(t, WriteDir(dir, rep, k))
	got, ids, err := VerifyReport(context.Background(), dir, []manifests.PublicKey{k.Public()})
	must(t, err)
	if len(got.Results) != 3 || ids[0] != k.ID {
		t.Fatalf("round trip: %+v %v", got, ids)
	}
	for _, f := range []string{ReportText, ReportJUnit, ReportOSCAL, "evidence/integrity.model-files.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	// An edited result is caught.
	p := filepath.Join(dir, ReportText)
	b, _ := os.ReadFile(p)
	must(t, os.WriteFile(p, bytes.Replace(b, []byte("FAIL"), []byte("PASS"), 1), 0o644))
	if _, _, err := VerifyReport(context.Background(), dir, []manifests.PublicKey{k.Public()}); !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("edited report accepted: %v", err)
	}
	// A report's signature cannot pass as a bundle manifest's.
	if _, err := (manifests.Verifier{Trusted: []manifests.PublicKey{k.Public()}}).Open(dir); !errors.Is(err, manifests.ErrBadSignature) {
		t.Fatalf("report accepted as a bundle manifest: %v", err)
	}
	if err := WriteDir(dir, rep, k); err == nil {
		t.Fatal("wrote into a non-empty report dir")
	}
}
