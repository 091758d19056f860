package provision

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// testRelease writes a signed release of version v into the store's
// releases and returns its record.
func testRelease(t *testing.T, store string, v uint64, key manifests.PrivateKey) state.Bundle {
	t.Helper()
	dir := release(store, "demo", v)
	files := map[string]string{"model/weights.gguf": fmt.Sprintf("weights of version %d", v), "runtime/README.txt": "ollama"}
	for p, s := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{Name: "demo", Version: v, Created: now, Expires: now.Add(time.Hour),
		Meta: manifests.Meta{Model: manifests.Model{Name: "test/demo", Dtype: "f32"},
			Runtime: manifests.Runtime{Kind: "ollama", ModelPath: "model/weights.gguf", ServedModelName: "demo", DefaultContext: 2048}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(dir, m, key); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return state.Bundle{Name: "demo", Version: v, ManifestSHA256: hex.EncodeToString(sum[:]), Dir: dir}
}

// fakeGateway answers as the gateway does: chat completions over TLS with
// the installation's server certificate, and /readyz on the metrics
// address.
type fakeGateway struct {
	api, metrics *httptest.Server
	status       atomic.Int32 // what chat completions answer; 200 when 0
	chats        atomic.Int32
}

// startFakeGateway serves on listen and metricsListen ("" for any port).
func startFakeGateway(t *testing.T, tlsDir, listen, metricsListen string) *fakeGateway {
	t.Helper()
	g := &fakeGateway{}
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, certs.CertFile), filepath.Join(tlsDir, certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	g.api = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.chats.Add(1)
		if s := g.status.Load(); s != 0 {
			http.Error(w, "upstream failed", int(s))
			return
		}
		fmt.Fprint(w, `{"choices":[{"message":{"content":"yes"}}],"usage":{"completion_tokens":1}}`)
	}))
	g.metrics = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	}))
	for _, s := range []struct {
		srv  *httptest.Server
		addr string
	}{{g.api, listen}, {g.metrics, metricsListen}} {
		if s.addr != "" {
			l, err := net.Listen("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			s.srv.Listener.Close()
			s.srv.Listener = l
		}
	}
	g.api.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	g.api.StartTLS()
	g.metrics.Start()
	t.Cleanup(func() { g.api.Close(); g.metrics.Close() })
	return g
}

func (g *fakeGateway) listen() []string {
	return []string{g.api.Listener.Addr().String(), g.metrics.Listener.Addr().String()}
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var (
	portArg   = regexp.MustCompile(`--port (\d+)`)
	unitLog   = regexp.MustCompile(`StandardOutput=append:(\S+)`)
	appendLog = func(path, line string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err == nil {
			f.WriteString(line + "\n")
			f.Close()
		}
	}
)

// appliance is an installation serving release 3 (release 2 kept for
// rollback, release 1 stale) on the fake host, behind a fake gateway. Its
// processes act as the real ones would: a runtime writes its ready line,
// the gateway re-reads its upstream file on SIGHUP and logs the switch.
type appliance struct {
	f       *fakes
	in      *installer
	gw      *fakeGateway
	cur     *state.State
	keyFile string
	stale   string
}

func newAppliance(t *testing.T, kind string) *appliance {
	t.Helper()
	f := newFakes()
	in, _ := fakeInstaller(t, f, kind)
	a := &appliance{f: f, in: in}
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(in.o.Root, "trust")
	if err := manifests.WriteKeyPair(trust, key, "test"); err != nil {
		t.Fatal(err)
	}
	a.keyFile = trust + ".pub"
	store := in.o.Store
	a.stale = testRelease(t, store, 1, key).Dir
	r1, r2 := testRelease(t, store, 2, key), testRelease(t, store, 3, key)
	tlsDir := in.l.tlsDir()
	if err := certs.Init(certs.Options{Dir: tlsDir, Hosts: []string{"localhost", "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	a.gw = startFakeGateway(t, tlsDir, "", "")
	if err := os.WriteFile(in.l.upstream(), []byte("http://127.0.0.1:8599\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	s, _ := tokens.Load(in.l.tokens())
	s.Create(tokens.CreateOptions{Name: "ops", Role: tokens.RoleAdmin})
	if err := s.Save(in.l.tokens()); err != nil {
		t.Fatal(err)
	}
	cur := &state.State{Root: in.o.Root, Bundle: r2, Previous: &r1, LastAcceptedVersion: 3, TrustedKeys: []string{a.keyFile},
		Store:       state.Store{Dir: store, Backend: string(BackendNone)},
		ServiceUser: testGW.User, ServiceUID: testGW.UID, ServiceGID: testGW.GID, RuntimeUser: testRT.User, RuntimeUID: testRT.UID, RuntimeGID: testRT.GID,
		Files: map[string]string{}}
	gwLog := in.l.log("gateway")
	if kind == SupervisorSystemd {
		for _, u := range []string{harden.GatewayUnit, "qwen-appliance-runtime-demo-v3.service"} {
			path := in.l.path(filepath.Join(harden.UnitDir, u))
			os.WriteFile(path, []byte("[Unit]\n"), 0o644)
			id := f.systemd.start(u)
			svc := state.Service{PID: id.PID, Start: id.Start, Boot: id.Boot, Unit: path}
			cur.Files[path], _ = fileDigest(path)
			if u == harden.GatewayUnit {
				cur.Gateway.Service = svc
			} else {
				cur.Runtime = svc
			}
		}
	} else {
		cur.Runtime = recordProc(f.host.spawn(service{Name: "runtime"}))
		cur.Gateway.Service = recordProc(f.host.spawn(service{Name: "gateway"}))
	}
	cur.Runtime.Name, cur.Runtime.Kind, cur.Runtime.Listen = "runtime", "ollama", []string{"127.0.0.1:8599"}
	cur.Gateway.Name, cur.Gateway.Log, cur.Gateway.Listen = "gateway", gwLog, a.gw.listen()
	cur.Gateway.URL, cur.Gateway.MetricsURL = a.gw.api.URL, a.gw.metrics.URL
	cur.Gateway.CACert, cur.Gateway.TokensFile = filepath.Join(tlsDir, certs.CAFile), in.l.tokens()
	if err := state.Save(in.o.Root, cur); err != nil {
		t.Fatal(err)
	}
	a.cur = cur
	in.prev = cur
	in.o.Listen, in.o.MetricsListen = cur.Gateway.Listen[0], cur.Gateway.Listen[1]
	in.o.Host = "localhost"
	a.actLikeServices()
	return a
}

func recordProc(id proc.Identity) state.Service {
	return state.Service{PID: id.PID, Start: id.Start, Boot: id.Boot}
}

// actLikeServices makes the fake host's processes do what install waits
// for: a runtime logs that it is ready on its port; a gateway logs the
// switch to the upstream file's address on SIGHUP.
func (a *appliance) actLikeServices() {
	ready := func(log, port string) { appendLog(log, "ready: ollama at http://127.0.0.1:"+port+" (fake)") }
	a.f.host.onStart = func(s service, id proc.Identity) {
		if m := portArg.FindStringSubmatch(strings.Join(s.Args, " ")); m != nil && s.Name == "runtime" {
			ready(s.Log, m[1])
		}
	}
	a.f.systemd.onRestart = func(unit string, id proc.Identity) {
		text, _ := os.ReadFile(a.in.l.path(filepath.Join(harden.UnitDir, unit)))
		port, log := portArg.FindStringSubmatch(string(text)), unitLog.FindStringSubmatch(string(text))
		if port != nil && log != nil {
			ready(log[1], port[1])
		}
	}
	a.f.host.onSignal = func(p *fakeProc, sig syscall.Signal) {
		if sig == syscall.SIGHUP && strings.Contains(p.svc.Name, "gateway") {
			up, _ := os.ReadFile(a.in.l.upstream())
			appendLog(a.in.l.log("gateway"), "level=INFO msg=\"upstream switched\" to="+strings.TrimSpace(string(up)))
		}
	}
}

func (a *appliance) rollback(t *testing.T) (*state.State, error) {
	t.Helper()
	return Rollback(context.Background(), RollbackOptions{Root: a.in.o.Root, ReadyTimeout: 3 * time.Second, Log: a.in.log, sys: a.f.sys})
}

func (a *appliance) upstream(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(a.in.l.upstream())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// Rollback serves the previous release: its runtime starts beside the
// current one, the running gateway is pointed at it (SIGHUP, not a
// restart), a chat completion goes through, and only then the current
// runtime stops; the releases swap places, and a second rollback returns.
func TestRollbackSwitchesReleases(t *testing.T) {
	a := newAppliance(t, SupervisorProcess)
	oldRuntime, gateway := a.cur.Runtime, a.cur.Gateway.Service
	st, err := a.rollback(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bundle.Version != 2 || st.Previous == nil || st.Previous.Version != 3 || st.RolledBack == nil || st.LastAcceptedVersion != 3 {
		t.Fatalf("state after rollback: bundle %+v previous %+v rolled back %v last accepted %d", st.Bundle, st.Previous, st.RolledBack, st.LastAcceptedVersion)
	}
	if a.in.running(oldRuntime) {
		t.Error("the replaced runtime still runs")
	}
	if !a.in.running(st.Runtime) || st.Runtime.PID == oldRuntime.PID {
		t.Errorf("the new runtime %+v does not run", st.Runtime)
	}
	if want := "http://" + st.Runtime.Listen[0]; a.upstream(t) != want {
		t.Errorf("upstream %q, want %q", a.upstream(t), want)
	}
	if st.Gateway.PID != gateway.PID || !a.in.running(gateway) {
		t.Error("the gateway was restarted, not repointed")
	}
	if sig := a.f.host.proc(gateway.PID).signals; !slices.Contains(sig, syscall.SIGHUP) {
		t.Errorf("gateway signals %v, want SIGHUP", sig)
	}
	if a.gw.chats.Load() == 0 {
		t.Error("no smoke test through the gateway")
	}
	s, _ := tokens.Load(a.in.l.tokens())
	for _, tok := range s.Tokens {
		if tok.Name == "install-smoke-test" && tok.State(time.Now()) != "revoked" {
			t.Errorf("smoke-test token %s left %s", tok.ID, tok.State(time.Now()))
		}
	}
	if _, err := os.Stat(a.stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale release %s not pruned: %v", a.stale, err)
	}
	for _, keep := range []string{st.Bundle.Dir, st.Previous.Dir} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("release %s: %v", keep, err)
		}
	}
	if onDisk, err := state.Load(a.in.o.Root); err != nil || onDisk.Bundle.Version != 2 {
		t.Errorf("state on disk: %v %v", onDisk, err)
	}
	if _, err := os.Stat(a.in.l.journal()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal: %v", err)
	}

	back, err := a.rollback(t)
	if err != nil {
		t.Fatal(err)
	}
	if back.Bundle.Version != 3 || back.Previous.Version != 2 {
		t.Errorf("second rollback: bundle %d previous %d, want 3 and 2", back.Bundle.Version, back.Previous.Version)
	}
	if a.in.running(st.Runtime) || !a.in.running(back.Runtime) {
		t.Error("second rollback did not swap the runtimes")
	}
	if live := a.f.host.live(); len(live) != 2 {
		t.Errorf("running after two rollbacks: %v, want a gateway and one runtime", live)
	}
}

// A rollback whose smoke test fails leaves the current release serving:
// the new runtime stopped, the gateway pointed back, the record and the
// releases as they were.
func TestRollbackSmokeFailureUndoes(t *testing.T) {
	a := newAppliance(t, SupervisorProcess)
	a.gw.status.Store(http.StatusBadGateway)
	before, _ := os.ReadFile(state.Path(a.in.o.Root))
	upstream := a.upstream(t)
	_, err := a.rollback(t)
	if err == nil || !strings.Contains(err.Error(), "smoke test through the gateway: status 502") {
		t.Fatalf("rollback = %v, want the failed smoke test", err)
	}
	if live := a.f.host.live(); len(live) != 2 {
		t.Errorf("running after the undo: %v, want only the current runtime and gateway", live)
	}
	if !a.in.running(a.cur.Runtime) || !a.in.running(a.cur.Gateway.Service) {
		t.Error("the current release stopped serving")
	}
	if a.upstream(t) != upstream {
		t.Errorf("upstream %q after the undo, want %q", a.upstream(t), upstream)
	}
	if after, _ := os.ReadFile(state.Path(a.in.o.Root)); string(after) != string(before) {
		t.Error("the state record changed")
	}
	if _, err := os.Stat(a.stale); err != nil {
		t.Errorf("a failed rollback pruned %s: %v", a.stale, err)
	}
	if _, err := os.Stat(a.in.l.journal()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal: %v", err)
	}
}

// Rollback refuses, before it starts anything, an installation without a
// previous release and a previous release whose bytes changed.
func TestRollbackRefuses(t *testing.T) {
	a := newAppliance(t, SupervisorProcess)
	live := a.f.host.live()
	weights := filepath.Join(a.cur.Previous.Dir, "model", "weights.gguf")
	if err := os.WriteFile(weights, []byte("weights of version 9"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.rollback(t); err == nil || !strings.Contains(err.Error(), "previous release") {
		t.Errorf("rollback to changed bytes = %v", err)
	}
	// A manifest other than the one recorded (re-signed, say).
	a.cur.Previous.ManifestSHA256 = strings.Repeat("0", 64)
	if err := state.Save(a.in.o.Root, a.cur); err != nil {
		t.Fatal(err)
	}
	if _, err := a.rollback(t); !errors.Is(err, manifests.ErrVerification) {
		t.Errorf("rollback to another manifest = %v, want ErrVerification", err)
	}
	a.cur.Previous = nil
	if err := state.Save(a.in.o.Root, a.cur); err != nil {
		t.Fatal(err)
	}
	if _, err := a.rollback(t); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("rollback without a previous release = %v, want ErrNoPrevious", err)
	}
	if got := a.f.host.live(); !slices.Equal(got, live) {
		t.Errorf("running %v after refusals, want %v", got, live)
	}
}

// Under systemd the new release's runtime is a unit of its own beside the
// old one's, requiring the store's unlock unit; the running gateway unit is
// repointed, and the old runtime's unit removed and forgotten.
func TestSwitchToUnits(t *testing.T) {
	a := newAppliance(t, SupervisorSystemd)
	in := a.in
	in.o.Backend = "fscrypt"
	os.MkdirAll(filepath.Dir(in.serviceExe), 0o755)
	st := nextRecord(a, 2)
	gwPID := a.f.systemd.units[harden.GatewayUnit].pid
	if err := in.switchTo(context.Background(), st, manifestOf(t, st.Bundle.Dir), harden.Identities{Gateway: testGW, Runtime: testRT}); err != nil {
		t.Fatal(err)
	}
	newUnit := in.l.path(filepath.Join(harden.UnitDir, "qwen-appliance-runtime-demo-v2.service"))
	if st.Runtime.Unit != newUnit || st.Files[newUnit] == "" {
		t.Errorf("runtime unit %q, recorded %q", st.Runtime.Unit, st.Files[newUnit])
	}
	text, _ := os.ReadFile(newUnit)
	for _, want := range []string{"\nRequires=.* " + harden.StoreUnit + "\n", "\nReadOnlyPaths=" + st.Bundle.Dir + "\n", "\nUser=" + harden.RuntimeUser + "\n"} {
		if !regexp.MustCompile(want).Match(text) {
			t.Errorf("runtime unit lacks %q:\n%s", want, text)
		}
	}
	if want := []string{harden.GatewayUnit, "qwen-appliance-runtime-demo-v2.service"}; !slices.Equal(a.f.systemd.activeUnits(), want) {
		t.Errorf("active units %v, want %v", a.f.systemd.activeUnits(), want)
	}
	old := a.cur.Runtime.Unit
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old runtime unit file: %v", err)
	}
	if _, ok := st.Files[old]; ok {
		t.Error("the removed unit is still recorded")
	}
	if st.Store.Unit == "" || !a.f.systemd.units[harden.StoreUnit].enabled {
		t.Error("the store's unlock unit is not written and enabled")
	}
	if a.f.systemd.units[harden.GatewayUnit].pid != gwPID || !slices.Contains(a.f.host.proc(gwPID).signals, syscall.SIGHUP) {
		t.Error("the gateway unit was restarted instead of repointed")
	}
	if st.Gateway.Unit != a.cur.Gateway.Unit || st.Files[st.Gateway.Unit] != a.cur.Files[a.cur.Gateway.Unit] {
		t.Errorf("gateway record %q / %q: want the running one's", st.Gateway.Unit, st.Files[st.Gateway.Unit])
	}
}

// Under systemd a failed switch removes the new runtime's unit and the
// store unit it wrote, and points the gateway back.
func TestSwitchToUnitsUndo(t *testing.T) {
	a := newAppliance(t, SupervisorSystemd)
	in := a.in
	in.o.Backend = "fscrypt"
	a.gw.status.Store(http.StatusInternalServerError)
	upstream := a.upstream(t)
	st := nextRecord(a, 2)
	if err := in.j.begin(); err != nil {
		t.Fatal(err)
	}
	err := in.switchTo(context.Background(), st, manifestOf(t, st.Bundle.Dir), harden.Identities{Gateway: testGW, Runtime: testRT})
	if err == nil {
		t.Fatal("switch with a failing smoke test succeeded")
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if want := []string{harden.GatewayUnit, "qwen-appliance-runtime-demo-v3.service"}; !slices.Equal(a.f.systemd.activeUnits(), want) {
		t.Errorf("active units after undo %v, want %v", a.f.systemd.activeUnits(), want)
	}
	for _, u := range []string{"qwen-appliance-runtime-demo-v2.service", harden.StoreUnit} {
		if _, err := os.Stat(in.l.path(filepath.Join(harden.UnitDir, u))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after undo: %v", u, err)
		}
	}
	if a.upstream(t) != upstream {
		t.Errorf("upstream %q, want %q", a.upstream(t), upstream)
	}
}

// nextRecord is the record switchTo completes for release v, as Install and
// Rollback start it.
func nextRecord(a *appliance, v uint64) *state.State {
	st := *a.cur
	st.Files = map[string]string{}
	for k, x := range a.cur.Files {
		st.Files[k] = x
	}
	st.Previous = &a.cur.Bundle
	st.Bundle = state.Bundle{Name: "demo", Version: v, Dir: release(a.in.o.Store, "demo", v)}
	return &st
}

func manifestOf(t *testing.T, dir string) *manifests.Manifest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Changed gateway settings restart the gateway: the running one stops, a
// new one starts with the new addresses and serves the smoke test.
func TestSwitchToRestartsGatewayOnChangedSettings(t *testing.T) {
	a := newAppliance(t, SupervisorProcess)
	in := a.in
	in.o.Listen, in.o.MetricsListen = freeAddr(t), freeAddr(t)
	in.settings = []settingChange{{"listen", a.cur.Gateway.Listen[0], in.o.Listen}}
	start := a.f.host.onStart
	var gw *fakeGateway
	a.f.host.onStart = func(s service, id proc.Identity) {
		start(s, id)
		if s.Name == "gateway" {
			gw = startFakeGateway(t, in.l.tlsDir(), in.o.Listen, in.o.MetricsListen)
		}
	}
	st := nextRecord(a, 2)
	if err := in.switchTo(context.Background(), st, manifestOf(t, st.Bundle.Dir), harden.Identities{Gateway: testGW, Runtime: testRT}); err != nil {
		t.Fatal(err)
	}
	if in.running(a.cur.Gateway.Service) {
		t.Error("the gateway with the old settings still runs")
	}
	if !in.running(st.Gateway.Service) || st.Gateway.PID == a.cur.Gateway.PID {
		t.Errorf("new gateway %+v", st.Gateway.Service)
	}
	if gw == nil || gw.chats.Load() == 0 || a.gw.chats.Load() != 0 {
		t.Error("the smoke test did not go through the new gateway")
	}
	if !slices.Equal(st.Gateway.Listen, []string{in.o.Listen, in.o.MetricsListen}) || st.Gateway.URL != "https://"+in.o.Listen {
		t.Errorf("gateway record %v %s", st.Gateway.Listen, st.Gateway.URL)
	}
	for _, p := range []string{in.l.tokens(), filepath.Join(in.l.tlsDir(), certs.KeyFile)} {
		if got := a.f.host.owners[p]; got != [2]int{testGW.UID, testGW.GID} {
			t.Errorf("%s given to %v, want the gateway's user", p, got)
		}
	}
	if got := a.f.host.owners[in.l.upstream()]; got != [2]int{0, testGW.GID} {
		t.Errorf("upstream file given to %v, want root and the gateway's group", got)
	}
}

// prevRuntime names the runtime to stop after a switch: the previous one,
// only while it still runs (or has its unit) and is not the new one.
func TestPrevRuntime(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	st := &state.State{Runtime: recordProc(f.host.spawn(service{Name: "runtime"}))}
	if in.prevRuntime(st) != nil {
		t.Error("a first install has a previous runtime")
	}
	old := recordProc(f.host.spawn(service{Name: "runtime"}))
	in.prev = &state.State{Runtime: old}
	if got := in.prevRuntime(st); got == nil || got.PID != old.PID {
		t.Errorf("prevRuntime = %v, want pid %d", got, old.PID)
	}
	in.prev.Runtime = st.Runtime // a re-run that kept the runtime
	if in.prevRuntime(st) != nil {
		t.Error("the new runtime is its own previous one")
	}
	in.prev.Runtime = old
	f.host.reuse(old.PID)
	if in.prevRuntime(st) != nil {
		t.Error("a reused PID names a previous runtime to stop")
	}
	unit := in.l.path(filepath.Join(harden.UnitDir, "qwen-appliance-runtime-demo-v1.service"))
	in.prev.Runtime = state.Service{Unit: unit}
	if in.prevRuntime(st) != nil {
		t.Error("a unit whose file is gone names a previous runtime")
	}
	os.WriteFile(unit, nil, 0o644)
	if in.prevRuntime(st) == nil {
		t.Error("the previous runtime's unit is not stopped")
	}
	st.Runtime.Unit = unit
	if in.prevRuntime(st) != nil {
		t.Error("the same unit (a re-run) is stopped")
	}
}

// prune keeps the serving release and the previous one, and removes other
// release directories; files beside them are not its business.
func TestPrune(t *testing.T) {
	f := newFakes()
	in, log := fakeInstaller(t, f, SupervisorProcess)
	rel := func(v uint64) string { return release(in.o.Store, "demo", v) }
	for v := range uint64(5) {
		os.MkdirAll(filepath.Join(rel(v), "model"), 0o700)
	}
	note := filepath.Join(in.o.Store, ReleasesDir, "README")
	os.WriteFile(note, nil, 0o600)
	st := &state.State{Bundle: state.Bundle{Dir: rel(3)}, Previous: &state.Bundle{Dir: rel(1)}}
	in.prune(st)
	for v := range uint64(5) {
		_, err := os.Stat(rel(v))
		if kept := v == 3 || v == 1; kept != (err == nil) {
			t.Errorf("release %d: %v (kept: %v)", v, err, kept)
		}
	}
	if _, err := os.Stat(note); err != nil {
		t.Errorf("a file in releases/ was removed: %v", err)
	}
	if n := strings.Count(log.String(), "removing the old release"); n != 3 {
		t.Errorf("%d removals logged, want 3:\n%s", n, log)
	}
	// Without a previous release only the serving one stays.
	in.prune(&state.State{Bundle: state.Bundle{Dir: rel(3)}})
	if _, err := os.Stat(rel(1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("release 1 without a previous record: %v", err)
	}
	// A store without releases is nothing to prune.
	in.o.Store = filepath.Join(t.TempDir(), "none")
	in.prune(st)
}
