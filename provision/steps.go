package provision

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/volume"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// BackendNone keeps the store unencrypted. It exists for hosts and tests
// without fscrypt or device-mapper; it is recorded, and verify fails it.
const BackendNone storage.Backend = "none"

func (in *installer) netfilter() (harden.Netfilter, error) {
	if in.o.Netfilter != nil {
		return in.o.Netfilter, nil
	}
	k, err := harden.Open()
	if err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	return k, nil
}

// policy is the firewall the settings ask for. The runtime's ports are
// open to root, the gateway's uid gw and the runtime's own uid rt; with
// either unknown (0) the policy has no runtime rule.
func (in *installer) policy(gw, rt int) (harden.EgressPolicy, error) {
	port, err := portOf(in.o.Listen)
	if err != nil {
		return harden.EgressPolicy{}, fmt.Errorf("gateway listen address %q: %w", in.o.Listen, err)
	}
	p := harden.EgressPolicy{APIPort: uint16(port), ClientCIDRs: in.o.ClientCIDRs, AdminCIDRs: in.o.AdminCIDRs,
		SSHPort: harden.DefaultSSHPort, Egress: in.o.Egress}
	for _, s := range in.o.ProbeTargets {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return harden.EgressPolicy{}, fmt.Errorf("probe address %q: %w", s, err)
		}
		p.ProbeTargets = append(p.ProbeTargets, a.WithZone("").Unmap())
	}
	if gw > 0 && rt > 0 {
		// Only the gateway (and the runtime itself) may connect to the
		// runtime: no local user gets round the gateway's tokens and audit.
		p.Runtime = &harden.RuntimeAccess{FirstPort: harden.RuntimePortFirst, LastPort: harden.RuntimePortLast,
			UIDs: []uint32{uint32(gw), uint32(rt)}}
	}
	return p, nil
}

// recordedUIDs are the service users' uids the previous installation
// recorded (0 when unknown).
func (in *installer) recordedUIDs() (gw, rt int) {
	if in.prev == nil || in.prev.RuntimeUser == "" {
		return 0, 0
	}
	return in.prev.ServiceUID, in.prev.RuntimeUID
}

func (in *installer) firewall(ctx context.Context, st *state.State, ids harden.Identities) error {
	policy, err := in.policy(ids.Gateway.UID, ids.Runtime.UID)
	if err != nil {
		return err
	}
	nf, err := in.netfilter()
	if err != nil {
		return err
	}
	// Registered before Apply: a table Apply loaded before failing goes
	// too. An upgrade keeps the firewall it replaced only through Apply's
	// own restore.
	in.removeIfNew(in.l.path(harden.RulesPath), in.l.root.BootUnit(), in.l.root.BootUnitLink(), in.l.path(harden.StatePath))
	if in.prev == nil {
		in.onUndo(func() error { return harden.Remove(nf, in.l.root) })
	}
	res, err := harden.Apply(ctx, nf, harden.Options{Policy: policy, Root: in.l.root, Session: in.o.Session,
		ConfirmTimeout: in.o.ConfirmTimeout, Log: in.log, Now: in.o.Now})
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	st.Firewall = state.Firewall{Table: "inet " + harden.TableName, RulesetSHA256: res.SHA256, RulesFile: res.RulesFile, BootUnit: res.UnitFile}
	for _, f := range []string{res.RulesFile, res.UnitFile} {
		if err := recordFile(st, f); err != nil {
			return err
		}
	}
	in.logf("firewall applied: table inet %s, ruleset sha256 %s", harden.TableName, res.SHA256[:16])
	return nil
}

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// runtimePort finds an unused loopback TCP port among those the firewall
// reserves for the runtime (harden.RuntimePortFirst to RuntimePortLast).
func runtimePort() (int, error) {
	for p := harden.RuntimePortFirst; p <= harden.RuntimePortLast; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("every runtime port from %d to %d is in use", harden.RuntimePortFirst, harden.RuntimePortLast)
}

// recordFile stores path's SHA-256 in the state for verify.
func recordFile(st *state.State, path string) error {
	if path == "" {
		return nil
	}
	sum, err := fileDigest(path)
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	st.Files[path] = sum
	return nil
}

// store creates or unlocks the model store, owned by the runtime's user,
// which alone reads the weights. With a knowledge base, the store's kb/
// directory is the gateway's, and the store's root lets the gateway's group
// (its user alone) pass through to it: mode 0710, no listing.
func (in *installer) store(ctx context.Context, st *state.State, ids harden.Identities) error {
	id := ids.Runtime
	owner := storage.Owner{UID: id.UID, GID: id.GID, Name: id.User}
	var g *storage.Guest
	if in.o.KB != nil {
		g = guest(ids.Gateway)
	}
	st.Store = state.Store{Dir: in.o.Store, Backend: string(in.o.Backend)}
	in.removeIfNew(in.o.Store)
	if in.o.Backend == BackendNone {
		in.logf("warning: the model store %s is NOT encrypted (--storage none)", in.o.Store)
		if err := os.MkdirAll(in.o.Store, 0o700); err != nil {
			return err
		}
		if g != nil {
			in.removeIfNew(filepath.Join(in.o.Store, KBDir))
		}
		if err := in.own(in.o.Store, id, g); err != nil {
			return err
		}
		return storage.ApplyGuest(in.o.Store, owner, g)
	}
	sopts := storage.Options{KDF: in.o.KDF}
	key := storage.Credential{KeyFile: in.l.storeKey()}
	s, err := storage.Open(in.o.Store, sopts)
	switch {
	case err == nil:
		// A store from an installation that ran the runtime as the
		// gateway's user passes to the runtime's.
		if err := s.SetOwner(owner); err != nil {
			return fmt.Errorf("model store: %w", err)
		}
		if err := s.Unlock(ctx, key); err != nil {
			return fmt.Errorf("unlock model store %s: %w", in.o.Store, err)
		}
	case errors.Is(err, storage.ErrNoStore):
		// Registered before the store exists: a store Init made is erased
		// (its key and metadata) before removeIfNew removes its directory.
		in.removeIfNew(key.KeyFile)
		if in.o.Backend == storage.BackendFscrypt {
			// Init writes the fscrypt tool's metadata at the root of the
			// store's filesystem, making MOUNT/.fscrypt if it is missing.
			if dir := fscryptToolDir(in.o.Store); dir != "" {
				in.removeIfNew(dir)
			}
		}
		var made *storage.ModelStore
		in.onUndo(func() error {
			if made == nil {
				return nil
			}
			_, err := made.Erase(context.Background())
			return err
		})
		if err := os.MkdirAll(filepath.Dir(key.KeyFile), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(key.KeyFile); errors.Is(err, os.ErrNotExist) {
			if err := storage.NewKeyFile(key.KeyFile); err != nil {
				return fmt.Errorf("store key: %w", err)
			}
		}
		var recovery string
		s, recovery, err = storage.Init(ctx, storage.InitOptions{Options: sopts, Dir: in.o.Store, Backend: in.o.Backend,
			Owner: owner, Credentials: []storage.Credential{key}})
		if err != nil {
			return fmt.Errorf("create model store: %w", err)
		}
		in.res.RecoveryKey, made = recovery, s
		in.logf("created %s model store %s", in.o.Backend, in.o.Store)
	default:
		return fmt.Errorf("model store: %w", err)
	}
	if g != nil {
		// Registered once the store is unlocked: a locked store's names
		// are ciphertext, and an existing kb/ would look new.
		in.removeIfNew(filepath.Join(in.o.Store, KBDir))
		if err := s.SetGuest(g); err != nil {
			return fmt.Errorf("model store: %w", err)
		}
	}
	stat, err := s.Status(ctx)
	if err != nil {
		return fmt.Errorf("model store status: %w", err)
	}
	st.Store.Cipher, st.Store.KeyFile = stat.Cipher, key.KeyFile
	return nil
}

// own gives everything under dir that belongs to someone else to id,
// leaving modes alone: install's own files are private already, and the
// store's files must keep the modes their manifest records. The guest's
// directory (g, when set) is left to the knowledge-base step.
func (in *installer) own(dir string, id harden.Identity, g *storage.Guest) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if g != nil && p == filepath.Join(dir, g.Dir) {
			return filepath.SkipDir
		}
		if uid, gid := ownerOf(fi); uid == id.UID && gid == id.GID {
			return nil
		}
		if err := in.sys.host.Lchown(p, id.UID, id.GID); err != nil {
			return fmt.Errorf("give %s to %s: %w", p, id.User, err)
		}
		return nil
	})
}

// copyIn puts a verified copy of the bundle into the store, owned by the
// runtime's user (id).
func (in *installer) copyIn(ctx context.Context, st *state.State, bundleDir string, s *manifests.Signed, sig []byte, id harden.Identity) (string, error) {
	m := s.Manifest
	rel := release(in.o.Store, m.Name, m.Version)
	// A staging copy an interrupted install left in the store, readable
	// now that the store is unlocked.
	staging := in.storeStaging()
	if err := os.RemoveAll(staging); err != nil {
		return "", fmt.Errorf("remove the staging copy %s: %w", staging, err)
	}
	if err := manifests.CheckFiles(ctx, rel, m, manifests.CheckOptions{StoreModes: true}); err == nil {
		in.logf("release %s already in the store and intact", rel)
		return rel, nil
	}
	if in.volumes != "" {
		// Plaintext weights: staged inside the encrypted store, and gone
		// when this step ends, whatever happens.
		defer func() {
			if err := os.RemoveAll(staging); err != nil {
				in.logf("warning: remove the staging copy %s: %v", staging, err)
			}
		}()
		dir, signature, err := in.unpack(ctx, staging, s)
		if err != nil {
			return "", err
		}
		bundleDir, sig = dir, signature
	}
	in.removeIfNew(rel)
	if in.prev == nil || in.prev.Bundle.Dir != rel {
		in.onUndo(func() error { return os.RemoveAll(rel) })
	}
	if err := os.MkdirAll(filepath.Dir(rel), 0o700); err != nil {
		return "", err
	}
	in.sys.host.Chown(filepath.Dir(rel), id.UID, id.GID)
	if err := os.RemoveAll(rel); err != nil {
		return "", err
	}
	if err := os.Mkdir(rel, 0o700); err != nil {
		return "", err
	}
	if err := in.sys.host.Chown(rel, id.UID, id.GID); err != nil {
		return "", err
	}
	owner := storage.Owner{UID: id.UID, GID: id.GID, Name: id.User}
	if err := storage.CopyIn(ctx, bundleDir, rel, m, storage.CopyOptions{Owner: owner, Signature: sig}); err != nil {
		return "", fmt.Errorf("copy into the store: %w", err)
	}
	in.logf("copied and re-verified %d files into %s", len(m.Files), rel)
	return rel, nil
}

// unpack unpacks the packed volumes into staging (inside the store) and
// returns the bundle directory and its signature file. The volumes are
// checked again as they stream; the manifest must be the very one verify
// accepted, so media swapped since then are refused.
func (in *installer) unpack(ctx context.Context, staging string, s *manifests.Signed) (dir string, sig []byte, err error) {
	if err := os.Mkdir(staging, 0o700); err != nil {
		return "", nil, err
	}
	dir = filepath.Join(staging, "bundle")
	in.logf("unpacking volumes from %s into %s (inside the store)", in.volumes, staging)
	if _, err := volume.Unpack(ctx, in.volumes, volume.UnpackOptions{Out: dir, Verifier: in.verifier}); err != nil {
		return "", nil, fmt.Errorf("unpack %s: %w", in.volumes, err)
	}
	if err := in.stepDone("unpack"); err != nil {
		return "", nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	if err != nil {
		return "", nil, err
	}
	if !bytes.Equal(raw, s.Raw) {
		return "", nil, fmt.Errorf("unpack %s: %w: the volumes hold another manifest than the one verified (were the media changed?)", in.volumes, manifests.ErrVerification)
	}
	sig, err = os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	return dir, sig, err
}

// program installs a root-owned copy of this executable that the services
// run, so they never depend on where the operator started install from (a
// home directory the service user cannot read, removable media), and records
// its hash for verify.
func (in *installer) program(st *state.State) error {
	dst := in.l.path(ProgramPath)
	want, err := fileDigest(in.o.Executable)
	if err != nil {
		return fmt.Errorf("program: %w", err)
	}
	in.removeIfNew(dst)
	if have, err := fileDigest(dst); err != nil || have != want {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(in.o.Executable)
		if err != nil {
			return fmt.Errorf("program: %w", err)
		}
		if err := atomicfile.WriteFile(dst, data, 0o755); err != nil {
			return fmt.Errorf("program: %w", err)
		}
	}
	st.Files[dst] = want
	in.serviceExe = dst
	return nil
}

// reachable checks that a service user (id) can pass through every directory
// above path, so a service does not fail later with a bare "permission
// denied" (a --root or store under a private temporary directory, say).
func reachable(path string, id harden.Identity) error {
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		mode := fi.Mode().Perm()
		uid, gid := ownerOf(fi)
		ok := mode&0o001 != 0 || (uid == id.UID && mode&0o100 != 0) || (gid == id.GID && mode&0o010 != 0)
		if !ok {
			return fmt.Errorf("the service user %s (uid %d) cannot reach %s: %s is mode %04o, owner uid %d; give it search permission (chmod o+x) or choose another --root/--store",
				id.User, id.UID, path, d, mode, uid)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// startService starts s under the installation's supervisor and waits
// until ready says it serves. It returns the unit file (under systemd) and
// the main process's identity.
func (in *installer) startService(ctx context.Context, s service, ready func() bool) (unit string, id proc.Identity, err error) {
	in.removeIfNew(s.Log)
	if err := os.MkdirAll(filepath.Dir(s.Log), 0o750); err != nil {
		return "", id, err
	}
	return in.sup.start(ctx, in, s, ready)
}

// running reports whether a recorded service is up: its unit is active, or
// the very process install started still lives.
func (in *installer) running(svc state.Service) bool { return in.sups.of(svc).running(svc) }

// signal sends sig to a recorded service's main process, only while its
// identity still matches.
func (in *installer) signal(svc state.Service, sig syscall.Signal) error {
	return in.sups.of(svc).signal(svc, sig)
}

// stopService stops a recorded service under the supervisor that runs it.
func (in *installer) stopService(svc state.Service, grace time.Duration) error {
	return in.sups.of(svc).stop(svc, grace)
}

// runtime starts the release's inference server as the runtime's user, on
// a port the firewall lets only the gateway (and the runtime) connect to.
func (in *installer) runtime(ctx context.Context, st *state.State, m *manifests.Manifest, id harden.Identity) error {
	port, err := runtimePort()
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	args := []string{"run", "--bundle", st.Bundle.Dir, "--store", st.Bundle.Dir, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
	for _, k := range st.TrustedKeys {
		args = append(args, "--trust", k)
	}
	if in.o.Threshold > 1 {
		args = append(args, "--threshold", strconv.Itoa(in.o.Threshold))
	}
	// Serve what preflight sized for this host: the context that fits and,
	// on GPUs, the tensor-parallel degree and the devices.
	var gpus []string
	var minors []int
	if in.res.Preflight != nil && in.res.Preflight.Plan != nil {
		p := in.res.Preflight.Plan
		if p.Context > 0 {
			args = append(args, "--context", strconv.Itoa(p.Context))
		}
		if p.TP > 1 {
			args = append(args, "--tensor-parallel", strconv.Itoa(p.TP))
		}
		gpus, minors = in.res.Preflight.PlanGPUs()
		if len(gpus) > 0 {
			args = append(args, "--gpus", strings.Join(gpus, ","))
		}
	}
	svc := service{Name: "runtime", Args: args, Log: in.l.log("runtime"), UID: id.UID, GID: id.GID}
	if in.sup.sandboxed() {
		// The release is read-only to the server; only its state
		// directory (Ollama's imported model, say) is writable.
		stateDir := runtime.Config{Store: st.Bundle.Dir}.StateDir(m.Runtime.Kind)
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		for _, d := range []string{filepath.Dir(stateDir), stateDir} {
			if err := in.sys.host.Chown(d, id.UID, id.GID); err != nil {
				return fmt.Errorf("runtime: %w", err)
			}
		}
		if svc.UnitName, err = harden.RuntimeUnitFor(filepath.Base(st.Bundle.Dir)); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		svc.Unit = harden.Service{
			Description:    fmt.Sprintf("qwen-appliance inference server (%s, %s version %d)", m.Runtime.Kind, st.Bundle.Name, st.Bundle.Version),
			GPU:            slices.Contains(m.Runtime.Devices, "cuda"),
			GPUMinors:      minors,
			SystemInfo:     true,
			User:           harden.RuntimeUser,
			ReadOnlyPaths:  []string{st.Bundle.Dir},
			ReadWritePaths: []string{stateDir},
		}
		if in.o.Backend != BackendNone {
			if err := in.storeUnit(ctx, st); err != nil {
				return fmt.Errorf("runtime: %w", err)
			}
			svc.Unit.Requires = []string{harden.StoreUnit}
		}
	}
	in.logf("starting the %s runtime on 127.0.0.1:%d", m.Runtime.Kind, port)
	// The runtimes of two releases append to one log during an upgrade:
	// only this one's ready line, naming its address, counts (the other's
	// may arrive late, after a restart by systemd, say).
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	unit, started, err := in.startService(ctx, svc, logSays(svc.Log, logSize(svc.Log), "ready:", " at http://"+listen+" "))
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	st.Runtime = state.Service{Name: "runtime", Kind: m.Runtime.Kind, PID: started.PID, Start: started.Start, Boot: started.Boot, Unit: unit, Listen: []string{listen}, Log: svc.Log, GPUs: gpus}
	if unit != "" {
		if err := recordFile(st, unit); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		in.logf("runtime ready (unit %s, pid %d)", filepath.Base(unit), started.PID)
		return nil
	}
	in.logf("runtime ready (pid %d)", started.PID)
	return nil
}

// gateway starts the gateway as its own user (id), the only one that reads
// its token file and keys and writes the audit log.
func (in *installer) gateway(ctx context.Context, st *state.State, id harden.Identity) error {
	tlsDir := in.l.tlsDir()
	auditKey := in.l.auditKey()
	// The token file's lock appears when this attempt's undo revokes the
	// admin token it made (tokens.Update), after the file itself.
	in.removeIfNew(tlsDir, in.l.tokens(), tokens.LockPath(in.l.tokens()), auditKey+".key", auditKey+".pub", in.l.auditLog())
	host, _, _ := net.SplitHostPort(in.o.Listen)
	hosts := []string{in.o.Host, "127.0.0.1"}
	if host != "" && host != "127.0.0.1" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	if _, err := os.Stat(filepath.Join(tlsDir, certs.CAFile)); errors.Is(err, os.ErrNotExist) {
		if err := certs.Init(certs.Options{Dir: tlsDir, Hosts: hosts, Now: in.o.Now()}); err != nil {
			return fmt.Errorf("gateway TLS: %w", err)
		}
	} else if renewed, err := certs.EnsureServer(tlsDir, hosts, in.o.Now()); err != nil {
		return fmt.Errorf("gateway TLS: %w", err)
	} else if renewed {
		in.logf("re-issued the gateway's server certificate for %v (same CA)", hosts)
	}
	// The service may enter the directory and read its own key; the CA's
	// key stays root's.
	serverKey := filepath.Join(tlsDir, "server.key")
	for _, p := range []string{tlsDir, serverKey} {
		if err := in.sys.host.Chown(p, 0, id.GID); err != nil {
			return err
		}
	}
	if err := in.private(serverKey, id); err != nil {
		return err
	}
	if err := os.Chmod(tlsDir, 0o750); err != nil {
		return err
	}
	if err := in.adminToken(id); err != nil {
		return err
	}
	if _, err := os.Stat(auditKey + ".key"); errors.Is(err, os.ErrNotExist) {
		k, err := manifests.GenerateKey(nil)
		if err != nil {
			return err
		}
		if err := manifests.WriteKeyPair(auditKey, k, "qwen-appliance audit checkpoints"); err != nil {
			return err
		}
	}
	if err := in.private(auditKey+".key", id); err != nil {
		return err
	}
	logDir := filepath.Dir(in.l.auditLog())
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return err
	}
	if err := in.sys.host.Chown(logDir, id.UID, id.GID); err != nil {
		return err
	}
	args := []string{"serve", "--upstream-file", in.l.upstream(), "--listen", in.o.Listen,
		"--tokens", in.l.tokens(), "--audit-log", in.l.auditLog(), "--audit-key", auditKey + ".key",
		"--tls-cert", filepath.Join(tlsDir, "server.crt"), "--tls-key", serverKey, "--metrics-listen", in.o.MetricsListen}
	rw := []string{logDir}
	kbPath := in.kbServed()
	if kbPath != "" {
		// The database and its -wal/-shm files are written beside it.
		args = append(args, "--kb", kbPath)
		rw = append(rw, filepath.Dir(kbPath))
		// Prompt and answer must fit the context the runtime serves.
		if p := in.res.Preflight; p != nil && p.Plan != nil && p.Plan.Context > 0 {
			args = append(args, "--kb-context-tokens", strconv.Itoa(p.Plan.Context))
		}
	}
	svc := service{Name: "gateway", Args: args, Log: in.l.log("gateway"), UID: id.UID, GID: id.GID}
	if in.sup.sandboxed() {
		svc.UnitName = harden.GatewayUnit
		svc.Unit = harden.Service{
			Description:    "qwen-appliance API gateway",
			AllowCIDRs:     append(append([]netip.Prefix(nil), in.o.ClientCIDRs...), in.o.AdminCIDRs...),
			ReadOnlyPaths:  []string{in.l.path(ConfigDir)},
			ReadWritePaths: rw,
		}
		if kbPath != "" && st.Store.Unit != "" {
			// Its kb/ directory is only there once the store is unlocked.
			svc.Unit.Requires = []string{harden.StoreUnit}
		}
	}
	in.logf("starting the gateway on %s", in.o.Listen)
	unit, started, err := in.startService(ctx, svc, httpOK("http://"+in.o.MetricsListen+"/readyz"))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	st.Gateway = state.Gateway{
		Service: state.Service{Name: "gateway", PID: started.PID, Start: started.Start, Boot: started.Boot, Unit: unit, Listen: []string{in.o.Listen, in.o.MetricsListen}, Log: svc.Log},
		URL:     "https://" + hostPortFor(in.o.Listen), MetricsURL: "http://" + in.o.MetricsListen,
		CACert: filepath.Join(tlsDir, certs.CAFile), TokensFile: in.l.tokens(), AuditLog: in.l.auditLog(), AuditKey: auditKey + ".pub",
		AuditSigningKey: auditKey + ".key", TLSKey: serverKey, KB: kbPath,
	}
	if err := recordFile(st, unit); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	in.logf("gateway ready (pid %d) at %s", started.PID, st.Gateway.URL)
	return nil
}

// hostPortFor turns a listen address into one a local client can dial.
func hostPortFor(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

// adminToken creates the first admin token when the token file has none.
// The token's ID goes into the journal before the token file is saved: its
// secret reaches the operator only if this attempt succeeds, so a failed
// attempt revokes it and a crashed one has it revoked by the next run,
// which then makes and prints a new one.
func (in *installer) adminToken(id harden.Identity) error {
	path := in.l.tokens()
	store, err := tokens.Load(path)
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	for _, t := range store.Tokens {
		if t.Role == tokens.RoleAdmin && t.State(in.o.Now()) == "active" {
			return in.private(path, id)
		}
	}
	secret, tok, err := store.Create(tokens.CreateOptions{Name: "install-admin", Role: tokens.RoleAdmin, Now: in.o.Now()})
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	if err := in.j.setAdminToken(tok.ID); err != nil {
		return err
	}
	in.onUndo(func() error { return in.revokeUnshown(tok.ID, "this failed attempt") })
	if err := store.Save(path); err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	in.res.AdminToken = secret
	return in.private(path, id)
}

// secretFiles are the gateway's own secrets: its token file, its TLS key
// and the audit log's signing key. Only the gateway's user may read them.
func (in *installer) secretFiles() []string {
	return []string{in.l.tokens(), filepath.Join(in.l.tlsDir(), certs.KeyFile), in.l.auditKey() + ".key"}
}

// protectSecrets gives each existing secret file back to the gateway's
// user alone (private), as the gateway step leaves them.
func (in *installer) protectSecrets(id harden.Identity) error {
	for _, p := range in.secretFiles() {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := in.private(p, id); err != nil {
			return err
		}
	}
	return nil
}

// private makes a secret file the gateway's (id) alone: owner id, mode
// 0600, so neither the runtime's user nor anyone else but root reads it.
func (in *installer) private(path string, id harden.Identity) error {
	if err := in.sys.host.Chown(path, id.UID, id.GID); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// smoke sends a real chat completion through the gateway over TLS, as a
// client would, with a token made for it and revoked afterwards.
func (in *installer) smoke(ctx context.Context, st *state.State, m *manifests.Manifest, id harden.Identity) error {
	ca, err := os.ReadFile(st.Gateway.CACert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	secret, revoke, err := in.smokeToken(st, id)
	if err != nil {
		return fmt.Errorf("smoke test: %w", err)
	}
	defer revoke()
	model := m.Runtime.ServedModelName
	if model == "" {
		model = m.Name
	}
	body, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 8,
		"messages": []map[string]string{{"role": "user", "content": "Reply with one word: are you ready?"}}})
	var status int
	var data []byte
	// The gateway picks up the new token when it handles the SIGHUP; an
	// address throttled for earlier failed authentications (verify's
	// probes, say) is answered 429 with Retry-After until it cools down.
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.Gateway.URL+"/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("smoke test through the gateway: %w", err)
		}
		data, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		status = resp.StatusCode
		wait := 200 * time.Millisecond
		if status == http.StatusTooManyRequests {
			if sec, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && sec > 0 {
				wait = time.Duration(min(sec, 60)) * time.Second
			}
			in.logf("smoke test: the gateway asks to retry in %s (%s)", wait, strings.TrimSpace(string(data)))
		} else if status != http.StatusUnauthorized {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &out) != nil || len(out.Choices) == 0 || out.Usage.CompletionTokens == 0 {
		return fmt.Errorf("smoke test through the gateway: status %d: %s", status, strings.TrimSpace(string(data)))
	}
	in.logf("smoke test through the gateway: %d tokens: %q", out.Usage.CompletionTokens, out.Choices[0].Message.Content)
	return nil
}

// storeUnit writes and enables the unit that unlocks the store with the key
// file at boot, which the runtime's units require: without it a reboot
// would leave the runtime without its weights until someone unlocked the
// store by hand. Starting the runtime starts it (the unlock of an unlocked
// store changes nothing), so every install proves the unit works.
func (in *installer) storeUnit(ctx context.Context, st *state.State) error {
	text, err := storage.UnlockUnit(storage.UnitOptions{Binary: in.serviceExe, Dir: in.o.Store, KeyFile: in.l.storeKey()})
	if err != nil {
		return err
	}
	path := in.l.path(filepath.Join(harden.UnitDir, harden.StoreUnit))
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := in.j.addUnit(harden.StoreUnit); err != nil {
			return err
		}
		in.onUndo(func() error { return in.sups.units.removeUnit(context.Background(), harden.StoreUnit) })
	}
	if err := atomicfile.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("unit %s: %w", harden.StoreUnit, err)
	}
	if err := in.sys.systemd.Systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if err := in.sys.systemd.Systemctl(ctx, "enable", harden.StoreUnit); err != nil {
		return err
	}
	st.Store.Unit = path
	return recordFile(st, path)
}
