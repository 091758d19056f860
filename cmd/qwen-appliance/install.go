package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/qwen-appliance/qwen-appliance/harden"
	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:      "install",
		Usage:     "turn a signed bundle into a serving, hardened appliance",
		ArgsUsage: "BUNDLE",
		Description: `BUNDLE is an unpacked bundle directory or a directory of packed volumes. In
order: verify the signed manifest and every byte (nothing on the host changes
before this passes), preflight (GPU or CPU, memory, disk, kernel), the service
user, the nftables egress-deny table, the encrypted model store, a copy-in that
re-hashes every byte, the runtime on 127.0.0.1, the TLS gateway with a first
admin token (printed once), a chat completion through the gateway, and the state
record under ROOT/var/lib/qwen-appliance. A failed step undoes what this attempt
did; running install again after a crash cleans up and carries on (it signals
only processes whose recorded start time still matches, removes plaintext
staging a killed run left, and revokes an admin token nobody was shown);
installing the same bundle again changes nothing. Packed volumes are unpacked
only inside the encrypted store. A version lower than the last one accepted
is refused unless --allow-downgrade. One install, rollback or uninstall runs
at a time: a second exits 1 naming the first's PID (--dry-run takes no lock).

KNOWLEDGE BASE: install creates the knowledge base STORE/kb/kb.db (the
gateway's user's, kb/ 0700, files 0600; the store's root becomes 0710 with the
gateway's group, so the gateway reaches kb/ by name while only the runtime
reads the weights) and starts the gateway with serve --kb. --kb BUNDLE ingests
the kb/ tree of a signed bundle, verified against --trust before anything
changes and every file hashed again as it is read, with the access list and
class of --kb-allow and --kb-class (both required). --kb DIR --kb-unsigned
ingests a plain directory instead, on the operator's word. Every file is read
and checked before the first is stored. Upgrades and rollbacks keep the
knowledge base; the last --kb source is recorded in the state. See
docs/kb-install.md.

SETTINGS: --listen, --metrics-listen, --host, --allow-cidr, --admin-cidr,
--allow-egress and --probe are recorded in the state. An upgrade or a re-run
keeps them unless a flag changes them ('none' clears a list flag); a change is
printed as "setting changed: NAME: OLD -> NEW" and applied, the gateway
restarted when its own settings changed. Over SSH, a firewall that would cut
off this session is refused before anything changes (exit 2) unless an
--admin-cidr covers the client or --confirm-timeout is given.

REPAIR: re-running install with the installed bundle checks the host against
the record (the live firewall table, the recorded rules and unit files, the
modes and owners of the gateway's secrets, of the store's releases and of
its shared layout (root 0710, kb/ the gateway's), the services) and runs the steps again when anything drifted, printing each
finding as "drifted from the recorded installation: ..."; --repair runs them
even when nothing did. Root, the gateway addresses and the firewall's effect on
this session are checked before the first change, in --dry-run too.

Where systemd is PID 1 (and --root is /), the runtime and the gateway run as
hardened systemd units (no privileges, read-only system, IP traffic to
localhost and the --allow-cidr networks only, a system-call filter), enabled so
they start at boot after the firewall unit; each release's runtime has its own
unit (qwen-appliance-runtime-NAME-vN.service) so an upgrade runs the new one
beside the old. Elsewhere (containers, CI, --root sandboxes) they run as
detached processes under this program's supervisor. --supervisor forces
either; an upgrade keeps what the installation uses. Units, PIDs and logs are
in the state record.

Examples:
   qwen-appliance install ./qwen2.5-7b --trust release.pub --allow-cidr 10.20.0.0/16 --listen 0.0.0.0:8443
   qwen-appliance install /media/usb --trust release.pub --dry-run
   qwen-appliance install ./qwen2.5-7b-v2 --trust release.pub              # upgrade, same settings
   qwen-appliance install ./qwen2.5-7b-v2 --trust release.pub --repair     # restore drifted firewall, units, services
   ip netns exec sandbox qwen-appliance install ./demo --trust release.pub --root /tmp/sandbox --store /mnt/enc/store`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "trust", Usage: "public key the bundle must be signed by (repeatable)"},
			&cli.IntFlag{Name: "threshold", Value: 1, Usage: "signatures by distinct trusted keys required (k of n)"},
			&cli.StringFlag{Name: "root", Value: "/", Usage: "write every file under this PREFIX (sandboxes, tests)"},
			&cli.StringFlag{Name: "store", Usage: "encrypted model store directory (default ROOT/var/lib/qwen-appliance/store)"},
			&cli.StringFlag{Name: "storage", Value: "fscrypt", Usage: "store encryption: fscrypt, or none (unencrypted; verify will fail it). On a LUKS volume, open and mount it first ('qwen-appliance storage'), then use fscrypt or none on it"},
			&cli.StringFlag{Name: "listen", Usage: "gateway API address, e.g. 0.0.0.0:8443 to serve the network (first install: 127.0.0.1:8443)"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "gateway metrics, /healthz and /readyz address (first install: 127.0.0.1:9464)"},
			&cli.StringFlag{Name: "host", Usage: "host name in the gateway's TLS certificate (first install: localhost)"},
			&cli.StringSliceFlag{Name: "allow-cidr", Usage: "client CIDR allowed to reach the API port (repeatable; 'none' clears)"},
			&cli.StringSliceFlag{Name: "admin-cidr", Usage: "admin CIDR allowed to reach SSH (repeatable; 'none' clears)"},
			&cli.StringSliceFlag{Name: "allow-egress", Usage: "allowed outbound PROTO:CIDR:PORT, e.g. udp:10.0.0.5/32:123 (repeatable; 'none' clears)"},
			&cli.StringSliceFlag{Name: "probe", Usage: "IP address beyond the host that verify's egress probe must fail to reach; gets its own counted drop rule (repeatable; 'none' clears)"},
			&cli.DurationFlag{Name: "confirm-timeout", Usage: "over SSH from an address no --admin-cidr covers: apply the firewall, and revert it unless 'qwen-appliance harden confirm' runs from a new connection within `DUR`"},
			&cli.BoolFlag{Name: "repair", Usage: "run every step again even when the installation looks healthy (a re-run repairs what it finds drifted anyway)"},
			&cli.IntFlag{Name: "context", Usage: "context length to serve (default: what preflight chose)"},
			&cli.BoolFlag{Name: "allow-downgrade", Usage: "install a version lower than the last accepted one (logged)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "verify and preflight, print the plan, change nothing"},
			&cli.StringFlag{Name: "supervisor", Usage: "systemd (hardened units) or process (detached processes); default: systemd where it is PID 1 and --root is /"},
			&cli.DurationFlag{Name: "ready-timeout", Usage: "how long each service may take to become ready (default 5m)"},
			&cli.StringFlag{Name: "kb", Usage: "ingest the kb/ tree of this signed bundle (verified with --trust) into the knowledge base; with --kb-unsigned, a plain directory of documents"},
			&cli.BoolFlag{Name: "kb-unsigned", Usage: "--kb names a plain directory the operator vouches for: no signature is checked (recorded in the state)"},
			&cli.StringSliceFlag{Name: "kb-allow", Usage: "with --kb: principals that may read the documents (role:NAME, user:TOKEN-ID, all)"},
			&cli.StringFlag{Name: "kb-class", Usage: "with --kb: public, internal or secret"},
			&cli.StringFlag{Name: "kb-collection", Usage: "with --kb: collection the documents belong to"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: installAction,
	})
}

func installAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("pass the bundle directory, e.g. 'qwen-appliance install ./bundle --trust release.pub'", "want exactly one BUNDLE argument, got %d", c.NArg())
	}
	if len(c.StringSlice("trust")) == 0 {
		return usagef("pass --trust NAME.pub, the public key of whoever signed the bundle", "no trusted key given")
	}
	o := provision.Options{
		Bundle: c.Args().First(), TrustedKeys: c.StringSlice("trust"), Threshold: c.Int("threshold"),
		Root: c.String("root"), Store: c.String("store"), Listen: c.String("listen"), MetricsListen: c.String("metrics-listen"),
		Host: c.String("host"), ProbeTargets: listFlag(c, "probe"), Context: c.Int("context"),
		AllowDowngrade: c.Bool("allow-downgrade"), DryRun: c.Bool("dry-run"), ReadyTimeout: c.Duration("ready-timeout"),
		Log: c.App.ErrWriter, Executable: selfPath(), ManPage: []byte(manPage(c.App)), Supervisor: c.String("supervisor"),
		ConfirmTimeout: c.Duration("confirm-timeout"), Repair: c.Bool("repair"),
		KB: installKB{},
	}
	if err := kbSourceFlags(c, &o); err != nil {
		return err
	}
	switch b := c.String("storage"); b {
	case "none":
		o.Backend = provision.BackendNone
	case "fscrypt":
		o.Backend = storage.BackendFscrypt
	default:
		return usagef("--storage takes fscrypt or none; a LUKS volume is prepared with 'qwen-appliance storage init --backend luks'", "--storage %q is not supported by install", b)
	}
	for _, flag := range []struct {
		name string
		dst  *[]netip.Prefix
	}{{"allow-cidr", &o.ClientCIDRs}, {"admin-cidr", &o.AdminCIDRs}} {
		l := listFlag(c, flag.name)
		if l != nil {
			*flag.dst = []netip.Prefix{}
		}
		for _, s := range l {
			p, err := harden.ParsePrefix(s)
			if err != nil {
				return usagef("--"+flag.name+" takes a CIDR such as 10.20.0.0/16", "--%s %q: %v", flag.name, s, err)
			}
			*flag.dst = append(*flag.dst, p)
		}
	}
	// The gateway runs as the unprivileged service user with no
	// capabilities, so it cannot bind a port below 1024.
	for _, flag := range []string{"listen", "metrics-listen"} {
		if !c.IsSet(flag) {
			continue
		}
		_, port, err := net.SplitHostPort(c.String(flag))
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 1 || n > 65535 {
			return usagef("--"+flag+" takes HOST:PORT, e.g. 0.0.0.0:8443", "--%s %q is not HOST:PORT", flag, c.String(flag))
		}
		if n < 1024 {
			return usagef("use a port from 1024 up (the default API port is 8443); the gateway runs without privileges, so it cannot bind "+port,
				"--%s %q: port %d is privileged", flag, c.String(flag), n)
		}
	}
	for _, s := range o.ProbeTargets {
		if _, err := netip.ParseAddr(s); err != nil {
			return usagef("--probe takes an IP address beyond the host, e.g. 192.0.2.1", "--probe %q is not an IP address", s)
		}
	}
	if l := listFlag(c, "allow-egress"); l != nil {
		o.Egress = []harden.EgressRule{}
	}
	for _, s := range listFlag(c, "allow-egress") {
		r, err := harden.ParseEgress(s)
		if err != nil {
			return usagef("--allow-egress takes PROTO:CIDR:PORT, e.g. udp:10.0.0.5/32:123", "--allow-egress %q: %v", s, err)
		}
		o.Egress = append(o.Egress, r)
	}
	session, err := hardenSession()
	if err != nil {
		return err
	}
	o.Session = session
	if o.ConfirmTimeout > 0 {
		// Losing the SSH connection is what the window guards against: the
		// hangup must not kill the revert (as in 'harden apply').
		signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
		defer signal.Reset(syscall.SIGHUP, syscall.SIGPIPE)
	}
	res, err := provision.Install(c.Context, o)
	if err != nil {
		switch {
		case errors.Is(err, harden.ErrLockout):
			return withCode(exitUsage, err, fmt.Sprintf("add --admin-cidr covering %s, or pass --confirm-timeout 60s and run 'qwen-appliance harden confirm' from a new connection", o.Session.Client))
		case errors.Is(err, harden.ErrNotConfirmed):
			return withCode(exitError, err, "the previous firewall is back; install again and run 'qwen-appliance harden confirm' sooner")
		case errors.Is(err, provision.ErrNotRoot):
			return withCode(exitError, err, "run as root: sudo qwen-appliance install ...")
		case errors.Is(err, provision.ErrAddressInUse):
			return withCode(exitError, err, "stop the program holding it (ss -ltnp shows which) or choose another --listen/--metrics-listen")
		case errors.Is(err, manifests.ErrVerification):
			return withCode(exitVerification, err, verificationHint(err))
		case errors.Is(err, provision.ErrBusy):
			return withCode(exitError, err, busyHint)
		case errors.Is(err, provision.ErrHostUnfit):
			if res != nil && res.Preflight != nil {
				res.Preflight.WriteTable(c.App.ErrWriter, texttable.Width)
			}
			return withCode(exitHostUnfit, err, "run 'qwen-appliance preflight' for the full table and the way out it suggests")
		}
		return withCode(exitError, err, "read the step's message above; the host was returned to its state before this attempt")
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	w := c.App.Writer
	if o.DryRun {
		fmt.Fprintln(w, "dry run: the bundle verified and preflight passed; install would create:")
		for _, p := range res.Plan {
			fmt.Fprintln(w, "  - "+p)
		}
		return nil
	}
	if !res.Changed {
		fmt.Fprintf(w, "%s version %d is already installed and serving at %s as recorded; nothing changed\n", res.State.Bundle.Name, res.State.Bundle.Version, res.State.Gateway.URL)
		return nil
	}
	st := res.State
	fmt.Fprintf(w, "installed %s version %d\n", st.Bundle.Name, st.Bundle.Version)
	for _, d := range res.Settings {
		fmt.Fprintf(w, "changed   %s\n", d)
	}
	for _, d := range res.Drift {
		fmt.Fprintf(w, "repaired  %s\n", d)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "gateway\t%s (CA %s)\n", st.Gateway.URL, st.Gateway.CACert)
	fmt.Fprintf(tw, "runtime\t%s on %s (pid %d)\n", st.Runtime.Kind, strings.Join(st.Runtime.Listen, ", "), st.Runtime.PID)
	fmt.Fprintf(tw, "store\t%s (%s)\n", st.Store.Dir, st.Store.Backend)
	fmt.Fprintf(tw, "firewall\ttable %s, ruleset sha256 %s\n", st.Firewall.Table, st.Firewall.RulesetSHA256)
	tw.Flush()
	if res.AdminToken != "" {
		fmt.Fprintf(w, "\nadmin token (shown once, store it now):\n  %s\n", res.AdminToken)
	}
	if res.RecoveryKey != "" {
		fmt.Fprintf(w, "\nstore recovery key (shown once, keep it offline):\n  %s\n", res.RecoveryKey)
	}
	return nil
}

// busyHint answers provision.ErrBusy: another install, rollback or
// uninstall holds the installation's lock.
const busyHint = "wait for it to finish (status shows what is installed), then run this again; the lock is released when that process exits, however it exits"

// listFlag is a repeatable flag's values: nil when it was not given (an
// upgrade keeps the recorded list), empty for "none" (clear it).
func listFlag(c *cli.Context, name string) []string {
	if !c.IsSet(name) {
		return nil
	}
	l := c.StringSlice(name)
	if len(l) == 1 && l[0] == "none" {
		return []string{}
	}
	return l
}

// selfPath is how this program was started, as an absolute path, without
// resolving symlinks: the services install starts run the same command.
func selfPath() string {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		if lp, err := exec.LookPath(p); err == nil {
			p = lp
		}
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// kbSourceFlags turns --kb and its companions into o.KBSource.
func kbSourceFlags(c *cli.Context, o *provision.Options) error {
	path := c.String("kb")
	if path == "" {
		for _, f := range []string{"kb-unsigned", "kb-allow", "kb-class", "kb-collection"} {
			if c.IsSet(f) {
				return usagef("pass --kb BUNDLE with --"+f, "--%s without --kb", f)
			}
		}
		return nil
	}
	if len(c.StringSlice("kb-allow")) == 0 || c.String("kb-class") == "" {
		return usagef("pass --kb-allow role:NAME,... and --kb-class public|internal|secret with --kb", "--kb needs --kb-allow and --kb-class: a document without an access list is invisible")
	}
	if _, err := kb.ParsePrincipals(c.StringSlice("kb-allow")...); err != nil {
		return usagef("pass --kb-allow role:NAME, user:TOKEN-ID or all", "--kb-allow: %v", err)
	}
	if _, err := kb.ParseClass(c.String("kb-class")); err != nil {
		return usagef("pass --kb-class public, internal or secret", "--kb-class: %v", err)
	}
	o.KBSource = &provision.KBSource{Path: path, Unsigned: c.Bool("kb-unsigned"), Allow: c.StringSlice("kb-allow"),
		Class: c.String("kb-class"), Collection: c.String("kb-collection")}
	return nil
}
