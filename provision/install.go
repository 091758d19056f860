package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/volume"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// ErrHostUnfit is returned (wrapped) when preflight finds the host cannot run
// the bundle.
var ErrHostUnfit = errors.New("host does not meet the bundle's requirements")

// Options say what to install and how.
type Options struct {
	Bundle      string   // an unpacked bundle directory, or a directory of packed volumes
	TrustedKeys []string // public-key files the bundle must be signed by
	Threshold   int      // distinct trusted signatures required; 1 when 0
	Root        string   // prefix for every file written; "/" for the real host

	Store   string          // the encrypted model store; Root/var/lib/qwen-appliance/store when empty
	Backend storage.Backend // fscrypt when empty; "none" stores unencrypted and is recorded as such
	KDF     storage.KDF     // argon2id cost for the store's protectors (tests lower it)

	// The settings below are recorded in the state. Left unset (an empty
	// string, a nil slice), an upgrade or re-run keeps what the installation
	// recorded, and a first install uses the defaults; an empty non-nil
	// slice clears a list.
	Listen        string // gateway API address; DefaultListen
	MetricsListen string // gateway metrics address; DefaultMetricsListen
	Host          string // name in the gateway's certificate; DefaultHost
	ClientCIDRs   []netip.Prefix
	AdminCIDRs    []netip.Prefix
	Egress        []harden.EgressRule
	ProbeTargets  []string // addresses verify's egress probe must fail to reach

	// Session is the operator's remote login (harden.FindSession); install
	// refuses a firewall that would cut it off unless ConfirmTimeout is set,
	// in which case the firewall is reverted unless 'harden confirm' runs
	// from a new connection in time.
	Session        *harden.Session
	ConfirmTimeout time.Duration

	// KB creates and fills the knowledge base in the store's kb/ directory
	// (KBPath), which the gateway serves; nil leaves it out (no kb/, no
	// serve --kb).
	KB KnowledgeBase
	// KBSource, when set, names documents to ingest (install --kb); they
	// are verified with the bundle, before anything changes.
	KBSource *KBSource
	// KBRestore is a backed-up knowledge-base database (backup restore)
	// to put in place of the store's; it is checked with KB.Check first.
	KBRestore string

	// Repair re-applies every step even when the installation looks
	// healthy; a re-run repairs what it finds drifted anyway.
	Repair bool

	euid func() int // os.Geteuid when nil (tests)
	sys  *system    // the host when nil (tests pass fakes)

	AllowDowngrade bool // install a version lower than the last accepted one (logged)
	DryRun         bool // print the plan, change nothing
	Context        int  // context length to serve; preflight's choice when 0

	// Supervisor runs the runtime and the gateway: SupervisorSystemd
	// (hardened units), SupervisorProcess (detached processes), or, when
	// empty, what the installation already uses, else systemd where it is
	// PID 1 and Root is "/".
	Supervisor string

	NVML         gpu.NVML         // the system's NVML when nil
	Netfilter    harden.Netfilter // the kernel in the current network namespace when nil
	Executable   string           // this program, run detached for the services; os.Executable() when empty
	ManPage      []byte           // the qwen-appliance(1) page, installed at ManPagePath; none when empty
	ReadyTimeout time.Duration    // per service; 5 minutes when 0
	Log          io.Writer        // progress; discarded when nil
	Now          func() time.Time
}

// Result is what install did.
type Result struct {
	State       *state.State      `json:"state"`
	Changed     bool              `json:"changed"`               // false when the same bundle was already installed and serving as recorded
	Settings    []string          `json:"settings,omitempty"`    // how the settings differ from the previous installation's ("listen: A -> B")
	Drift       []string          `json:"drift,omitempty"`       // what was found drifted from the recorded installation, and repaired
	AdminToken  string            `json:"adminToken,omitempty"`  // the first admin token, printed once (empty when none was made)
	RecoveryKey string            `json:"recoveryKey,omitempty"` // the store's recovery key, printed once when the store was created
	Plan        []string          `json:"plan,omitempty"`
	Preflight   *preflight.Report `json:"preflight,omitempty"`
}

type installer struct {
	o     Options
	l     layout
	log   io.Writer
	prev  *state.State // the installation before this attempt, if any
	j     *journal
	res   Result
	undos []func() error
	fresh map[string]bool // paths removeIfNew registered
	// serviceExe is the installed copy of this executable the services run.
	serviceExe string
	sys        *system         // systemd, processes and ownership on the host
	sups       supervisors     // both supervisors, for services recorded either way
	sup        supervisor      // the one this attempt starts services with
	settings   []settingChange // how the settings differ from in.prev's
	// volumes is the directory of packed volumes being installed, when
	// the bundle came packed; they are unpacked inside the store.
	volumes  string
	verifier manifests.Verifier
	kb       *kbPlan         // install --kb's verified documents
	kbRecord *state.KBSource // what state.Settings.KB records
	// gatewayStopped says the previous gateway was stopped (to put a
	// backed-up knowledge base in place): switchTo starts it again.
	gatewayStopped bool
	dones          []func() // run once install succeeded
}

func (in *installer) logf(format string, args ...any) {
	fmt.Fprintf(in.log, "qwen-appliance: install: "+format+"\n", args...)
}

// Install turns the bundle into a serving appliance. It verifies the bundle's
// signature and every byte before it changes anything; when a later step
// fails, it undoes what this attempt did, leaving a previous installation as
// it was. A crashed attempt is cleaned up by the next one. Errors match
// manifests.ErrVerification for a refused bundle and ErrHostUnfit when
// preflight fails.
func Install(ctx context.Context, o Options) (res *Result, err error) {
	in, err := newInstaller(o)
	if err != nil {
		return nil, err
	}
	// A dry run changes nothing, so it neither locks nor cleans up: a
	// crashed attempt's leftovers (or a running install's work) are not
	// its to touch.
	if !o.DryRun {
		// A first install makes the state directory for its lock: a
		// failed one removes it again, while it still holds the lock.
		fresh := newTop(in.l.lockPath())
		lk, lerr := in.l.lock()
		if lerr != nil {
			if fresh != "" && !errors.Is(lerr, ErrBusy) {
				os.RemoveAll(fresh)
			}
			return nil, fmt.Errorf("install: %w", lerr)
		}
		defer lk.release()
		if fresh != "" {
			defer func() {
				if err != nil {
					err = errors.Join(err, os.RemoveAll(fresh))
				}
			}()
		}
		if err := in.recover(); err != nil {
			return nil, err
		}
		in.removeLeftovers()
	}

	// 1. Verify everything before touching the host.
	bundleDir, signed, sig, err := in.verify(ctx)
	if err != nil {
		return nil, err
	}
	if err := in.verifyKB(ctx); err != nil {
		return nil, err
	}
	m := signed.Manifest
	sum := sha256.Sum256(signed.Raw)
	manifestSHA := hex.EncodeToString(sum[:])
	// Installed by a version that ran the runtime as the gateway's user:
	// never "nothing to do", so the runtime gets its own.
	migrate := in.prev != nil && in.prev.RuntimeUser == ""
	if migrate {
		in.logf("the runtime runs as the gateway's user %s; installing again to give it its own user %s", in.prev.ServiceUser, harden.RuntimeUser)
	}
	in.res.Settings = strs(in.settings)
	for _, d := range in.settings {
		in.logf("setting changed: %s", d)
	}
	if in.prev != nil && !migrate && in.prev.Bundle.ManifestSHA256 == manifestSHA {
		in.res.Drift = in.drift(in.prev)
		for _, d := range in.res.Drift {
			in.logf("drifted from the recorded installation: %s", d)
		}
		if len(in.res.Drift) == 0 && len(in.settings) == 0 && !o.Repair && in.kb == nil && o.KBRestore == "" {
			in.logf("%s version %d is already installed and serving as recorded; nothing to do", m.Name, m.Version)
			return &Result{State: in.prev}, nil
		}
	}
	if err := in.precheck(); err != nil {
		return &in.res, err
	}

	// 2. Preflight.
	pre, err := preflight.Run(ctx, m, preflight.Options{NVML: o.NVML, HostRoot: "/", Store: o.Store, Context: o.Context})
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	in.res.Preflight = pre
	if failed := pre.Failed(); len(failed) > 0 {
		return &in.res, fmt.Errorf("%w: %s: needs %s, found %s; %s", ErrHostUnfit, failed[0].Name, failed[0].Required, failed[0].Found, failed[0].Fix)
	}
	in.logf("preflight passed (%s mode)", pre.Mode)

	if o.DryRun {
		in.res.Plan = in.plan(m)
		return &in.res, nil
	}

	if err := in.j.begin(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			in.logf("failed: %v; undoing this attempt", err)
			err = errors.Join(err, in.undo())
			return
		}
		for _, f := range in.dones {
			f()
		}
		err = in.j.finish()
	}()

	st := &state.State{Root: string(in.l.root), Files: map[string]string{}}
	if err := in.trust(st); err != nil {
		return nil, err
	}
	if err := in.program(st); err != nil {
		return nil, err
	}
	if err := in.manPage(st); err != nil {
		return nil, err
	}
	ids, err := in.identity(ctx, st)
	if err != nil {
		return nil, err
	}
	for _, r := range []struct {
		path string
		id   harden.Identity
	}{{in.serviceExe, ids.Gateway}, {in.serviceExe, ids.Runtime}, {in.o.Store, ids.Runtime}, {in.o.Store, ids.Gateway}} {
		if err := reachable(r.path, r.id); err != nil {
			return nil, err
		}
	}
	if err := in.firewall(ctx, st, ids); err != nil {
		return nil, err
	}
	if err := in.stepDone("firewall"); err != nil {
		return nil, err
	}
	if in.prev != nil && in.prev.RuntimeUser != "" { // not while a one-user installation is migrated
		// Releases already in the store get back what copy-in gave them
		// (repair): the runtime's user alone. Before the store step, whose
		// unlock refuses a store with looser permissions.
		if err := in.privateReleases(ids.Runtime, true); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		// And the shared layout: the root and the knowledge base's
		// directory, as the store step leaves them.
		if in.o.KB != nil && in.storeHasGuest() {
			if err := in.storeLayout(ids.Gateway, ids.Runtime, true); err != nil {
				return nil, fmt.Errorf("store: %w", err)
			}
		}
	}
	if err := in.store(ctx, st, ids); err != nil {
		return nil, err
	}
	if err := in.stepDone("store"); err != nil {
		return nil, err
	}
	rel, err := in.copyIn(ctx, st, bundleDir, signed, sig, ids.Runtime)
	if err != nil {
		return nil, err
	}
	if err := in.stepDone("copy-in"); err != nil {
		return nil, err
	}
	if err := in.knowledgeBase(ctx, ids.Gateway); err != nil {
		return nil, err
	}
	if err := in.stepDone("kb"); err != nil {
		return nil, err
	}
	st.Bundle = state.Bundle{Name: m.Name, Version: m.Version, ManifestSHA256: manifestSHA, Dir: rel}
	st.LastAcceptedVersion = max(m.Version, in.lastAccepted())
	if in.prev != nil {
		st.Previous = in.prev.Previous
		if in.prev.Bundle.Dir != rel {
			p := in.prev.Bundle
			st.Previous = &p
		}
	}
	if err := in.switchTo(ctx, st, m, ids); err != nil {
		return nil, err
	}
	st.Updated = in.now()
	st.Firewall.ProbeTargets = in.o.ProbeTargets
	st.Settings = settingsOf(in.o)
	st.Settings.KB = in.kbRecord
	if err := in.saveState(st); err != nil {
		return nil, err
	}
	if err := in.stepDone("state"); err != nil {
		return nil, err
	}
	in.logf("installed %s version %d; gateway at %s", m.Name, m.Version, st.Gateway.URL)
	in.res.State, in.res.Changed = st, true
	return &in.res, nil
}

func newInstaller(o Options) (*installer, error) {
	if o.Bundle == "" {
		return nil, errors.New("install: no bundle given")
	}
	if len(o.TrustedKeys) == 0 {
		return nil, fmt.Errorf("install: %w: no trusted public key given", manifests.ErrUntrustedKey)
	}
	if o.Root == "" {
		o.Root = "/"
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	l := layout{root: harden.Root(root)}
	if root == "/" {
		l.root = ""
	}
	if o.Store == "" {
		o.Store = l.path(StoreDir)
	}
	if o.Store, err = filepath.Abs(o.Store); err != nil {
		return nil, err
	}
	switch o.Backend {
	case "":
		o.Backend = storage.BackendFscrypt
	case storage.BackendFscrypt, BackendNone:
	default:
		return nil, fmt.Errorf("install: store backend %q: install creates fscrypt stores (or none); LUKS volumes are made and opened with 'qwen-appliance storage'", o.Backend)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	if o.Executable == "" {
		if o.Executable, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("install: find this program: %w", err)
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	prev, err := state.Load(root)
	switch {
	case err == nil:
	case errors.Is(err, state.ErrNotInstalled):
		prev = nil
	default:
		return nil, fmt.Errorf("install: %w", err)
	}
	diff, err := resolveSettings(&o, prev, l.root)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	in := &installer{o: o, l: l, log: log, prev: prev, settings: diff}
	if prev != nil && prev.Settings != nil {
		in.kbRecord = prev.Settings.KB
	}
	in.j = &journal{path: l.journal()}
	in.sys = orReal(o.sys)
	in.sups = newSupervisors(in.sys, l)
	kind, err := chooseSupervisor(o.Supervisor, l.root, in.prev)
	if err != nil {
		return nil, err
	}
	if in.sup = in.sups.pick(kind); in.sup.sandboxed() {
		if err := visibleToUnits(o.Store); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *installer) now() time.Time { return in.o.Now().UTC().Truncate(time.Second) }

func (in *installer) lastAccepted() uint64 {
	if in.prev == nil {
		return 0
	}
	return in.prev.LastAcceptedVersion
}

// storeStaging is where packed volumes are unpacked: inside the encrypted
// store, so that no plaintext byte of a bundle is ever written outside it.
func (in *installer) storeStaging() string { return filepath.Join(in.o.Store, StagingDir) }

// removeLeftovers removes staging copies an install killed half-way left:
// plaintext bundles in the places versions before this one unpacked volumes
// to (StateDir/incoming and its temporary siblings), and the staging
// directory in the store (reachable once the store is unlocked; copyIn
// removes it again then). Failures are logged: they cost disk, and the next
// run tries again.
func (in *installer) removeLeftovers() {
	dir := in.l.path(StateDir)
	old, _ := filepath.Glob(filepath.Join(dir, ".incoming.*"))
	for _, p := range append(old, filepath.Join(dir, "incoming"), in.storeStaging()) {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		in.logf("removing %s, a staging copy left by an interrupted install", p)
		if err := os.RemoveAll(p); err != nil {
			in.logf("warning: remove %s: %v", p, err)
		}
	}
}

// verify checks the bundle without writing anything: its signature, expiry
// and rollback, and every file's bytes. Packed volumes are verified in
// place (the signed index, every volume, every file in the stream); they are
// unpacked later, into the store, by copyIn.
func (in *installer) verify(ctx context.Context) (dir string, s *manifests.Signed, sig []byte, err error) {
	keys, err := manifests.LoadPublicKeys(in.o.TrustedKeys...)
	if err != nil {
		return "", nil, nil, fmt.Errorf("install: %w", err)
	}
	v := manifests.Verifier{Trusted: keys, Threshold: in.o.Threshold, MinVersion: in.lastAccepted()}
	if in.o.AllowDowngrade && v.MinVersion > 0 {
		in.logf("warning: --allow-downgrade: versions below %d are accepted", v.MinVersion)
		v.MinVersion = 0
	}
	in.verifier = v
	dir = in.o.Bundle
	if _, err := volume.FindIndex(dir); err == nil {
		in.logf("verifying the volumes in %s", dir)
		rep, err := volume.Verify(ctx, dir, v, nil)
		if err != nil {
			return "", nil, nil, fmt.Errorf("verify volumes %s: %w", dir, err)
		}
		in.volumes = dir
		s = rep.Signed
		in.logf("signature by %v valid: %s version %d; all %d files in %d volume(s) match the manifest (%d bytes)",
			s.KeyIDs, s.Manifest.Name, s.Manifest.Version, rep.Files, rep.Volumes, rep.Bytes)
		return dir, s, nil, nil
	}
	s, err = v.Open(dir)
	if err != nil {
		return "", nil, nil, fmt.Errorf("verify bundle %s: %w", dir, err)
	}
	in.logf("signature by %v valid: %s version %d", s.KeyIDs, s.Manifest.Name, s.Manifest.Version)
	if err := manifests.CheckFiles(ctx, dir, s.Manifest, manifests.CheckOptions{}); err != nil {
		return "", nil, nil, fmt.Errorf("verify bundle %s: %w", dir, err)
	}
	in.logf("all %d files match the manifest (%d bytes)", len(s.Manifest.Files), s.Manifest.TotalSize())
	sig, err = manifests.ReadFile(dir, manifests.SignatureFile)
	return dir, s, sig, err
}

// plan lists what install would create, for --dry-run.
func (in *installer) plan(m *manifests.Manifest) []string {
	runBy := in.sup.plan
	runtimeUnit, _ := harden.RuntimeUnitFor(fmt.Sprintf("%s-v%d", m.Name, m.Version))
	return []string{
		"service users " + harden.ServiceUser + " (gateway) and " + harden.RuntimeUser + " (runtime), each with its own group, no login shell, no home, and their directories",
		"nftables table inet " + harden.TableName + " (policy drop on input, output, forward; runtime ports " + strconv.Itoa(harden.RuntimePortFirst) + "-" + strconv.Itoa(harden.RuntimePortLast) + " only for " + harden.ServiceUser + "), rules file " + in.l.path(harden.RulesPath) + " and its boot unit",
		fmt.Sprintf("encrypted model store %s (%s), key file %s", in.o.Store, in.o.Backend, in.l.storeKey()),
		fmt.Sprintf("knowledge base %s, the gateway's %s (kb/ 0700, files 0600; the store's root 0710, group %s)%s", KBPath(in.o.Store), harden.ServiceUser, harden.ServiceUser, in.kbPlanLine()),
		fmt.Sprintf("verified copy of %s version %d (%d files, %d bytes) in %s", m.Name, m.Version, len(m.Files), m.TotalSize(), release(in.o.Store, m.Name, m.Version)),
		fmt.Sprintf("%s runtime on 127.0.0.1 as %s, log %s%s", m.Runtime.Kind, harden.RuntimeUser, in.l.log("runtime"), runBy(runtimeUnit)),
		"gateway on " + in.o.Listen + " (TLS from " + in.l.tlsDir() + ", tokens " + in.l.tokens() + ", audit log " + in.l.auditLog() + "), metrics on " + in.o.MetricsListen + runBy(harden.GatewayUnit),
		"a first admin token (printed once) and a smoke test through the gateway",
		"state record " + state.Path(string(in.l.root)),
	}
}

// trust copies the trusted public keys into the configuration directory, so
// verify and later installs use the same ones.
func (in *installer) trust(st *state.State) error {
	dir := in.l.path(filepath.Join(ConfigDir, "trusted"))
	key := func(i int) string { return filepath.Join(dir, "key-"+strconv.Itoa(i)+".pub") }
	for i := range in.o.TrustedKeys {
		in.removeIfNew(key(i))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, p := range in.o.TrustedKeys {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dst := key(i)
		if err := atomicfile.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		st.TrustedKeys = append(st.TrustedKeys, dst)
	}
	return nil
}

func (in *installer) identity(ctx context.Context, st *state.State) (harden.Identities, error) {
	for _, f := range []string{"passwd", "group", "shadow", "gshadow"} {
		in.removeIfNew(in.l.path("/etc/" + f))
	}
	for _, d := range harden.Dirs {
		in.removeIfNew(in.l.path(d.Path))
	}
	for _, name := range []string{harden.ServiceUser, harden.RuntimeUser} {
		if err := in.removeUserIfNew(ctx, name); err != nil {
			return harden.Identities{}, fmt.Errorf("service identity: %w", err)
		}
	}
	ids, err := harden.CreateIdentity(ctx, in.l.root)
	if err != nil {
		return ids, fmt.Errorf("service identity: %w", err)
	}
	st.ServiceUser, st.ServiceUID, st.ServiceGID = ids.Gateway.User, ids.Gateway.UID, ids.Gateway.GID
	st.RuntimeUser, st.RuntimeUID, st.RuntimeGID = ids.Runtime.User, ids.Runtime.UID, ids.Runtime.GID
	if in.prev != nil {
		st.CreatedUsers = append(st.CreatedUsers, in.prev.CreatedUsers...)
	}
	for _, id := range []harden.Identity{ids.Gateway, ids.Runtime} {
		if id.Ours && !slices.Contains(st.CreatedUsers, id.User) {
			st.CreatedUsers = append(st.CreatedUsers, id.User)
		}
	}
	in.logf("service users: gateway %s (uid %d), runtime %s (uid %d)", ids.Gateway.User, ids.Gateway.UID, ids.Runtime.User, ids.Runtime.UID)
	return ids, nil
}

// removeUserIfNew registers, before the service users are made, the undo
// that deletes the account name and its group when neither exists yet. An
// account that exists is the installation's (or the operator's) and stays;
// so does one whose group exists alone, since deleting the account would
// take that group with it.
func (in *installer) removeUserIfNew(ctx context.Context, name string) error {
	user, group, err := harden.AccountExists(in.l.root, name)
	if err != nil {
		return err
	}
	if user || group {
		return nil
	}
	in.onUndo(func() error { return harden.DeleteUser(context.Background(), in.l.root, name) })
	return nil
}

// saveState records st. Should a later step fail, the undo puts back the
// record this attempt replaced (or removes the one a first install made).
func (in *installer) saveState(st *state.State) error {
	path := state.Path(string(in.l.root))
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		in.onUndo(func() error { return atomicfile.WriteFile(path, old, 0o600) })
	case errors.Is(err, os.ErrNotExist):
		in.onUndo(func() error {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		})
	default:
		return err
	}
	return state.Save(string(in.l.root), st)
}
